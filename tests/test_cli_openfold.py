"""`jaxfold convert` / `predict --params` with OpenFold files, as a user runs them.

The presets the command knows are full size, so the one conversion chain that succeeds runs
once (slow): OpenFold model_1_ptm's 5046 tensors as random bit patterns, through every pair
of formats and back, compared byte for byte. The error cases use a model_1_ptm reduced to a
few blocks, which fails the full-size preset's schema the way a user's wrong file does. Bad
input ends with one stderr line `jaxfold: error: <path>: ...`, exit status 2, and nothing
written.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cli_checks import assert_fails
from jaxfold import cli
from jaxfold.convert import formats
from jaxfold.convert import openfold_keys
from jaxfold.convert import openfold_pt
from jaxfold.model.config import preset, reduced
from jaxfold.parity import openfold_fixture


def _listing(directory: pathlib.Path) -> list[str]:
  """Every path under `directory`, hidden ones (temporary files) included."""
  return sorted(str(path.relative_to(directory)) for path in directory.rglob('*'))


def _random_bits(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {key: rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)
          for key, shape in shapes.items()}


@pytest.fixture(scope='module')
def reduced_ptm(tmp_path_factory) -> pathlib.Path:
  """model_1_ptm with 2 Evoformer blocks etc. as an OpenFold .pt (8 M parameters)."""
  path = tmp_path_factory.mktemp('reduced') / 'reduced_ptm.pt'
  openfold_pt.write_openfold(
      _random_bits(openfold_keys.openfold_shapes(reduced(preset('model_1_ptm')).model)), path)
  return path


@pytest.mark.slow
def test_convert_between_every_pair_of_formats(shared_dir, tmp_path, capsys):
  """.pt -> dir -> .npz -> .pt -> .npz -> dir -> .pt: every pair, bit for bit."""
  manifest = json.loads((shared_dir / 'fixtures' / 'openfold' / 'model_1_ptm_full' /
                         'manifest.json').read_text())['state_dict']
  flat = _random_bits({entry['name']: tuple(entry['shape']) for entry in manifest})
  openfold_pt.write_openfold(flat, tmp_path / 'source.pt')
  steps = (('source.pt', 'a_ckpt'), ('a_ckpt', 'b.npz'), ('b.npz', 'c.pt'), ('c.pt', 'd.npz'),
           ('d.npz', 'e_ckpt'), ('e_ckpt', 'f.pt'))
  for src, dst in steps:
    status = cli.main(['convert', str(tmp_path / src), str(tmp_path / dst),
                       '--preset', 'model_1_ptm'])
    _, err = capsys.readouterr()
    assert status == 0, err
    assert f'reading {tmp_path / src}' in err, err
    assert '93,237,338 parameters fit model_1_ptm' in err and err.rstrip().endswith('done'), err
  assert (tmp_path / 'b.npz').read_bytes() == (tmp_path / 'd.npz').read_bytes()
  for name in ('c.pt', 'f.pt'):
    back, info = openfold_pt.read_openfold(tmp_path / name)
    assert info.container == '' and sorted(back) == sorted(flat)
    for key, array in flat.items():
      assert np.array_equal(back[key].view(np.uint32), array.view(np.uint32)), (name, key)
  assert [p for p in _listing(tmp_path) if '/' not in p] == [
      'a_ckpt', 'b.npz', 'c.pt', 'd.npz', 'e_ckpt', 'f.pt', 'source.pt']


def test_wrong_preset_lists_the_misfit_and_names_the_preset_that_fits(reduced_ptm, tmp_path,
                                                                       capsys):
  line = assert_fails(capsys, ['convert', reduced_ptm, tmp_path / 'out.npz', '--preset',
                                'model_1'], reduced_ptm)
  assert 'missing (evoformer.blocks.10.' in line
  assert '2 unexpected (aux_heads.tm.linear.bias, aux_heads.tm.linear.weight)' in line
  assert "the keys fit preset 'model_1_ptm'" in line
  assert _listing(tmp_path) == []


def test_openfold_source_without_preset_names_the_one_it_fits(reduced_ptm, tmp_path, capsys):
  line = assert_fails(capsys, ['convert', reduced_ptm, tmp_path / 'ckpt'], reduced_ptm)
  assert line.endswith("does not say which model it is; pass --preset (its keys fit "
                       "'model_1_ptm')")
  assert _listing(tmp_path) == []


def test_damaged_and_missing_sources_fail_before_writing(tmp_path, capsys, shared_dir):
  truncated = tmp_path / 'in' / 'truncated.pt'
  truncated.parent.mkdir()
  openfold_pt.write_openfold({'a.weight': np.ones((4, 4), np.float32)}, truncated)
  truncated.write_bytes(truncated.read_bytes()[:100])
  out = tmp_path / 'out'
  out.mkdir()
  line = assert_fails(capsys, ['convert', truncated, out / 'x.npz', '--preset', 'model_1_ptm'],
                       truncated)
  assert 'not a readable PyTorch file, truncated or damaged' in line
  assert_fails(capsys, ['convert', tmp_path / 'absent.pt', out / 'x.npz'], 'absent.pt')
  # predict reads --params through the same loader (after its inputs, which are good here).
  features = shared_dir / 'data' / 'features' / 'alphafold_feature_dict.pickle'
  line = assert_fails(capsys, ['predict', '--params', truncated, '--preset', 'model_1_ptm',
                                '--features', features, '--max-msa-clusters', '8',
                                '--max-extra-msa', '16', '--output', out / 'prediction'],
                      truncated)
  assert 'not a readable PyTorch file' in line
  assert _listing(out) == []


def test_ema_choice_and_existing_destination(tmp_path, capsys):
  import torch  # pylint: disable=import-outside-toplevel
  ckpt = tmp_path / 'last.ckpt'
  torch.save({'state_dict': {'model.a.weight': torch.ones(2, 2)}}, ckpt)
  line = assert_fails(capsys, ['convert', ckpt, tmp_path / 'x.npz', '--preset', 'model_1_ptm',
                                '--ema'], ckpt)
  assert 'holds no EMA weights' in line and '--no-ema' in line
  (tmp_path / 'x.npz').write_bytes(b'keep')
  line = assert_fails(capsys, ['convert', ckpt, tmp_path / 'x.npz', '--no-ema'], 'x.npz')
  assert '--overwrite' in line and (tmp_path / 'x.npz').read_bytes() == b'keep'
  assert _listing(tmp_path) == ['last.ckpt', 'x.npz']


def test_without_torch_one_line_names_the_extra(tmp_path):
  """torch made unimportable: jaxfold still imports, and an OpenFold file asks for the extra."""
  source = tmp_path / 'model.pt'
  source.write_bytes(b'whatever')
  script = ("import sys; sys.modules['torch'] = None\n"
            'from jaxfold import cli\n'
            "import jaxfold.convert.formats, jaxfold.convert.openfold_pt\n"
            f"sys.exit(cli.main(['convert', {str(source)!r}, {str(tmp_path / 'out.npz')!r}, "
            "'--preset', 'model_1_ptm']))\n")
  done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=120, check=False)
  lines = [line for line in done.stderr.splitlines() if not line.startswith('[')]
  assert done.returncode == 2, done.stderr
  assert lines == [f"jaxfold: error: {source}: reading or writing OpenFold weights needs "
                   f"PyTorch, which is not installed: pip install 'jaxfold[torch]'"]
  assert _listing(tmp_path) == ['model.pt']


def test_help_names_every_format(capsys):
  with pytest.raises(SystemExit) as done:
    cli.main(['convert', '--help'])
  assert done.value.code == 0
  text = ' '.join(capsys.readouterr().out.split())
  for words in ('.npz', '.pt/.ckpt', 'jaxfold[torch]', '--ema, --no-ema', '--trust-pickle'):
    assert words in text, words


@pytest.mark.slow
def test_predict_with_openfold_weights_and_batch_reproduces_openfold(shared_dir, tmp_path,
                                                                     capsys):
  """OpenFold's weights (.pt) and OpenFold's own batch, as a user passes them to predict:
  the prediction is the one OpenFold recorded (shared/fixtures/openfold/model_1_ptm_full)."""
  fixture = shared_dir / 'fixtures' / 'openfold' / 'model_1_ptm_full'
  manifest = json.loads((fixture / 'manifest.json').read_text())['state_dict']
  weights = tmp_path / 'openfold_model_1_ptm.pt'
  openfold_pt.write_openfold(openfold_keys.rule_weights(manifest), weights)
  status = cli.main(['predict', '--params', str(weights), '--preset', 'model_1_ptm',
                     '--batch', str(fixture / 'inputs.npz'), '--batch-layout', 'openfold',
                     '--num-recycle', '1', '--output', str(tmp_path / 'out'), '--name', 'q'])
  _, err = capsys.readouterr()
  assert status == 0, err
  assert 'predicting q: 48 residues, model_1_ptm, 1 recycling iteration,' in err
  recorded = np.load(fixture / 'outputs.npz')
  with np.load(tmp_path / 'out' / 'outputs.npz') as ours:
    mask = recorded['final/final_atom_mask'][..., None]
    measured = {
        'final_atom_positions (Å)': np.abs(ours['final_atom_positions'] * mask
                                           - recorded['final/final_atom_positions'] * mask),
        'plddt': np.abs(ours['plddt'] - recorded['final/plddt']),
        'predicted_aligned_error (Å)': np.abs(ours['predicted_aligned_error']
                                              - recorded['final/predicted_aligned_error']),
        'ptm': np.abs(ours['ptm'] - recorded['final/ptm_score']),
    }
  print('\npredict (OpenFold .pt, OpenFold batch) vs OpenFold, max |Δ|: ' + ', '.join(
      f'{name} {value.max():.2e}' for name, value in measured.items()))
  assert measured['final_atom_positions (Å)'].max() <= 0.05
  for name in ('plddt', 'predicted_aligned_error (Å)', 'ptm'):
    assert measured[name].max() <= 0.01, name


@pytest.mark.slow
def test_parity_alphafold_on_an_openfold_batch(shared_dir, capsys):
  """AlphaFold's own model and jaxfold on OpenFold's processed batch (--batch-layout openfold)."""
  pytest.importorskip('alphafold.model.modules')
  import jax  # pylint: disable=import-outside-toplevel
  before = jax.config.jax_default_matmul_precision
  try:
    status = cli.main(['--quiet', 'parity', 'alphafold', '--preset', 'model_1_ptm',
                       '--batch', str(shared_dir / 'fixtures/openfold/model_1_ptm_full/inputs.npz'),
                       '--batch-layout', 'openfold', '--num-recycle', '1'])
  finally:
    jax.config.update('jax_default_matmul_precision', before)
  out = capsys.readouterr().out
  print(out)
  assert status == 0, out
  assert 'jaxfold vs AlphaFold (live): model_1_ptm, 48 residues, 1 recycling iterations' in out


def test_a_checkpoint_of_an_ablation_predicts_openfolds_batch_with_its_own_recycling(
    shared_dir, tmp_path, capsys):
  """OpenFold's small fixture (model_1_ptm with narrower channels: no preset) converted to a
  jaxfold checkpoint recording its configuration predicts with no --preset and no
  --num-recycle: as many iterations as the batch has slices, OpenFold's recorded result."""
  fixture = openfold_fixture.load_fixture(shared_dir / 'fixtures' / 'openfold' / 'small')
  config = openfold_fixture.fixture_config(fixture.manifest)
  tree = openfold_keys.from_openfold(openfold_fixture.fixture_weights(fixture.manifest),
                                     config.model, 'small')
  checkpoint = tmp_path / 'small_checkpoint'
  formats.save_params(tree, checkpoint, preset='model_1_ptm', config=config)
  assert formats.checkpoint_config(checkpoint) == ('model_1_ptm', config)
  inputs = fixture.path / 'inputs.npz'
  argv = ['predict', '--params', checkpoint, '--batch', inputs, '--batch-layout', 'openfold',
          '--output', tmp_path / 'out', '--name', 'small']
  line = assert_fails(capsys, argv + ['--num-recycle', '3'], inputs)
  assert 'holds 2 recycling slices, so 1 recycling iterations; --num-recycle 3 disagrees' in line
  status = cli.main([str(arg) for arg in argv])
  _, err = capsys.readouterr()
  assert status == 0, err
  assert 'predicting small: 73 residues, model_1_ptm, 1 recycling iteration,' in err
  mask = fixture.output('final/final_atom_mask')[..., None]
  with np.load(tmp_path / 'out' / 'outputs.npz') as ours:
    measured = {
        'final_atom_positions': np.abs(ours['final_atom_positions'] * mask
                                       - fixture.output('final/final_atom_positions') * mask),
        'plddt': np.abs(ours['plddt'] - fixture.output('final/plddt')),
        'ptm': np.abs(ours['ptm'] - fixture.output('final/ptm_score'))}
  print('\npredict (jaxfold checkpoint of OpenFold small, its batch) vs OpenFold, max |Δ|: '
        + ', '.join(f'{name} {value.max():.2e}' for name, value in measured.items()))
  for name, value in measured.items():
    assert value.max() <= openfold_fixture.END_TO_END[name], name
