"""The `jaxfold` command as a user runs it: help, convert, predict, parity, and bad input.

Only full-size weights exist, so one random-weights AlphaFold .npz of model_3_ptm (no
templates, the smallest preset: 93 M parameters, 372 MB) is written once for the module, and
the batch is the shared query73 example processed by AlphaFold's own pipeline (73 residues,
8 MSA clusters, 16 extra sequences, 2 recycling slices). The full model compiles in about a
minute on a 2-core CPU, so `predict` runs twice in all, in module-scoped fixtures: from the
.npz with representations, and from the converted checkpoint without them; the tests inspect
those two results. Every error case fails before the model runs.

Bad input must end with one stderr line `jaxfold: error: <path>: ...`, exit status 2, and
leave nothing written. Most tests call `cli.main` in this process (jax already imported);
the --help of the installed console script and one error case run it as a subprocess.
"""

import contextlib
import dataclasses
import io
import json
import pathlib
import pickle
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cli_checks import ERROR_PREFIX, PROGRESS_LINE, assert_fails
from jaxfold import cli, inference
from jaxfold.convert import alphafold_npz
from jaxfold.convert import checkpoint
from jaxfold.convert import formats
from jaxfold.convert import schema
from jaxfold.model import alphafold as alphafold_module
from jaxfold.model.config import preset

PRESET = 'model_3_ptm'
NAME = 'query73'
BATCH_STEM = 'query73_batch'  # the default prediction name when --name is not given
NUM_RES = 73
# Small weights keep every activation of the 48-block Evoformer finite.
WEIGHT_SCALE = 0.02
_FILE_KINDS = ('_unrelaxed.pdb', '_unrelaxed.cif', '_confidence.png')
_REPRESENTATIONS = {'representations/msa_first_row': (NUM_RES, 256),
                    'representations/pair': (NUM_RES, NUM_RES, 128),
                    'representations/single': (NUM_RES, 384)}


@dataclasses.dataclass(frozen=True)
class Run:
  """One in-process `jaxfold` call: its exit status, what it printed, and how long it took."""
  status: int
  stdout: str
  stderr: str
  seconds: float


def _run(argv: list[str]) -> Run:
  """Calls `cli.main` capturing its output (usable in module-scoped fixtures, unlike capsys)."""
  out, err = io.StringIO(), io.StringIO()
  start = time.perf_counter()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    status = cli.main([str(arg) for arg in argv])
  return Run(status, out.getvalue(), err.getvalue(), time.perf_counter() - start)


def _listing(directory: pathlib.Path) -> list[str]:
  """Every path under `directory`, hidden ones (temporary files) included."""
  return sorted(str(path.relative_to(directory)) for path in directory.rglob('*'))


# ---------------------------------------------------------------------------------------------
# Inputs and the two predictions, shared by the module.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def weights_npz(tmp_path_factory) -> pathlib.Path:
  """A full-size model_3_ptm AlphaFold .npz of small random float32 weights."""
  shapes = schema.parameter_shapes(preset(PRESET).model)
  rng = np.random.default_rng(0)
  flat = {key: WEIGHT_SCALE * rng.standard_normal(shape, dtype=np.float32)
          for key, shape in shapes.items()}
  path = tmp_path_factory.mktemp('weights') / f'params_{PRESET}.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(flat), path)
  return path


@pytest.fixture(scope='module')
def batch_npz(tmp_path_factory, shared_dir) -> pathlib.Path:
  """query73 processed by AlphaFold's pipeline for model_3_ptm, one recycling iteration."""
  pytest.importorskip('haiku')
  pytest.importorskip('alphafold.model.features')
  from jaxfold.parity import alphafold_model  # pylint: disable=import-outside-toplevel
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAXFOLD_SHARED', str(shared_dir))
    af_config = alphafold_model.alphafold_config(PRESET, num_recycle=1, max_msa_clusters=8,
                                                 max_extra_msa=16)
    batch = alphafold_model.query73_features(af_config)
  assert batch['aatype'].shape == (2, NUM_RES)
  path = tmp_path_factory.mktemp('batch') / f'{BATCH_STEM}.npz'
  np.savez(path, **batch)
  return path


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory, weights_npz) -> pathlib.Path:
  """`jaxfold convert` of the .npz into a jaxfold checkpoint directory."""
  destination = tmp_path_factory.mktemp('checkpoint') / 'model_3_ptm_checkpoint'
  run = _run(['--quiet', 'convert', weights_npz, destination, '--preset', PRESET])
  assert run.status == 0, run.stderr
  assert (run.stdout, run.stderr) == ('', '')
  return destination


