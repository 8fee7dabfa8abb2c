"""`jaxfold plan`: the compiled memory plan of a prediction, the settings a budget chooses, and
the longest sequence a budget fits.

One real compilation (model_3_ptm, 96 residues, about a minute) checks the plan itself; the
searches (`choose`, `longest`) are checked against a stand-in for the compiler whose memory is
a known function of length and settings, so that their answers can be verified exactly; bad
input fails before anything compiles.
"""

import dataclasses
import json

import pytest

from cli_checks import assert_fails
from jaxfold import cli, memory_plan
from jaxfold.model.global_config import GlobalConfig

GIB = 2**30


def test_budget_sizes():
  assert memory_plan.parse_bytes('40GiB') == 40 * GIB
  assert memory_plan.parse_bytes('40G') == 40 * GIB
  assert memory_plan.parse_bytes('80GB') == 80 * 10**9
  assert memory_plan.parse_bytes('512 MiB') == 512 * 2**20
  assert memory_plan.parse_bytes('1.5TiB') == int(1.5 * 2**40)
  assert memory_plan.parse_bytes('1e9') == 10**9
  for bad in ('', 'GiB', '-4GiB', '0G', '40 parsecs', '4 0G'):
    with pytest.raises(ValueError, match='memory budget'):
      memory_plan.parse_bytes(bad)


def test_preset_shapes_are_what_predict_gives_the_model():
  # model_1_ptm: 512 clusters less 4 template rows, 5,120 extra sequences, 3 recycles.
  shapes = memory_plan.preset_shapes('model_1_ptm', 100)
  assert (shapes.msa_clusters, shapes.extra_msa, shapes.templates, shapes.num_recycle) == (
      508, 5120, 4, 3)
  shapes = memory_plan.preset_shapes('model_3_ptm', 100, extra_msa=64, num_recycle=1)
  assert (shapes.msa_clusters, shapes.extra_msa, shapes.templates, shapes.num_recycle) == (
      512, 64, 0, 1)


# A stand-in compiler: total bytes a quadratic in the length, less for leaner settings.
_FACTOR = {'one_piece': 12.0, 'alphafold': 6.0, 'lean': 3.0, 'leanest': 2.5}


def _fake_total(settings: str, length: int) -> int:
  return int(_FACTOR[settings] * 512 * length**2 + 2e8)


@pytest.fixture
def fake_compiler(monkeypatch):
  planned = []

  def plan(shapes, settings=memory_plan.DEFAULT_SETTINGS):
    planned.append((settings, shapes.length))
    return memory_plan.Plan(shapes, settings,
                            memory_plan.global_config(settings, train=shapes.train),
                            argument_bytes=int(2e8), output_bytes=0,
                            temp_bytes=_fake_total(settings, shapes.length) - int(2e8),
                            alias_bytes=0, compile_seconds=0.0)

  monkeypatch.setattr(memory_plan, 'plan', plan)
  return planned


def test_budget_chooses_the_least_chunked_settings_that_fit(fake_compiler):
  shapes = memory_plan.preset_shapes('model_1_ptm', 2048)
  budget = _fake_total('lean', 2048) + 1
  assert _fake_total('alphafold', 2048) > budget
  chosen = memory_plan.choose(shapes, budget)
  assert chosen.settings == 'lean'
  assert chosen.global_config == GlobalConfig(subbatch_size=4, pair_chunk_size=64)
  assert [s for s, _ in fake_compiler] == ['one_piece', 'alphafold', 'lean']
  with pytest.raises(ValueError, match='2,048 residues do not fit'):
    memory_plan.choose(shapes, _fake_total('leanest', 2048) - 1)


def test_a_training_budget_chooses_among_the_training_settings(fake_compiler):
  shapes = memory_plan.preset_shapes('model_1_ptm', 384, train=True)
  chosen = memory_plan.choose(shapes, _fake_total('lean', 384) + 1)
  assert [s for s, _ in fake_compiler] == ['alphafold', 'lean']
  assert chosen.global_config == GlobalConfig(attention='chunked', subbatch_size=64,
                                              use_remat=True)


