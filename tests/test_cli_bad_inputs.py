"""Bad input through the `jaxfold` command, one table: every case ends with exit status 2,
exactly one `jaxfold: error:` line naming the file (or flag) at fault, no traceback, and no
output left behind. Inputs are the shared query73 files, damaged one way per case.

Prediction reads and checks its inputs before its weights, so the cases need no real weights
(a `params.npz` that is never opened), except those about weights. Damaged template mmCIFs
are not errors: the hit is skipped with a warning naming the file, as AlphaFold skips it.
"""

import dataclasses
import pathlib
import pickle
import shutil
import sys
from collections.abc import Callable

import numpy as np
import pytest

from cli_checks import assert_fails
from jaxfold import cli
from jaxfold.convert import alphafold_npz, schema
from jaxfold.model.config import preset

PRESET = 'model_3_ptm'


@dataclasses.dataclass(frozen=True)
class Inputs:
  """A writable copy of query73's inputs in `root` (alignments in msa/, mmCIFs in mmcif/)."""
  root: pathlib.Path
  features: dict

  @property
  def msa(self) -> pathlib.Path:
    return self.root / 'msa'

  @property
  def fasta(self) -> pathlib.Path:
    return self.msa / 'query.fasta'

  @property
  def out(self) -> pathlib.Path:
    return self.root / 'out'

  def pickle(self, features: dict, name: str = 'features.pkl') -> pathlib.Path:
    path = self.root / name
    path.write_bytes(pickle.dumps(features, protocol=4))
    return path

  def predict(self, *source) -> list:
    return ['predict', '--params', self.root / 'params.npz', '--preset', PRESET, *source,
            '--output', self.out]

  def features_command(self, *extra, fasta=None) -> list:
    return ['data', 'features', '--fasta', fasta or self.fasta, '--msa-dir', self.msa,
            '--output', self.out / 'features.pkl', *extra]