@pytest.fixture(scope='module')
def npz_prediction(tmp_path_factory, weights_npz, batch_npz) -> tuple[pathlib.Path, Run]:
  """`jaxfold predict` from the AlphaFold .npz, with --name, --save-representations and
  --save-logits."""
  output = tmp_path_factory.mktemp('predict_npz') / 'out'
  run = _run(['predict', '--params', weights_npz, '--preset', PRESET, '--batch', batch_npz,
              '--output', output, '--name', NAME, '--num-recycle', '1',
              '--save-representations', '--save-logits'])
  assert run.status == 0, run.stderr
  return output, run


@pytest.fixture(scope='module')
def checkpoint_prediction(tmp_path_factory, checkpoint_dir, batch_npz
                          ) -> tuple[pathlib.Path, Run]:
  """`jaxfold predict` from the checkpoint: no --preset, default name, no representations."""
  output = tmp_path_factory.mktemp('predict_checkpoint') / 'out'
  run = _run(['predict', '--params', checkpoint_dir, '--batch', batch_npz, '--output', output,
              '--num-recycle', '1'])
  assert run.status == 0, run.stderr
  return output, run


# ---------------------------------------------------------------------------------------------
# Help and the installed entry point.
# ---------------------------------------------------------------------------------------------

def test_installed_console_script_prints_help():
  script = pathlib.Path(sys.executable).parent / 'jaxfold'
  assert script.is_file(), f'{script}: console script not installed (pip install -e .)'
  done = subprocess.run([str(script), '--help'], capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith('usage: jaxfold')
  for command in ('convert', 'predict', 'data', 'parity', 'analyze'):
    assert command in done.stdout


@pytest.mark.parametrize('argv', [['--help'], ['convert', '--help'], ['predict', '--help'],
                                  ['data', '--help'], ['data', 'features', '--help'],
                                  ['data', 'build', '--help'], ['data', 'subset', '--help'],
                                  ['parity', '--help'], ['parity', 'alphafold', '--help'],
                                  ['analyze', '--help'], ['analyze', 'trajectory', '--help']])
def test_every_help_exits_zero(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  out, err = capsys.readouterr()
  assert exit_info.value.code == 0
  assert out.startswith('usage: jaxfold ' + ' '.join(argv[:-1])), out
  assert err == ''


def test_subcommand_is_required(capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([])
  assert exit_info.value.code == 2
  assert ERROR_PREFIX in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# convert
# ---------------------------------------------------------------------------------------------

def test_convert_records_the_preset(checkpoint_dir):
  document = json.loads((checkpoint_dir / checkpoint.METADATA_FILE).read_text())
  assert document['preset'] == PRESET
  assert document['parameters'] == sum(
      int(np.prod(shape)) for shape in schema.parameter_shapes(preset(PRESET).model).values())


def test_convert_round_trip_is_bit_identical(weights_npz, checkpoint_dir, tmp_path, capsys):
  back = tmp_path / 'back.npz'
  # The checkpoint records its preset: no --preset needed.
  status = cli.main(['convert', str(checkpoint_dir), str(back)])
  out, err = capsys.readouterr()
  assert status == 0, err
  assert out == ''
  lines = err.splitlines()
  assert lines and all(PROGRESS_LINE.match(line) for line in lines), err
  assert PRESET in err
  assert _listing(tmp_path) == ['back.npz']  # no temporary file left beside it
  with np.load(weights_npz) as original, np.load(back) as converted:
    assert sorted(converted.files) == sorted(original.files)
    for key in original.files:
      want, got = original[key], converted[key]
      assert got.dtype == want.dtype and got.shape == want.shape, key
      assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), key


# ---------------------------------------------------------------------------------------------
# predict: the files written, their content, and the checkpoint giving the same prediction.
# ---------------------------------------------------------------------------------------------

def test_predict_writes_every_file_and_nothing_else(npz_prediction, checkpoint_prediction):
  for (output, _), name in ((npz_prediction, NAME), (checkpoint_prediction, BATCH_STEM)):
    assert _listing(output) == sorted(
        [f'{name}{kind}' for kind in _FILE_KINDS] + ['confidence.json', 'outputs.npz'])
    # The staging directory beside the output directory is gone.
    assert _listing(output.parent) == ['out'] + [f'out/{f}' for f in _listing(output)]


def test_predict_reports_progress_on_stderr_only(npz_prediction, checkpoint_prediction):
  # The checkpoint run was given no --preset: the preset it reports is the recorded one.
  for output, run in (npz_prediction, checkpoint_prediction):
    assert run.stdout == ''
    lines = run.stderr.splitlines()
    assert all(PROGRESS_LINE.match(line) for line in lines), run.stderr
    assert f'{NUM_RES} residues, {PRESET}, 1 recycling iteration, float32' in run.stderr
    phases = [line.split('] ', 1)[1].split(' ')[0] for line in lines]
    assert phases == ['reading', 'predicting', 'compiled', 'predicted', 'writing', 'done:'], lines
    assert '(2 iterations)' in lines[3]
    assert lines[-1].split('] ', 1)[1].startswith('done: mean pLDDT')
    assert str(output) in lines[-1]


def test_predict_outputs_npz(npz_prediction, batch_npz):
  output, _ = npz_prediction
  with np.load(output / 'outputs.npz') as outputs:
    arrays = {key: outputs[key] for key in outputs.files}
  expected = {'final_atom_positions': (NUM_RES, 37, 3), 'final_atom_mask': (NUM_RES, 37),
              'plddt': (NUM_RES,), 'predicted_aligned_error': (NUM_RES, NUM_RES), 'ptm': (),
              'distogram/logits': (NUM_RES, NUM_RES, 64),
              'masked_msa/logits': (8, NUM_RES, 23),
              'experimentally_resolved/logits': (NUM_RES, 37),
              'predicted_lddt/logits': (NUM_RES, 50),
              'predicted_aligned_error/logits': (NUM_RES, NUM_RES, 64), **_REPRESENTATIONS}
  for key, shape in expected.items():
    assert key in arrays, f'{key} not in outputs.npz: {sorted(arrays)}'
    assert arrays[key].shape == shape, key
    assert arrays[key].dtype == np.float32, key
    assert np.isfinite(arrays[key]).all(), key
  assert 0 <= arrays['plddt'].min() and arrays['plddt'].max() <= 100
  assert 0 < arrays['ptm'] < 1
  # The atoms present are the sequence's (weights this small fold all into about one point).
  with np.load(batch_npz) as batch:
    np.testing.assert_array_equal(arrays['final_atom_mask'], batch['atom37_atom_exists'][0])


def test_confidence_json_and_structure_files_match_outputs(npz_prediction):
  output, _ = npz_prediction
  with np.load(output / 'outputs.npz') as outputs:
    plddt, ptm = outputs['plddt'], outputs['ptm']
    ca = outputs['final_atom_positions'][:, 1]
  summary = json.loads((output / 'confidence.json').read_text())
  assert summary['name'] == NAME
  assert summary['num_residues'] == NUM_RES
  np.testing.assert_allclose(summary['mean_plddt'], plddt.mean(), rtol=1e-6)
  np.testing.assert_allclose(summary['ptm'], ptm, rtol=1e-6)
  np.testing.assert_allclose(summary['plddt'], plddt, atol=0.005)

  ca_lines = [line for line in (output / f'{NAME}_unrelaxed.pdb').read_text().splitlines()
              if line.startswith('ATOM') and line[12:16].strip() == 'CA']
  assert len(ca_lines) == NUM_RES
  coordinates = np.array([[float(line[i:i + 8]) for i in (30, 38, 46)] for line in ca_lines])
  np.testing.assert_allclose(coordinates, ca, atol=6e-4)  # PDB keeps 3 decimals
  np.testing.assert_allclose([float(line[60:66]) for line in ca_lines], plddt, atol=0.006)

  cif = (output / f'{NAME}_unrelaxed.cif').read_text()
  assert cif.lower().startswith(f'data_{NAME}')
  assert (output / f'{NAME}_confidence.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_predict_from_checkpoint_gives_identical_outputs(npz_prediction, checkpoint_prediction):
  with np.load(npz_prediction[0] / 'outputs.npz') as from_npz, \
       np.load(checkpoint_prediction[0] / 'outputs.npz') as from_checkpoint:
    # Without --save-representations and --save-logits there are no representations, no
    # heads' outputs (logits, bin edges) and no aligned_confidence_probs; the rest is the same.
    left_out = tuple(f'{head}/' for head in ('representations',) + inference.LOGIT_HEADS)
    assert sorted(from_checkpoint.files) == sorted(
        key for key in from_npz.files
        if not key.startswith(left_out) and key != 'aligned_confidence_probs')
    for key in from_checkpoint.files:
      assert np.array_equal(from_checkpoint[key], from_npz[key]), key


def test_predict_with_a_budget_in_one_piece_gives_the_same_structure(
    npz_prediction, weights_npz, batch_npz, tmp_path):
  """The default chunks (subbatches of 4, the pair 64 rows at a time: 73 residues make two
  overlapping chunks) change memory, not the prediction: a budget every settings fit picks
  one piece, compiled once (its plan's program runs), and agrees within float32 rounding."""
  output = tmp_path / 'out'
  run = _run(_predict_argv(weights_npz, batch_npz, output, '--preset', PRESET, '--name', NAME,
                           '--budget', '1TiB'))
  assert run.status == 0, run.stderr
  assert re.search(r'settings one_piece: [0-9.]+ GiB fits 1024.00 GiB', run.stderr), run.stderr
  assert 'settings alphafold' not in run.stderr
  assert 'subbatch off, pair chunk off, xla attention' in run.stderr
  with np.load(npz_prediction[0] / 'outputs.npz') as default, \
       np.load(output / 'outputs.npz') as one_piece:
    for key in ('final_atom_positions', 'plddt', 'predicted_aligned_error'):
      scale = np.max(np.abs(default[key]))
      assert np.max(np.abs(one_piece[key] - default[key])) <= 1e-5 * scale, key


# ---------------------------------------------------------------------------------------------
# Bad input: one error line naming the path, exit status 2, nothing written.
# ---------------------------------------------------------------------------------------------

def _predict_argv(params, batch, output, *extra) -> list:
  return ['predict', '--params', params, '--batch', batch, '--output', output,
          '--num-recycle', '1', *extra]


def test_missing_params_fails_in_a_subprocess(batch_npz, tmp_path):
  script = pathlib.Path(sys.executable).parent / 'jaxfold'
  missing = tmp_path / 'params_missing.npz'
  done = subprocess.run(
      [str(script), '--quiet'] + [str(arg) for arg in _predict_argv(
          missing, batch_npz, tmp_path / 'out', '--preset', PRESET)],
      capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 2, done.stderr
  assert done.stdout == ''
  assert len(done.stderr.splitlines()) == 1, done.stderr
  assert done.stderr.startswith(f'{ERROR_PREFIX}{missing}: ')
  assert _listing(tmp_path) == []


def test_negative_subbatch_size_fails(weights_npz, batch_npz, tmp_path, capsys):
  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, tmp_path / 'out', '--preset',
                                             PRESET, '--subbatch-size', '-1'), '--subbatch-size')
  assert 'must be 0 (one piece) or more' in line
  assert _listing(tmp_path) == []


def test_a_mesh_other_than_residues_fails(weights_npz, batch_npz, tmp_path, capsys):
  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, tmp_path / 'out', '--preset',
                                             PRESET, '--mesh', 'data=2'), '--mesh data=2')
  assert 'a prediction splits its residues over res only' in line
  assert _listing(tmp_path) == []


