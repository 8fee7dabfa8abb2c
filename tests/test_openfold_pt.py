"""jaxfold.convert.openfold_pt: OpenFold .pt/.ckpt files in and out, bit for bit, and errors.

The weights are the small OpenFold fixture's 431 tensors (shared/fixtures/openfold/small,
OpenFold model_1_ptm with narrow channels), by name and shape as its manifest lists them.
The recorded `weights.pt`, written by OpenFold's torch, must equal the README's weight rule;
files written here must read back through plain `torch.load(weights_only=True)` with exactly
the manifest's keys and shapes, as `load_state_dict(strict=True)` requires. Round trips use
random bit patterns (NaNs with payloads, infinities, subnormals), so only a byte-exact
conversion passes. Through jaxfold's tree, the fast tests use model_1_ptm reduced to a few blocks (jaxfold
cannot state the small fixture's narrow template channels), the slow one the full-size
model_1_ptm of the other fixture's manifest (5046 tensors, 93 M parameters).
"""

import collections
import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import torch

from jaxfold.convert import alphafold_npz
from jaxfold.convert import formats
from jaxfold.convert import openfold_keys
from jaxfold.convert import openfold_pt
from jaxfold.model.config import preset, reduced

# OpenFold v1's names of what v2 calls the first item (OpenFold's convert_deprecated_v1_keys, read
# the other way); v1 also had no 'template_embedder.' level above the template modules.
_V1_NAMES = (('template_single_embedder.', 'template_angle_embedder.'),
             ('.msa_transition.', '.core.msa_transition.'),
             ('.outer_product_mean.', '.core.outer_product_mean.'),
             ('.pair_stack.tri_', '.core.tri_'),
             ('.pair_stack.pair_transition.', '.core.pair_transition.'),
             ('.linear_q_points.linear.', '.linear_q_points.'),
             ('.linear_kv_points.linear.', '.linear_kv_points.'))
_V2_TEMPLATE_LEVEL = 'template_embedder.'


def _manifest(shared_dir, name: str) -> list[dict]:
  path = shared_dir / 'fixtures' / 'openfold' / name / 'manifest.json'
  if not path.exists():
    pytest.skip(f'{path} not present')
  return json.loads(path.read_text())['state_dict']


@pytest.fixture(scope='module')
def small_manifest(shared_dir) -> list[dict]:
  return _manifest(shared_dir, 'small')