@pytest.fixture
def inputs(tmp_path, shared_dir) -> Inputs:
  data = shared_dir / 'data'
  shutil.copytree(data / 'alignments' / 'query73', tmp_path / 'msa')
  shutil.copytree(data / 'mmcif', tmp_path / 'mmcif')
  (tmp_path / 'params.npz').write_bytes(b'never read: the input fails first')
  (tmp_path / 'out').mkdir()
  with open(data / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    features = pickle.load(f)  # a trusted shared file
  return Inputs(tmp_path, features)


def _replace_lines(path: pathlib.Path, change: Callable[[list[str]], list[str]]) -> None:
  path.write_text('\n'.join(change(path.read_text().split('\n'))))


def _features_with(inputs: Inputs, **values) -> pathlib.Path:
  return inputs.pickle({**inputs.features, **values})


class _MakesAFile:
  """Unpickling this calls open(marker, 'w'): a file appears if a reader runs pickled code."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return open, (self.marker, 'w')


def _hhr_line_only_q(inputs):
  _replace_lines(inputs.msa / 'pdb70_hits.hhr',
                 lambda lines: [('Q ' if line.startswith('Q query') else line) for line in lines])
  return inputs.features_command('--mmcif-dir', inputs.root / 'mmcif'), 'pdb70_hits.hhr'


def _hhr_not_utf8(inputs):
  path = inputs.msa / 'pdb70_hits.hhr'
  data = bytearray(path.read_bytes())
  data[400:402] = b'\xff\xfe'
  path.write_bytes(bytes(data))
  return inputs.features_command('--mmcif-dir', inputs.root / 'mmcif'), 'pdb70_hits.hhr'


def _a3m_query_gap_column(inputs):
  def insert_gap(lines):  # one more column in every row: the query gets a gap
    return [line if line.startswith('>') or not line else line[:10] + '-' + line[10:]
            for line in lines]
  _replace_lines(inputs.msa / 'bfd_uniclust_hits.a3m', insert_gap)
  return inputs.features_command(), 'bfd_uniclust_hits.a3m'


def _bad_template_date(inputs):
  return (inputs.features_command('--mmcif-dir', inputs.root / 'mmcif', '--max-template-date',
                                  '2021-13-01'), '2021-13-01')


def _unknown_residue(inputs):
  fasta = inputs.root / 'bad.fasta'
  fasta.write_text('>bad\nMKTJAYIAK\n')
  return inputs.features_command(fasta=fasta), fasta


def _empty_fasta(inputs):
  fasta = inputs.root / 'empty.fasta'
  fasta.write_text('')
  return inputs.features_command(fasta=fasta), fasta


def _two_sequences(inputs):
  fasta = inputs.root / 'two.fasta'
  fasta.write_text('>a\nMKTAYIAK\n>b\nMKTAYIAK\n')
  return inputs.features_command(fasta=fasta), fasta


def _empty_sto(inputs):
  (inputs.msa / 'uniref90_hits.sto').write_text('')
  return inputs.features_command(), 'uniref90_hits.sto'


def _truncated_sto(inputs):
  path = inputs.msa / 'mgnify_hits.sto'
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 3])
  return inputs.features_command(), 'mgnify_hits.sto'


def _missing_msa_dir(inputs):
  argv = inputs.features_command()
  argv[argv.index('--msa-dir') + 1] = inputs.root / 'absent'
  return argv, inputs.root / 'absent'


def _pickle_that_runs_code(inputs):
  marker = inputs.root / 'created_by_unpickling'
  path = inputs.pickle({**inputs.features, 'payload': _MakesAFile(marker)}, 'crafted.pkl')
  return inputs.predict('--features', path), path


def _features(key, value):
  def case(inputs):
    path = _features_with(inputs, **{key: value(inputs.features[key])})
    return inputs.predict('--features', path), path
  case.__name__ = f'_features_{key}'
  return case


def _garbage_pickle(inputs):
  path = inputs.root / 'features.pkl'
  path.write_bytes(b'not a pickle')
  return inputs.predict('--features', path), path


def _truncated_pickle(inputs):
  path = inputs.pickle(inputs.features)
  path.write_bytes(path.read_bytes()[:1000])
  return inputs.predict('--features', path), path


def _not_a_dict(inputs):
  path = inputs.pickle([1, 2, 3])
  return inputs.predict('--features', path), path


def _npz_batch_garbage(inputs):
  path = inputs.root / 'batch.npz'
  path.write_bytes(b'PK\x03\x04 not really')
  return inputs.predict('--batch', path), path


def _output_under_a_file(inputs):
  blocker = inputs.root / 'a_file'
  blocker.write_text('')
  argv = inputs.features_command()
  argv[argv.index('--output') + 1] = blocker / 'features.pkl'
  return argv, blocker


def _negative_chunk(inputs):
  return inputs.predict('--features', inputs.pickle(inputs.features), '--pair-chunk-size',
                        '-1'), '--pair-chunk-size'


def _plan_unknown_settings(inputs):
  return ['plan', '--preset', 'model_1', '--length', '64', '--settings', 'fastest'], 'fastest'


def _plan_budget(inputs):
  return ['plan', '--preset', 'model_1', '--length', '64', '--budget', '40 gigs'], '40 gigs'


def _convert_into_missing_folder(inputs):
  destination = inputs.root / 'absent' / 'weights.npz'
  return ['convert', inputs.root / 'params.npz', destination, '--preset', PRESET], 'absent'


def _convert_unknown_format(inputs):
  source = inputs.root / 'weights.bin'
  source.write_bytes(b'\0' * 16)
  return ['convert', source, inputs.root / 'w.npz', '--preset', PRESET], source


def _train_missing_config(inputs):
  config = inputs.root / 'absent_config.py'
  return ['train', '--config', config, '--workdir', inputs.root / 'run'], config


CASES = [
    _hhr_line_only_q, _hhr_not_utf8, _a3m_query_gap_column, _bad_template_date,
    _unknown_residue, _empty_fasta, _two_sequences, _empty_sto, _truncated_sto,
    _missing_msa_dir, _pickle_that_runs_code, _garbage_pickle, _truncated_pickle, _not_a_dict,
    _features('msa', lambda msa: np.where(msa == 0, 22, msa)),
    _features('msa', lambda msa: msa.astype(np.float32) + 0.5),
    _features('seq_length', lambda _: np.array([], np.int32)),
    _features('seq_length', lambda _: None),
    _features('seq_length', lambda v: v.astype(np.float32) * np.inf),
    _features('num_alignments', lambda _: None),
    _features('template_aatype', lambda _: None),
    _features('aatype', lambda aatype: aatype[:, :5]),
    _features('deletion_matrix_int', lambda d: d[:, :-1]),
    _features('template_all_atom_positions', lambda x: np.where(x == 0, np.inf, x)),
    _npz_batch_garbage, _output_under_a_file, _negative_chunk, _plan_unknown_settings,
    _plan_budget, _convert_into_missing_folder, _convert_unknown_format, _train_missing_config,
]


def _case_id(case) -> str:
  return case.__name__.strip('_')


@pytest.mark.parametrize('case', CASES, ids=[
    f'{_case_id(c)}_{i}' if _case_id(c).startswith('features') else _case_id(c)
    for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(case, inputs, capsys):
  argv, names = case(inputs)
  before = sorted(inputs.root.rglob('*'))
  assert_fails(capsys, argv, names)
  assert sorted(inputs.root.rglob('*')) == before  # nothing written, not even a temporary
  assert not (inputs.root / 'created_by_unpickling').exists()


def test_trust_pickle_unpickles_what_the_default_refuses(inputs, capsys):
  marker = inputs.root / 'created_by_unpickling'
  path = inputs.pickle({**inputs.features, 'aatype': _MakesAFile(marker)}, 'crafted.pkl')
  # Trusted, the file is unpickled (the marker appears); its aatype, a file, is then refused.
  assert_fails(capsys, inputs.predict('--features', path, '--trust-pickle'), path)
  assert marker.exists()


def test_trust_pickle_reads_a_benign_file_as_the_default_does(inputs, capsys):
  path = inputs.pickle(inputs.features)
  for trust in ([], ['--trust-pickle']):  # read and processed: what fails is the weights file
    assert_fails(capsys, inputs.predict('--features', path, *trust), 'params.npz')


def test_damaged_template_mmcifs_are_skipped_with_a_warning_naming_them(inputs, capsys):
  mmcif = inputs.root / 'mmcif'
  damaged = {
      '2crb.cif': lambda text: 'data_x\nloop_\n1 2\n',  # Biopython divides by zero
      '4i6p.cif': lambda text: text.replace(' 2013-07-17 ', ' ? ').replace(' 2017-10-25 ', ' ? '),
      '3zee.cif': lambda text: text.replace(' 20.382 ', ' inf ', 1),  # the first atom's x
  }
  for name, change in damaged.items():
    (mmcif / name).write_text(change((mmcif / name).read_text()))
  # A hit without a release date is skipped where dates matter: under a cut-off.
  status = cli.main([str(a) for a in inputs.features_command('--mmcif-dir', mmcif,
                                                             '--max-template-date', '2100-01-01')])
  _, err = capsys.readouterr()
  assert status == 0, err
  assert 'Traceback' not in err and 'jaxfold: error' not in err, err
  warnings = [line.lower() for line in err.splitlines() if line.startswith('jaxfold: warning:')]
  for name in damaged:
    assert any(name[:4] in line for line in warnings), (name, err)
  with open(inputs.out / 'features.pkl', 'rb') as f:
    features = pickle.load(f)  # written by this test's own command
  assert np.isfinite(features['template_all_atom_positions']).all()


def test_weights_with_nan_name_the_file_and_the_parameter(inputs, capsys):
  shapes = schema.parameter_shapes(preset(PRESET).model)
  flat = {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}
  first = sorted(flat)[10]
  flat[first][(0,) * flat[first].ndim] = np.nan
  weights = inputs.root / 'params.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(flat), weights)
  line = assert_fails(capsys, inputs.predict('--features', inputs.pickle(inputs.features)),
                      weights)
  assert f'parameter {first} holds 1 non-finite values' in line
  assert list(inputs.out.iterdir()) == []


def test_predict_relax_without_the_extra_fails_before_the_model(inputs, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, 'openmm', None)  # None makes the import fail
  argv = inputs.predict('--features', inputs.pickle(inputs.features), '--relax', 'best')
  line = assert_fails(capsys, argv, 'jaxfold[relax]')  # not params.npz: before the weights
  assert line.endswith("pip install 'jaxfold[relax]'")
  assert list(inputs.out.iterdir()) == []