def test_missing_batch_fails(weights_npz, tmp_path, capsys):
  missing = tmp_path / 'batch_missing.npz'
  assert_fails(capsys, _predict_argv(weights_npz, missing, tmp_path / 'out', '--preset',
                                      PRESET), missing)
  assert _listing(tmp_path) == []


def test_truncated_weights_fail(weights_npz, batch_npz, tmp_path, capsys):
  truncated = tmp_path / 'params_truncated.npz'
  with open(weights_npz, 'rb') as source:
    truncated.write_bytes(source.read(weights_npz.stat().st_size // 2))
  line = assert_fails(capsys, _predict_argv(truncated, batch_npz, tmp_path / 'out',
                                             '--preset', PRESET), truncated)
  assert 'not a readable .npz' in line
  assert _listing(tmp_path) == [truncated.name]


def test_batch_missing_a_feature_fails(weights_npz, batch_npz, tmp_path, capsys):
  incomplete = tmp_path / 'batch_without_msa_feat.npz'
  with np.load(batch_npz) as batch:
    np.savez(incomplete, **{key: batch[key] for key in batch.files if key != 'msa_feat'})
  line = assert_fails(capsys, _predict_argv(weights_npz, incomplete, tmp_path / 'out',
                                             '--preset', PRESET), incomplete)
  assert line.endswith('missing features for this preset: msa_feat')
  assert _listing(tmp_path) == [incomplete.name]


def test_weights_of_another_preset_fail(weights_npz, batch_npz, tmp_path, capsys):
  wanted = schema.parameter_shapes(preset('model_1_ptm').model)
  found = schema.parameter_shapes(preset(PRESET).model)
  missing = sorted(wanted.keys() - found.keys())
  assert missing and not found.keys() - wanted.keys()
  # The inputs are checked first: this template-free batch does not fit model_1_ptm either.
  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, tmp_path / 'out',
                                             '--preset', 'model_1_ptm'), batch_npz)
  assert 'missing features for this preset: template_aatype' in line
  with pytest.raises(alphafold_npz.SchemaError) as caught:
    inference.load_params(weights_npz, 'model_1_ptm')
  line = str(caught.value)
  assert f"{weights_npz}" in line and "preset 'model_1_ptm'" in line
  assert f'{len(missing)} missing ({missing[0]}' in line
  assert all('template' in key for key in missing)
  assert 'unexpected' not in line and 'misshaped' not in line
  assert _listing(tmp_path) == []


