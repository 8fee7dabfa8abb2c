"""jaxfold.convert: AlphaFold .npz and jaxfold checkpoints, round trips bit for bit, and errors.

The fast tests use the structure module's 45 tensors (2.0 M parameters) of model_3_ptm's
manifest, filled with random bit patterns (NaNs with payloads, infinities, subnormals
included), so that only a byte-exact conversion passes. The slow test does the whole model.
"""

import json
import os
import pathlib
import zipfile

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxfold.common.errors import JaxfoldError
from jaxfold.convert import alphafold_npz
from jaxfold.convert import checkpoint
from jaxfold.convert import formats

_STRUCTURE_MODULE = 'alphafold/alphafold_iteration/structure_module'


@pytest.fixture(scope='module')
def manifest(shared_dir) -> dict[str, tuple[int, ...]]:
  path = shared_dir / 'fixtures' / 'alphafold' / 'model_3_ptm_manifest.json'
  if not path.exists():
    pytest.skip(f'{path} not present')
  return {key: tuple(shape) for key, shape in json.loads(path.read_text()).items()}


@pytest.fixture(scope='module')
def schema(manifest) -> dict[str, tuple[int, ...]]:
  """The structure module's part of model_3_ptm's schema."""
  return {key: shape for key, shape in manifest.items() if key.startswith(_STRUCTURE_MODULE)}


def _random_bits(schema: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  return {key: rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)
          for key, shape in schema.items()}


@pytest.fixture(scope='module')
def flat(schema) -> dict[str, np.ndarray]:
  return _random_bits(schema)


def _assert_bit_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
  assert sorted(got) == sorted(want)
  for key, array in want.items():
    assert isinstance(got[key], np.ndarray), key
    assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
    assert np.array_equal(got[key].view(np.uint8), array.view(np.uint8)), key


def _files(directory: pathlib.Path) -> list[str]:
  return sorted(os.listdir(directory))


def test_npz_round_trip_is_bit_identical_and_nests_like_haiku(tmp_path, schema, flat):
  source = tmp_path / 'params_model_3_ptm.npz'
  np.savez(source, **flat)  # as DeepMind's files are written
  tree = alphafold_npz.read_npz(source, schema)
  structure_module = tree['alphafold_iteration']['structure_module']
  ipa = structure_module['fold_iteration']['invariant_point_attention']
  np.testing.assert_array_equal(
      ipa['trainable_point_weights'].view(np.uint32),
      flat[f'{_STRUCTURE_MODULE}/fold_iteration/invariant_point_attention//'
           'trainable_point_weights'].view(np.uint32))

  written = tmp_path / 'written.npz'
  alphafold_npz.write_npz(tree, written)
  with np.load(written, allow_pickle=False) as npz:
    assert npz.files == sorted(flat)  # written in sorted key order
    _assert_bit_identical({key: npz[key] for key in npz.files}, flat)

  # Fixed member timestamps (np.savez stamps the time of writing): reading and writing again
  # gives the very same bytes.
  with zipfile.ZipFile(written) as archive:
    assert {member.date_time for member in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
  again = tmp_path / 'again.npz'
  alphafold_npz.write_npz(alphafold_npz.read_npz(written, schema), again)
  assert again.read_bytes() == written.read_bytes()


def test_flat_keys_and_unflatten_are_inverse(flat):
  tree = alphafold_npz.unflatten(flat)
  assert list(tree) == ['alphafold_iteration']
  assert alphafold_npz.flat_keys(tree) == dict(sorted(flat.items()))


@pytest.mark.parametrize('key', [
    'alphafold/alphafold_iteration/distogram_head/half_logits/weights',  # no '//'
    'haiku/alphafold_iteration/distogram_head//weights',  # not under 'alphafold'
    'alphafold/a//b//weights',
    'alphafold/a//',
    'alphafold//a/weights',
    'alphafold/a//weights/more',
])
def test_malformed_keys_are_rejected(tmp_path, key):
  with pytest.raises(ValueError, match='not AlphaFold parameter names') as error:
    alphafold_npz.unflatten({key: np.zeros(1, np.float32)})
  assert repr(key) in str(error.value)
  path = tmp_path / 'bad.npz'
  np.savez(path, **{key: np.zeros(1, np.float32)})
  with pytest.raises(ValueError, match=f'{path}: 1 key') as error:
    alphafold_npz.read_npz(path)


def test_schema_error_lists_every_kind_of_mismatch_in_one_line(tmp_path, schema, flat):
  keys = sorted(flat)
  damaged = {key: value for key, value in flat.items() if key not in keys[:7]}
  misshaped = keys[10]
  damaged[misshaped] = np.zeros((3, 4), np.float32)
  damaged['alphafold/alphafold_iteration/structure_module/extra//weights'] = np.zeros(
      2, np.float32)
  path = tmp_path / 'damaged.npz'
  np.savez(path, **damaged)
  with pytest.raises(alphafold_npz.SchemaError) as error:
    alphafold_npz.read_npz(path, schema, schema_name="preset 'model_3_ptm'")
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f"{path}: does not match preset 'model_3_ptm' (45 tensors): ")
  assert '7 missing (' in message and '... 2 more' in message
  assert all(key in message for key in keys[:5]) and keys[6] not in message
  assert '1 unexpected (alphafold/alphafold_iteration/structure_module/extra//weights)' in message
  assert f'1 misshaped ({misshaped}: got (3, 4), expected {schema[misshaped]})' in message

  # The same message from a checkpoint, which names its directory.
  directory = tmp_path / 'ckpt'
  checkpoint.save_checkpoint(directory, alphafold_npz.unflatten(damaged), preset='model_3_ptm')
  with pytest.raises(alphafold_npz.SchemaError) as from_checkpoint:
    checkpoint.read_checkpoint(directory, schema, schema_name="preset 'model_3_ptm'")
  assert str(from_checkpoint.value) == message.replace(str(path), str(directory.absolute()))