def _random_bits(entries: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {entry['name']: rng.integers(0, 2**32, size=entry['shape'], dtype=np.uint32)
                         .view(np.float32) for entry in entries}


@pytest.fixture(scope='module')
def small_bits(small_manifest) -> dict[str, np.ndarray]:
  return _random_bits(small_manifest)


def _assert_bit_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
  assert list(got) == list(want)  # same keys, same order
  for key, array in want.items():
    assert isinstance(got[key], np.ndarray) and got[key].dtype == np.float32, key
    assert got[key].shape == array.shape, key
    assert np.array_equal(got[key].view(np.uint32), array.view(np.uint32)), key


def _save(obj, path: pathlib.Path) -> pathlib.Path:
  torch.save(obj, path)
  return path


def _tensors(flat: dict[str, np.ndarray], prefix: str = '') -> dict[str, torch.Tensor]:
  return {prefix + key: torch.from_numpy(array.copy()) for key, array in flat.items()}


def _lightning(model: dict[str, np.ndarray], ema: dict[str, np.ndarray] | None) -> dict:
  """A PyTorch Lightning checkpoint as OpenFold's training script leaves it."""
  checkpoint = {'epoch': 3, 'global_step': 1200, 'pytorch-lightning_version': '2.5.0',
                'state_dict': collections.OrderedDict(_tensors(model, 'model.')),
                'optimizer_states': [{'state': {}, 'param_groups': [{'lr': 1e-3}]}],
                'lr_schedulers': [], 'loops': {}, 'callbacks': {}}
  if ema is not None:
    checkpoint['ema'] = {'params': collections.OrderedDict(_tensors(ema)), 'decay': 0.999}
  return checkpoint


def _listing(directory: pathlib.Path) -> list[str]:
  return sorted(os.listdir(directory))


def test_recorded_weights_equal_the_rule(shared_dir, small_manifest):
  """OpenFold's own small/weights.pt is the README's rule, tensor for tensor, in its order."""
  state_dict, info = openfold_pt.read_openfold(
      shared_dir / 'fixtures' / 'openfold' / 'small' / 'weights.pt')
  assert (info.container, info.ema, info.has_ema, info.widened) == ('', False, False, 0)
  assert len(state_dict) == 431
  assert [(k, list(v.shape)) for k, v in state_dict.items()] == [
      (entry['name'], entry['shape']) for entry in small_manifest]
  _assert_bit_identical(state_dict, openfold_keys.rule_weights(small_manifest))


def test_written_file_is_what_load_state_dict_strict_takes(tmp_path, small_manifest, small_bits):
  path = tmp_path / 'model.pt'
  openfold_pt.write_openfold(small_bits, path)
  loaded = torch.load(path, map_location='cpu', weights_only=True)
  assert [(k, list(v.shape), v.dtype) for k, v in loaded.items()] == [
      (entry['name'], entry['shape'], torch.float32) for entry in small_manifest]
  _assert_bit_identical({k: v.numpy() for k, v in loaded.items()}, small_bits)
  # Deterministic: the same weights give the same bytes, so round trips can compare files.
  openfold_pt.write_openfold(small_bits, tmp_path / 'again.pt')
  assert path.read_bytes() == (tmp_path / 'again.pt').read_bytes()
  read, _ = openfold_pt.read_openfold(path)
  _assert_bit_identical(read, small_bits)
  assert _listing(tmp_path) == ['again.pt', 'model.pt']  # no temporary files left


def test_lightning_checkpoint_reads_ema_by_default(tmp_path, small_bits):
  trained = _random_bits([{'name': k, 'shape': v.shape} for k, v in small_bits.items()], seed=1)
  path = _save(_lightning(trained, small_bits), tmp_path / 'last.ckpt')
  for ema in (None, True):
    state_dict, info = openfold_pt.read_openfold(path, ema=ema)
    assert (info.container, info.ema, info.has_ema) == ('ema/params', True, True)
    _assert_bit_identical(state_dict, small_bits)
  state_dict, info = openfold_pt.read_openfold(path, ema=False)
  assert (info.container, info.ema, info.has_ema) == ('state_dict', False, True)
  _assert_bit_identical(state_dict, trained)  # the 'model.' prefix is gone


def test_lightning_checkpoint_without_ema(tmp_path, small_bits):
  path = _save(_lightning(small_bits, None), tmp_path / 'epoch=0.ckpt')
  state_dict, info = openfold_pt.read_openfold(path)
  assert (info.container, info.ema, info.has_ema) == ('state_dict', False, False)
  _assert_bit_identical(state_dict, small_bits)
  with pytest.raises(ValueError, match=r"epoch=0\.ckpt: holds no EMA weights .* --no-ema"):
    openfold_pt.read_openfold(path, ema=True)


def test_ema_only_file_and_plain_state_dict_refuse_the_other_choice(tmp_path, small_bits):
  ema_only = _save({'ema': {'params': _tensors(small_bits), 'decay': 0.999}},
                   tmp_path / 'ema.pt')
  _assert_bit_identical(openfold_pt.read_openfold(ema_only)[0], small_bits)
  with pytest.raises(ValueError, match=r'ema\.pt: no OpenFold weights found: .*only EMA'):
    openfold_pt.read_openfold(ema_only, ema=False)
  plain = _save(_tensors(small_bits), tmp_path / 'plain.pt')
  with pytest.raises(ValueError, match=r'plain\.pt: a plain state dict has no separate EMA'):
    openfold_pt.read_openfold(plain, ema=True)


@pytest.mark.parametrize('prefix', ['module.', 'module.model.', 'model.'])
def test_wrapper_prefixes_are_stripped(tmp_path, small_bits, prefix):
  """DeepSpeed / DDP add 'module.', Lightning 'model.' (both: 'module.model.')."""
  path = _save(_tensors(small_bits, prefix), tmp_path / 'wrapped.pt')
  _assert_bit_identical(openfold_pt.read_openfold(path)[0], small_bits)


def test_half_precision_widens_exactly_and_other_dtypes_fail(tmp_path, small_bits):
  half = {key: torch.from_numpy(array.copy()).to(torch.bfloat16)
          for key, array in list(small_bits.items())[:3]}
  state_dict, info = openfold_pt.read_openfold(_save(half, tmp_path / 'bf16.pt'))
  assert info.widened == 3
  for key, tensor in half.items():
    assert state_dict[key].dtype == np.float32
    narrowed = torch.from_numpy(state_dict[key]).to(torch.bfloat16)
    assert torch.equal(narrowed.view(torch.int16), tensor.view(torch.int16)), key
  key = next(iter(small_bits))
  with pytest.raises(ValueError, match=rf"f64\.pt: tensor '{key}' is torch\.float64"):
    openfold_pt.read_openfold(_save({key: torch.zeros(2, dtype=torch.float64)},
                                    tmp_path / 'f64.pt'))
  with pytest.raises(ValueError, match=rf"int\.pt: .*'{key}' is torch\.int64, not a float"):
    openfold_pt.read_openfold(_save({'state_dict': {key: torch.zeros(2, dtype=torch.int64)}},
                                    tmp_path / 'int.pt'))
  with pytest.raises(ValueError, match=rf"out\.pt: tensor '{key}' is int32, not floating"):
    openfold_pt.write_openfold({key: np.zeros(2, np.int32)}, tmp_path / 'out.pt')
  assert not (tmp_path / 'out.pt').exists()


def test_damaged_files_fail_with_one_line_naming_the_file(tmp_path, small_bits):
  whole = _save(_tensors(small_bits), tmp_path / 'whole.pt').read_bytes()
  for name, data in (('truncated.pt', whole[:len(whole) // 2]), ('empty.pt', b''),
                     ('text.pt', b'not a checkpoint\n')):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=rf'{name}: not a readable PyTorch file') as caught:
      openfold_pt.read_openfold(tmp_path / name)
    assert '\n' not in str(caught.value)
  with pytest.raises(FileNotFoundError, match=r'absent\.pt: no such file'):
    openfold_pt.read_openfold(tmp_path / 'absent.pt')
  with pytest.raises(ValueError, match=r'list\.pt: holds a list, not a state dict'):
    openfold_pt.read_openfold(_save([1, 2], tmp_path / 'list.pt'))
  with pytest.raises(ValueError, match=r"other\.pt: no OpenFold weights found: .*'optimizer'"):
    openfold_pt.read_openfold(_save({'optimizer': {}}, tmp_path / 'other.pt'))


def test_pickled_objects_are_refused_unless_trusted(tmp_path, small_bits):
  """Lightning may pickle hyper-parameters as objects; a weights-only load refuses them."""
  checkpoint = _lightning(small_bits, None)
  checkpoint['hyper_parameters'] = zipfile.ZipInfo('refused.txt')
  path = _save(checkpoint, tmp_path / 'hparams.ckpt')
  with pytest.raises(ValueError, match=r'hparams\.ckpt: holds Python objects besides tensors '
                                       r'\(zipfile\.ZipInfo\).*trusted=True'):
    openfold_pt.read_openfold(path)
  _assert_bit_identical(openfold_pt.read_openfold(path, trusted=True)[0], small_bits)


def _v1(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The same weights under OpenFold v1's key names."""
  renamed = {}
  for key, value in state_dict.items():
    key = key.removeprefix(_V2_TEMPLATE_LEVEL)
    for new, old in _V1_NAMES:
      key = key.replace(new, old)
    renamed[key] = value
  return renamed


def test_v1_key_names_read_as_v2(tmp_path, small_bits):
  v1 = _v1(small_bits)
  assert sum(old != new for old, new in zip(v1, small_bits)) > 100  # the renaming renames
  path = _save(_lightning(v1, None), tmp_path / 'v1.ckpt')
  _assert_bit_identical(openfold_pt.read_openfold(path)[0], small_bits)


def _round_trips(tmp_path: pathlib.Path, flat: dict[str, np.ndarray], name: str, model) -> None:
  """.pt -> jaxfold -> .pt and .npz -> jaxfold -> .pt -> jaxfold -> .npz, byte for byte."""
  source = tmp_path / 'source.pt'
  openfold_pt.write_openfold(flat, source)
  tree, found = formats.load_params(source, model_config=model, finite=False)
  assert found is None
  formats.save_params(tree, tmp_path / 'back.pt', preset=name, model_config=model)
  back, _ = openfold_pt.read_openfold(tmp_path / 'back.pt')
  _assert_bit_identical(dict(sorted(back.items())), dict(sorted(flat.items())))

  formats.save_params(tree, tmp_path / 'first.npz', preset=name)
  del tree, back
  npz_tree, _ = formats.load_params(tmp_path / 'first.npz', finite=False)
  formats.save_params(npz_tree, tmp_path / 'middle.pt', preset=name, model_config=model)
  del npz_tree
  middle, _ = formats.load_params(tmp_path / 'middle.pt', model_config=model, finite=False)
  formats.save_params(middle, tmp_path / 'second.npz', preset=name)
  assert (tmp_path / 'first.npz').read_bytes() == (tmp_path / 'second.npz').read_bytes()

  # v1 names in a Lightning checkpoint ('model.' prefix) give the very same tree.
  _save(_lightning(_v1(flat), None), tmp_path / 'v1.ckpt')
  v1, _ = formats.load_params(tmp_path / 'v1.ckpt', model_config=model, finite=False)
  formats.save_params(v1, tmp_path / 'v1.npz', preset=name)
  assert (tmp_path / 'v1.npz').read_bytes() == (tmp_path / 'first.npz').read_bytes()
  assert _listing(tmp_path) == ['back.pt', 'first.npz', 'middle.pt', 'second.npz', 'source.pt',
                                'v1.ckpt', 'v1.npz']


def test_reduced_model_1_ptm_round_trips_through_jaxfold(tmp_path):
  """Full channels, 2 Evoformer / 1 extra-MSA / 1 template blocks, 2 structure layers."""
  model = reduced(preset('model_1_ptm')).model
  shapes = openfold_keys.openfold_shapes(model)
  _round_trips(tmp_path, _random_bits([{'name': k, 'shape': v} for k, v in shapes.items()]),
               'model_1_ptm', model)


@pytest.mark.slow
def test_full_model_1_ptm_round_trips_through_jaxfold(shared_dir, tmp_path):
  """All 5046 tensors of OpenFold's full-size model_1_ptm, named as its manifest lists them."""
  _round_trips(tmp_path, _random_bits(_manifest(shared_dir, 'model_1_ptm_full')),
               'model_1_ptm', preset('model_1_ptm').model)


def test_a_checkpoint_of_another_preset_names_the_one_it_fits(tmp_path):
  """model_1_ptm's keys (pTM head present) read as model_1: refused, and model_1_ptm named."""
  shapes = openfold_keys.openfold_shapes(reduced(preset('model_1_ptm')).model)
  path = tmp_path / 'ptm.pt'
  openfold_pt.write_openfold({key: np.zeros(shape, np.float32) for key, shape in shapes.items()},
                             path)
  with pytest.raises(alphafold_npz.SchemaError,
                     match=r"ptm\.pt: .* 2 unexpected \(aux_heads\.tm\.linear.*the keys fit "
                           r"preset 'model_1_ptm'"):
    formats.load_params(path, model_config=reduced(preset('model_1')).model)
  with pytest.raises(ValueError, match=r"ptm\.pt: an OpenFold file does not say which model it "
                                       r"is; pass --preset \(its keys fit 'model_1_ptm'\)"):
    formats.load_params(path)
  with pytest.raises(FileExistsError, match=r'ptm\.pt: already exists'):
    formats.save_params({}, path, preset='model_1_ptm')
  assert _listing(tmp_path) == ['ptm.pt']