def test_npz_without_preset_fails_unless_named_as_alphafold_names_it(weights_npz, batch_npz,
                                                                     tmp_path, capsys):
  renamed = tmp_path / 'weights.npz'
  renamed.symlink_to(weights_npz)
  line = assert_fails(capsys, _predict_argv(renamed, batch_npz, tmp_path / 'out'), renamed)
  assert '--preset' in line and 'params_<preset>.npz' in line
  assert _listing(tmp_path) == ['weights.npz']
  # params_model_3_ptm.npz says its preset: what fails now is the recycling count asked.
  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, tmp_path / 'out',
                                             '--num-recycle', '5'), batch_npz)
  assert '--num-recycle 5 disagrees' in line


def test_checkpoint_with_another_preset_fails(checkpoint_dir, batch_npz, tmp_path, capsys):
  line = assert_fails(capsys, _predict_argv(checkpoint_dir, batch_npz, tmp_path / 'out',
                                             '--preset', 'model_1_ptm'), checkpoint_dir)
  assert f'holds preset {PRESET!r}, not ' in line
  assert _listing(tmp_path) == []


def test_existing_output_fails_before_the_model_runs(weights_npz, batch_npz, tmp_path, capsys,
                                                     monkeypatch):
  output = tmp_path / 'out'
  output.mkdir()
  existing = output / 'outputs.npz'
  existing.write_bytes(b'an earlier prediction')
  stamp = existing.stat().st_mtime_ns

  def must_not_run(*args, **kwargs):
    raise AssertionError('predict went past the existing-output check')
  monkeypatch.setattr(formats, 'load_params', must_not_run)
  monkeypatch.setattr(alphafold_module, 'AlphaFold', must_not_run)

  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, output, '--preset', PRESET,
                                             '--name', NAME), existing)
  assert '--overwrite' in line
  assert existing.read_bytes() == b'an earlier prediction'
  assert existing.stat().st_mtime_ns == stamp
  assert _listing(tmp_path) == ['out', 'out/outputs.npz']