@pytest.mark.parametrize('budget_gib', [16, 40, 80])
def test_longest_is_the_last_length_that_fits(fake_compiler, budget_gib):
  budget = budget_gib * GIB
  result = memory_plan.longest(memory_plan.preset_shapes('model_1_ptm', 32), budget)
  step = memory_plan.LENGTH_STEP
  length = result.shapes.length
  assert result.total_bytes == _fake_total('leanest', length) <= budget
  assert _fake_total('leanest', length + step) > budget
  # Both neighbours were planned, not inferred; the quadratic fit keeps the search short.
  assert {('leanest', length), ('leanest', length + step)} <= set(fake_compiler)
  assert len(fake_compiler) <= 8


def test_plan_of_a_small_prediction(capsys):
  """One real compilation: the JSON plan is XLA's, self-consistent, of predict's default
  settings (96 residues: the pair in two overlapping chunks of 64 rows)."""
  status = cli.main(['--quiet', 'plan', '--preset', 'model_3_ptm', '--length', '96',
                     '--extra-msa', '64', '--num-recycle', '1', '--json'])
  out, err = capsys.readouterr()
  assert status == 0, err
  plan = json.loads(out)
  assert plan['settings'] == 'lean'
  assert plan['global_config'] == dataclasses.asdict(GlobalConfig(subbatch_size=4,
                                                                  pair_chunk_size=64))
  assert (plan['length'], plan['msa_clusters'], plan['extra_msa'], plan['templates']) == (
      96, 512, 64, 0)
  assert plan['total_bytes'] == (plan['argument_bytes'] + plan['output_bytes']
                                 + plan['temp_bytes'] - plan['alias_bytes'])
  # The arguments hold model_3_ptm's 93 M float32 parameters and the batch.
  assert 93e6 * 4 < plan['argument_bytes'] < 93e6 * 4 + 200e6
  assert plan['temp_bytes'] > 0


@pytest.mark.parametrize('argv, names', [
    (['--preset', 'model_9', '--length', '100'], "unknown preset 'model_9'"),
    (['--preset', 'model_1_ptm', '--length', '0'], 'length 0'),
    (['--preset', 'model_1_ptm', '--length', '100', '--msa-clusters', '-3'], 'msa clusters -3'),
    (['--preset', 'model_1_ptm', '--length', '100', '--num-recycle', '-1'],
     'recycling iterations -1'),
    (['--preset', 'model_1_ptm', '--length', '100', '--budget', '40 parsecs'], '40 parsecs'),
    (['--preset', 'model_1_ptm', '--longest'], '--longest needs --budget'),
    (['--preset', 'model_1_ptm'], '--length is required'),
    (['--preset', 'model_1_ptm', '--length', '100', '--settings', 'tiny'], "unknown settings"),
    (['--preset', 'model_1_ptm', '--length', '100', '--settings', 'lean', '--budget', '4G'],
     '--settings and --budget'),
    (['--preset', 'model_1_ptm', '--train'], '--train needs --crop'),
    (['--preset', 'model_1_ptm', '--train', '--length', '100'], 'give --crop, not --length'),
    (['--preset', 'model_1_ptm', '--train', '--crop', '256', '--budget', '4G', '--longest'],
     'give --crop, not --longest'),
    (['--preset', 'model_1_ptm', '--crop', '256'], '--crop sizes a training step'),
    (['--preset', 'model_1_ptm', '--train', '--crop', '256', '--settings', 'leanest'],
     "unknown training settings 'leanest'"),
    (['--preset', 'model_1_ptm', '--train', '--crop', '256', '--mesh', 'res=3'],
     'mesh res=3 does not divide'),
    (['--preset', 'model_1_ptm', '--train', '--crop', '256', '--mesh', 'res'],
     "expected axis=size pairs"),
    (['--preset', 'model_1_ptm', '--length', '256', '--mesh', 'data=1,fsdp=2'],
     'a prediction splits its residues over res only (fsdp=2'),
    (['--preset', 'model_1_ptm', '--length', '256', '--mesh', 'res=3'],
     'mesh res=3 does not divide'),
])
def test_bad_input_fails_in_one_line(capsys, argv, names):
  assert_fails(capsys, ['plan', *argv], names)


def test_a_budget_nothing_fits_fails_in_one_line(capsys, fake_compiler):
  line = assert_fails(capsys, ['plan', '--preset', 'model_1_ptm', '--length', '4096',
                               '--budget', '1GiB'], '4,096 residues do not fit 1.00 GiB')
  assert 'leanest' in line