def test_schema_is_checked_before_any_array_is_read(tmp_path, schema, flat):
  path = tmp_path / 'params.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(flat), path)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF  # damage some array's data, not the headers
  path.write_bytes(bytes(data))
  wrong = dict(schema, **{'alphafold/alphafold_iteration/structure_module/extra//w': (1,)})
  with pytest.raises(alphafold_npz.SchemaError, match='1 missing'):
    alphafold_npz.read_npz(path, wrong)
  with pytest.raises(ValueError, match=r'cannot read member .*Bad CRC-32'):
    alphafold_npz.read_npz(path, schema)


def test_dtypes_are_checked_and_never_cast(tmp_path, flat):
  key = sorted(flat)[0]
  path = tmp_path / 'float64.npz'
  np.savez(path, **dict(flat, **{key: flat[key].astype(np.float64)}))
  with pytest.raises(alphafold_npz.SchemaError,
                     match=f'1 with a dtype other than float32/float16/bfloat16 \\({key}: float64'):
    alphafold_npz.read_npz(path)

  half = {name: value.view(np.uint32).astype(np.uint16).view(np.float16)
          for name, value in flat.items()}
  alphafold_npz.write_npz(alphafold_npz.unflatten(half), tmp_path / 'half.npz')
  _assert_bit_identical(alphafold_npz.flat_keys(alphafold_npz.read_npz(tmp_path / 'half.npz')),
                        half)
  bfloat16 = alphafold_npz.unflatten({key: jnp.ones(3, jnp.bfloat16)})
  with pytest.raises(ValueError, match='bfloat16, which an .npz cannot hold'):
    alphafold_npz.write_npz(bfloat16, tmp_path / 'bf16.npz')
  assert not (tmp_path / 'bf16.npz').exists()


def test_truncated_damaged_and_foreign_files_name_the_file(tmp_path, flat):
  whole = tmp_path / 'whole.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(flat), whole)
  half = tmp_path / 'half.npz'
  half.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
  with pytest.raises(ValueError, match=f'^{half}: not a readable .npz file'):
    alphafold_npz.read_npz(half)
  text = tmp_path / 'text.npz'
  text.write_text('not a zip archive')
  with pytest.raises(ValueError, match=f'^{text}: not a readable .npz file'):
    alphafold_npz.read_npz(text)
  with pytest.raises(ValueError, match='^params.npz: not a readable'):
    alphafold_npz.read_npz(text, source_label='params.npz')
  with pytest.raises(ValueError, match='is a directory'):
    alphafold_npz.read_npz(tmp_path)


def test_non_finite_weights_are_refused_naming_the_file_and_first_key(tmp_path, flat):
  finite = {key: np.nan_to_num(value, nan=0.5, posinf=1.0, neginf=-1.0)
            for key, value in flat.items()}
  keys = sorted(finite)
  finite[keys[3]] = finite[keys[3]].copy()
  finite[keys[3]].flat[[0, 5]] = [np.nan, -np.inf]
  finite[keys[7]] = np.full_like(finite[keys[7]], np.inf)  # later: the first is named
  path = tmp_path / 'params.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(finite), path)
  for target in (path, tmp_path / 'ckpt'):
    if target.suffix != '.npz':
      formats.save_params(alphafold_npz.unflatten(finite), target, preset='model_3_ptm')
    with pytest.raises(JaxfoldError, match=rf'^{target}: parameter {keys[3]} holds 2 non-finite'):
      formats.load_params(target)
    params, _ = formats.load_params(target, finite=False)
    _assert_bit_identical(alphafold_npz.flat_keys(params), finite)
  assert alphafold_npz.first_non_finite(alphafold_npz.unflatten(flat)) is not None
  del finite[keys[3]], finite[keys[7]]
  assert alphafold_npz.first_non_finite(alphafold_npz.unflatten(finite)) is None