@pytest.mark.parametrize('kind', ['file', 'directory'])
def test_convert_to_an_existing_destination_fails(weights_npz, tmp_path, capsys, kind):
  if kind == 'file':
    destination = tmp_path / 'params.npz'
    destination.write_bytes(b'keep me')
    kept = destination
  else:
    destination = tmp_path / 'checkpoint'
    destination.mkdir()
    kept = destination / 'notes.txt'
    kept.write_bytes(b'keep me')
  before = _listing(tmp_path)
  assert_fails(capsys, ['convert', weights_npz, destination, '--preset', PRESET], destination)
  assert kept.read_bytes() == b'keep me'
  assert _listing(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# parity alphafold: the full-size reference and jaxfold on the same features.
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def restore_matmul_precision():
  """`jaxfold parity` sets JAX's default matmul precision for its process; undo it here."""
  before = jax.config.jax_default_matmul_precision
  yield
  jax.config.update('jax_default_matmul_precision', before)


@pytest.mark.slow
def test_parity_alphafold_writes_table_and_report(batch_npz, tmp_path, capsys,
                                                  restore_matmul_precision):
  pytest.importorskip('alphafold.model.modules')
  report = tmp_path / 'r.json'
  start = time.perf_counter()
  status = cli.main(['parity', 'alphafold', '--batch', str(batch_npz), '--preset', PRESET,
                     '--num-recycle', '1', '--report', str(report)])
  seconds = time.perf_counter() - start
  out, err = capsys.readouterr()
  assert status == 0, out + err
  assert f'{PRESET}, {NUM_RES} residues, 1 recycling iterations, float32' in out

  document = json.loads(report.read_text())
  assert (document['preset'], document['num_recycle'], document['num_residues']) == (
      PRESET, 1, NUM_RES)
  assert document['passed'] is True
  rows = document['rows']
  names = [row['name'] for row in rows]
  assert 'end to end/final_atom_positions' in names and 'end to end/ptm' in names
  assert 'teacher-forced/iteration 1/representations/pair' in names
  assert [b['iteration'] for b in document['recycling']['free_running']] == [1]
  for row in rows:
    assert {'max_abs_diff', 'max_abs_ref', 'relative', 'tolerance', 'measure',
            'passed'} <= row.keys(), row
    assert row['passed'] is True, row
    assert 0 <= row['max_abs_diff']
    # Judged rows have a tolerance; AlphaFold against itself is measured only.
    assert (row['tolerance'] is None) == row['name'].startswith('AlphaFold against itself')
    assert row['tolerance'] is None or 0 < row['tolerance']
    assert row['name'] in out  # every reported row is in the printed table
  assert f'{len(rows)}/{len(rows)} rows within tolerance' in out
  assert f'report: {report}' in out
  print(f'parity alphafold ({PRESET}, {NUM_RES} residues, 1 recycle): {seconds:.0f} s')


# ---------------------------------------------------------------------------------------------
# predict from a FASTA file and its alignments, and from raw features.
# ---------------------------------------------------------------------------------------------

def _query73_argv(shared_dir) -> list:
  query = shared_dir / 'data' / 'alignments' / 'query73'
  return ['--fasta', query / 'query.fasta', '--msa-dir', query,
          '--mmcif-dir', shared_dir / 'data' / 'mmcif']


@pytest.fixture(scope='module')
def fasta_prediction(tmp_path_factory, weights_npz, shared_dir) -> tuple[pathlib.Path, Run]:
  """`jaxfold predict --fasta ... --msa-dir ...`: the whole pipeline, small MSA sizes."""
  output = tmp_path_factory.mktemp('predict_fasta') / 'out'
  run = _run(['predict', '--params', weights_npz, '--preset', PRESET, *_query73_argv(shared_dir),
              '--output', output, '--num-recycle', '0', '--max-msa-clusters', '8',
              '--max-extra-msa', '16'])
  assert run.status == 0, run.stderr
  return output, run


def test_predict_from_fasta_runs_the_data_pipeline(fasta_prediction, shared_dir):
  output, run = fasta_prediction
  assert _listing(output) == sorted(
      [f'query{kind}' for kind in _FILE_KINDS] + ['confidence.json', 'outputs.npz'])
  assert '1136 MSA rows' in run.stderr  # AlphaFold's merged, de-duplicated MSA of query73
  assert 'processed features: 8 MSA clusters, 16 extra sequences (seed 0)' in run.stderr
  with np.load(output / 'outputs.npz') as outputs:
    assert outputs['final_atom_positions'].shape == (NUM_RES, 37, 3)
    assert np.isfinite(outputs['final_atom_positions']).all()
    # By default the logits stay out of memory and off the disk.
    assert not [key for key in outputs.files
                if key.endswith('/logits') or key == 'aligned_confidence_probs']
  sequence = (shared_dir / 'data' / 'alignments' / 'query73' / 'query.fasta').read_text()
  pdb = (output / 'query_unrelaxed.pdb').read_text()
  residues = [line[17:20] for line in pdb.splitlines()
              if line.startswith('ATOM') and line[12:16].strip() == 'CA']
  from jaxfold.common import residue_constants as rc  # pylint: disable=import-outside-toplevel
  assert ''.join(rc.restype_3to1[r] for r in residues) == ''.join(sequence.splitlines()[1:])


def test_data_features_then_predict_features_gives_the_fasta_batch(tmp_path, shared_dir,
                                                                   monkeypatch):
  """`data features` writes AlphaFold's raw features; --features processes them exactly as
  --fasta does (same seed, same batch), so the model input cannot differ."""
  features = tmp_path / 'features.pkl'
  run = _run(['--quiet', 'data', 'features', *_query73_argv(shared_dir), '--output', features])
  assert run.status == 0, run.stderr
  assert _listing(tmp_path) == ['features.pkl']
  with open(features, 'rb') as f:
    raw = pickle.load(f)
  with open(shared_dir / 'data' / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    reference = pickle.load(f)
  for key in ('aatype', 'residue_index', 'msa', 'deletion_matrix_int', 'num_alignments'):
    np.testing.assert_array_equal(raw[key], reference[key], err_msg=key)
  # The templates whose mmCIF files are present, in the reference's order.
  present = [name for name in reference['template_domain_names']
             if (shared_dir / 'data' / 'mmcif' / f'{name.decode()[:4]}.cif').exists()]
  assert list(raw['template_domain_names']) == present

  batches = {}
  for kind, argv in (('fasta', _query73_argv(shared_dir)), ('features', ['--features', features])):
    args = cli.build_parser().parse_args(
        ['predict', '--params', 'unused', '--output', 'unused', '--max-msa-clusters', '8',
         '--max-extra-msa', '16', '--seed', '3', *[str(a) for a in argv]])
    batches[kind] = cli._prediction_batch(args, preset('model_1_ptm'), lambda _: None)  # pylint: disable=protected-access
  assert sorted(batches['fasta']) == sorted(batches['features'])
  for key, value in batches['fasta'].items():
    np.testing.assert_array_equal(value, batches['features'][key], err_msg=key)
  assert batches['fasta']['template_mask'][0].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize('case', ['no_msa_dir', 'missing_msa_dir', 'unknown_residue',
                                  'other_protein', 'garbage_features'])
def test_bad_prediction_inputs_fail(case, weights_npz, tmp_path, shared_dir, capsys):
  query = shared_dir / 'data' / 'alignments' / 'query73'
  inputs = tmp_path / 'inputs'
  inputs.mkdir()
  fasta, msa_dir = query / 'query.fasta', query
  if case == 'unknown_residue':
    fasta = inputs / 'bad.fasta'
    fasta.write_text('>bad\nMKTJAYIAK\n')
  elif case == 'other_protein':
    fasta = shared_dir / 'data' / 'pdb' / '101m_1_A.fasta'
  elif case == 'missing_msa_dir':
    msa_dir = inputs / 'no_such_folder'
  source = ['--fasta', fasta] + ([] if case == 'no_msa_dir' else ['--msa-dir', msa_dir])
  if case == 'garbage_features':
    source = ['--features', inputs / 'features.pkl']
    source[1].write_bytes(b'not a pickle')
  names = {'no_msa_dir': fasta, 'missing_msa_dir': msa_dir, 'unknown_residue': fasta,
           'other_protein': query / 'uniref90_hits.sto', 'garbage_features': source[1]}[case]
  error = assert_fails(capsys, ['predict', '--params', weights_npz, '--preset', PRESET,
                                 *source, '--output', tmp_path / 'out'], names)
  if case == 'unknown_residue':
    assert "unknown residue 'J' at position 4" in error
  assert not (tmp_path / 'out').exists()


def test_data_features_bad_input_writes_nothing(tmp_path, capsys):
  fasta = tmp_path / 'empty.fasta'
  fasta.write_text('')
  assert_fails(capsys, ['data', 'features', '--fasta', fasta, '--msa-dir', tmp_path,
                         '--output', tmp_path / 'features.pkl'], fasta)
  assert _listing(tmp_path) == ['empty.fasta']


def test_alphafold_layout_batch_read_as_openfolds_fails(weights_npz, batch_npz, tmp_path, capsys):
  line = assert_fails(capsys, _predict_argv(weights_npz, batch_npz, tmp_path / 'out', '--preset',
                                             PRESET, '--batch-layout', 'openfold'), batch_npz)
  assert 'does not end in the recycling axis' in line and 'OpenFold-layout batch?' in line
  assert _listing(tmp_path) == []


def test_parity_losses_refuse_a_batch(batch_npz, capsys):
  pytest.importorskip('alphafold.model.modules')
  before = jax.config.jax_default_matmul_precision
  try:
    line = assert_fails(capsys, ['parity', 'alphafold', '--losses', '--batch', batch_npz],
                        batch_npz)
  finally:
    jax.config.update('jax_default_matmul_precision', before)
  assert '--losses makes its own training example' in line


def test_parity_gradients_refuse_weights_and_a_batch(batch_npz, tmp_path, capsys):
  pytest.importorskip('alphafold.model.modules')
  before = jax.config.jax_default_matmul_precision
  weights = tmp_path / 'weights.npz'
  try:
    line = assert_fails(capsys, ['parity', 'alphafold', '--gradients', '--batch', batch_npz],
                        batch_npz)
    assert '--gradients makes its own training example' in line
    line = assert_fails(capsys, ['parity', 'alphafold', '--gradients', '--params', weights],
                        weights)
    assert 'perturbed random weights of its own' in line
  finally:
    jax.config.update('jax_default_matmul_precision', before)


def test_convert_random_writes_seeded_weights_of_the_preset(tmp_path, capsys):
  destination = tmp_path / f'params_{PRESET}.npz'
  assert cli.main(['convert', '--random', '--preset', PRESET, str(destination), '--seed',
                   '3']) == 0
  assert f'drawing random weights of {PRESET} (seed 3)' in capsys.readouterr().err
  written, _ = formats.load_params(destination, schema.parameter_shapes(preset(PRESET).model))
  expected = alphafold_npz.flat_keys(schema.random_parameters(preset(PRESET).model, seed=3))
  got = alphafold_npz.flat_keys(written)
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  everything = np.concatenate([value.ravel() for value in got.values()])
  assert abs(everything.std() - 0.02) < 1e-4 and abs(everything.mean()) < 1e-4
  assert_fails(capsys, ['convert', '--random', str(tmp_path / 'x.npz')], 'x.npz')
  assert_fails(capsys, ['convert', '--random', '--preset', PRESET, str(tmp_path / 'x.npz'),
                        str(tmp_path / 'y.npz')], 'x.npz')
  assert sorted(p.name for p in tmp_path.iterdir()) == [destination.name]