def test_missing_inputs_raise_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError, match=f'{tmp_path}/absent.npz: no such file'):
    alphafold_npz.read_npz(tmp_path / 'absent.npz')
  with pytest.raises(FileNotFoundError, match='no such jaxfold checkpoint directory'):
    checkpoint.read_checkpoint(tmp_path / 'absent')
  with pytest.raises(FileNotFoundError, match='absent: no such file or directory'):
    formats.load_params(tmp_path / 'absent')


def test_failed_npz_write_leaves_nothing_behind(tmp_path, monkeypatch, flat):
  tree = alphafold_npz.unflatten(flat)
  write_array = np.lib.format.write_array
  calls = []

  def fail_on_third_array(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise OSError('disk full')
    return write_array(*args, **kwargs)

  monkeypatch.setattr(np.lib.format, 'write_array', fail_on_third_array)
  with pytest.raises(OSError, match='disk full'):
    alphafold_npz.write_npz(tree, tmp_path / 'new.npz')
  assert _files(tmp_path) == []

  # An existing file keeps its contents when its replacement fails.
  existing = tmp_path / 'existing.npz'
  existing.write_bytes(b'old contents')
  calls.clear()
  with pytest.raises(OSError, match='disk full'):
    alphafold_npz.write_npz(tree, existing)
  assert _files(tmp_path) == ['existing.npz']
  assert existing.read_bytes() == b'old contents'


def test_checkpoint_round_trip_is_bit_identical_and_keeps_the_preset(tmp_path, schema, flat):
  key = sorted(flat)[0]
  tree = alphafold_npz.unflatten(flat)
  tree['alphafold_iteration']['structure_module']['bf16'] = jnp.asarray(
      flat[key].ravel()[:8]).astype(jnp.bfloat16)  # a jax array, and a dtype .npz cannot hold
  path = tmp_path / 'ckpt'
  checkpoint.save_checkpoint(path, tree, preset='model_3_ptm', metadata={'source': 'test'})
  assert checkpoint.is_checkpoint(path) and _files(tmp_path) == ['ckpt']

  params, document = checkpoint.read_checkpoint(path)
  assert document['preset'] == 'model_3_ptm' and document['metadata'] == {'source': 'test'}
  assert document['tensors'] == 46
  want = dict(flat, **{f'{_STRUCTURE_MODULE}//bf16': np.asarray(
      tree['alphafold_iteration']['structure_module']['bf16'])})
  _assert_bit_identical(alphafold_npz.flat_keys(params), want)
  assert params['alphafold_iteration']['structure_module']['bf16'].dtype == jnp.bfloat16

  del tree['alphafold_iteration']['structure_module']['bf16']
  checkpoint.save_checkpoint(path, tree, preset='model_3_ptm', overwrite=True)
  params, _ = checkpoint.read_checkpoint(path, schema)
  _assert_bit_identical(alphafold_npz.flat_keys(params), flat)


def test_existing_paths_are_not_overwritten(tmp_path, flat):
  tree = alphafold_npz.unflatten(flat)
  path = tmp_path / 'ckpt'
  checkpoint.save_checkpoint(path, tree, preset='model_3_ptm')
  other = alphafold_npz.unflatten(_random_bits({key: value.shape for key, value in flat.items()},
                                               seed=1))
  with pytest.raises(FileExistsError, match='pass overwrite=True'):
    checkpoint.save_checkpoint(path, other, preset='model_1')
  params, document = checkpoint.read_checkpoint(path)
  assert document['preset'] == 'model_3_ptm'
  _assert_bit_identical(alphafold_npz.flat_keys(params), flat)

  plain = tmp_path / 'results'
  plain.mkdir()
  (plain / 'keep.txt').write_text('user data')
  with pytest.raises(FileExistsError, match='not a jaxfold checkpoint'):
    checkpoint.save_checkpoint(plain, tree, preset='model_3_ptm', overwrite=True)
  assert _files(plain) == ['keep.txt']
  assert _files(tmp_path) == ['ckpt', 'results']


@pytest.mark.parametrize('failure', ['orbax_save', 'final_rename'])
def test_failed_checkpoint_write_leaves_nothing_behind(tmp_path, monkeypatch, flat, failure):
  def fail(*args, **kwargs):
    raise OSError(f'{failure} failed')

  if failure == 'orbax_save':
    monkeypatch.setattr(ocp.StandardCheckpointer, 'save', fail)
  else:  # after orbax and the JSON have been written
    monkeypatch.setattr(checkpoint, '_move_into_place', fail)
  with pytest.raises(OSError, match=f'{failure} failed'):
    checkpoint.save_checkpoint(tmp_path / 'ckpt', alphafold_npz.unflatten(flat),
                               preset='model_3_ptm')
  assert _files(tmp_path) == []


# After a failed read, tensorstore's pending callbacks find orbax's event loop closed and
# print a traceback from a background thread; the read itself raised as it should.
def test_damaged_or_foreign_checkpoint_directories_are_named(tmp_path, flat):
  plain = tmp_path / 'plain'
  plain.mkdir()
  with pytest.raises(ValueError, match=f'{plain}: not a jaxfold checkpoint'):
    checkpoint.read_checkpoint(plain)
  assert not checkpoint.is_checkpoint(plain)

  path = tmp_path / 'ckpt'
  checkpoint.save_checkpoint(path, alphafold_npz.unflatten(flat), preset='model_3_ptm')
  (path / checkpoint.PARAMS_DIR / 'manifest.ocdbt').unlink()
  with pytest.raises(ValueError, match=f'{path}: damaged jaxfold checkpoint'):
    checkpoint.read_checkpoint(path)

  newer = tmp_path / 'newer'
  checkpoint.save_checkpoint(newer, alphafold_npz.unflatten(flat), preset='model_3_ptm')
  document = json.loads((newer / checkpoint.METADATA_FILE).read_text())
  (newer / checkpoint.METADATA_FILE).write_text(json.dumps(dict(document, version=2)))
  with pytest.raises(ValueError, match='version 2; this jaxfold reads versions 1..1'):
    checkpoint.read_checkpoint(newer)


def test_formats_dispatch_on_the_path(tmp_path, schema, flat):
  tree = alphafold_npz.unflatten(flat)
  formats.save_params(tree, tmp_path / 'params.npz', preset='model_3_ptm')
  formats.save_params(tree, tmp_path / 'ckpt', preset='model_3_ptm')
  assert formats.checkpoint_preset(tmp_path / 'ckpt') == 'model_3_ptm'
  with pytest.raises(ValueError, match='is a file, not a jaxfold checkpoint directory'):
    formats.checkpoint_preset(tmp_path / 'params.npz')
  for name, preset in (('params.npz', None), ('ckpt', 'model_3_ptm')):
    params, found = formats.load_params(tmp_path / name, schema, finite=False)
    assert found == preset
    _assert_bit_identical(alphafold_npz.flat_keys(params), flat)

  with pytest.raises(FileExistsError, match='params.npz: already exists'):
    formats.save_params(tree, tmp_path / 'params.npz', preset='model_3_ptm')
  formats.save_params(tree, tmp_path / 'params.npz', preset='model_3_ptm', overwrite=True)
  # An OpenFold .pt holds a whole model (tests/test_openfold_pt.py): this part of one is
  # refused, listing what is missing, before anything is written.
  pytest.importorskip('torch')
  with pytest.raises(alphafold_npz.SchemaError, match='222 missing'):
    formats.save_params(tree, tmp_path / 'model.pt', preset='model_3_ptm')
  assert not (tmp_path / 'model.pt').exists()
  (tmp_path / 'broken.pt').write_bytes(b'\x80')
  with pytest.raises(ValueError, match='broken.pt: not a readable PyTorch file'):
    formats.load_params(tmp_path / 'broken.pt')


@pytest.mark.slow
def test_full_model_round_trips_through_both_formats(tmp_path, manifest):
  """All 267 tensors (92.9 M parameters, 372 MB) of model_3_ptm, through .npz and orbax."""
  flat = _random_bits(manifest)
  source = tmp_path / 'params_model_3_ptm.npz'
  np.savez(source, **flat)
  tree = alphafold_npz.read_npz(source, manifest)
  alphafold_npz.write_npz(tree, tmp_path / 'written.npz')
  with np.load(tmp_path / 'written.npz', allow_pickle=False) as npz:
    _assert_bit_identical({key: npz[key] for key in npz.files}, flat)
  del tree
  formats.save_params(
      formats.load_params(tmp_path / 'written.npz', manifest, finite=False)[0],
      tmp_path / 'ckpt', preset='model_3_ptm')
  params, preset = formats.load_params(tmp_path / 'ckpt', manifest, finite=False)
  assert preset == 'model_3_ptm'
  _assert_bit_identical(alphafold_npz.flat_keys(params), flat)
