"""jaxfold.prediction_outputs: the files of one prediction, from synthetic outputs around a
real structure (101m, sperm whale myoglobin) with padding residues appended."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from jaxfold import prediction_outputs
from jaxfold.common import protein

_NUM_PAD = 5
_NUM_SEQ = 6  # MSA rows of the masked-MSA logits
_EXPECTED_NAMES = {'pdb': 'myo_unrelaxed.pdb', 'cif': 'myo_unrelaxed.cif', 'npz': 'outputs.npz',
                   'json': 'confidence.json', 'png': 'myo_confidence.png'}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def structure(shared_dir) -> protein.Protein:
  """The protein residues of 101m (its waters parse as UNK residues and are left out)."""
  path = shared_dir / 'data' / 'pdb' / '101m.pdb'
  if not path.exists():
    pytest.skip(f'{path} not present')
  prot = protein.from_pdb_string(path.read_text())
  keep = prot.aatype < 20
  return protein.Protein(**{field: getattr(prot, field)[keep] for field in (
      'atom_positions', 'aatype', 'atom_mask', 'residue_index', 'chain_index', 'b_factors')})


def _example(prot: protein.Protein, ptm: bool = True, representations: bool = False,
             seed: int = 0) -> tuple[dict, dict]:
  """(batch, outputs) as the model would give them: the structure's residues followed by
  _NUM_PAD padding residues, which carry random values the writer must drop."""
  rng = np.random.default_rng(seed)
  num_real = len(prot.aatype)
  num_res = num_real + _NUM_PAD

  def padded(real: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.concatenate([real, fill.astype(real.dtype)])

  batch = {
      'aatype': padded(prot.aatype.astype(np.int32), rng.integers(0, 21, _NUM_PAD)),
      'residue_index': padded((prot.residue_index - 1).astype(np.int32),
                              np.arange(_NUM_PAD) + 1000),
      'seq_mask': padded(np.ones(num_real, np.float32), np.zeros(_NUM_PAD)),
  }
  confidence = {'plddt': rng.uniform(20.0, 99.0, num_res),
                'ranking_confidence': np.float32(71.25)}
  outputs = {
      'structure_module': {
          'final_atom_positions': padded(prot.atom_positions, rng.normal(scale=50.0,
                                                                         size=(_NUM_PAD, 37, 3))),
          'final_atom_mask': padded(prot.atom_mask, np.ones((_NUM_PAD, 37))),
          'final_atom14_positions': rng.normal(size=(num_res, 14, 3)),
      },
      'confidence': confidence,
      'predicted_lddt': {'logits': rng.normal(size=(num_res, 50))},
      'distogram': {'logits': rng.normal(size=(num_res, num_res, 64)),
                    'bin_edges': np.linspace(2.3125, 21.6875, 63)},
      'masked_msa': {'logits': rng.normal(size=(_NUM_SEQ, num_res, 23))},
      'experimentally_resolved': {'logits': rng.normal(size=(num_res, 37))},
  }
  if ptm:
    outputs['predicted_aligned_error'] = {'logits': rng.normal(size=(num_res, num_res, 64)),
                                          'breaks': np.linspace(0.0, 31.0, 63)}
    confidence.update(predicted_aligned_error=rng.uniform(0.0, 31.75, (num_res, num_res)),
                      max_predicted_aligned_error=np.float32(31.75), ptm=np.float32(0.8125),
                      aligned_confidence_probs=rng.dirichlet(np.ones(64), (num_res, num_res)))
  if representations:
    outputs['representations'] = {
        'msa_first_row': rng.normal(size=(num_res, 8)),
        'pair': rng.normal(size=(num_res, num_res, 4)),
        'single': rng.normal(size=(num_res, 6)), 'msa': rng.normal(size=(_NUM_SEQ, num_res, 8)),
        'structure_module': rng.normal(size=(num_res, 6))}
  return batch, outputs


def _crop(array: np.ndarray, *axes: int) -> np.ndarray:
  """Drops the trailing padding residues along `axes`."""
  index = [slice(None)] * array.ndim
  for axis in axes:
    index[axis] = slice(0, array.shape[axis] - _NUM_PAD)
  return array[tuple(index)]


def _listing(directory) -> dict[str, bytes]:
  return {entry.name: entry.read_bytes() for entry in directory.iterdir()}


def test_writes_every_file_and_nothing_else(tmp_path, structure):
  batch, outputs = _example(structure)
  output_dir = tmp_path / 'nested' / 'out'
  paths = prediction_outputs.write_prediction(output_dir, 'myo', batch, outputs)
  assert {kind: path.name for kind, path in paths.items()} == _EXPECTED_NAMES
  assert paths == prediction_outputs.output_paths(output_dir, 'myo')
  assert sorted(entry.name for entry in output_dir.iterdir()) == sorted(_EXPECTED_NAMES.values())
  assert [entry.name for entry in (tmp_path / 'nested').iterdir()] == ['out']  # No staging left.


@pytest.mark.parametrize('reader,kind', [(protein.from_pdb_string, 'pdb'),
                                         (protein.from_mmcif_string, 'cif')])
def test_structure_round_trip_has_real_residues_and_plddt(tmp_path, structure, reader, kind):
  batch, outputs = _example(structure)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  written = reader(paths[kind].read_text())
  num_real = len(structure.aatype)
  assert written.aatype.shape == (num_real,)
  np.testing.assert_array_equal(written.aatype, structure.aatype)
  np.testing.assert_array_equal(written.residue_index, batch['residue_index'][:num_real] + 1)
  np.testing.assert_array_equal(written.atom_mask, structure.atom_mask)
  present = structure.atom_mask > 0.5
  np.testing.assert_allclose(written.atom_positions[present],
                             structure.atom_positions[present], atol=5e-4 + 1e-6, rtol=0)
  plddt = np.repeat(outputs['confidence']['plddt'][:num_real, None], 37, axis=1)
  np.testing.assert_allclose(written.b_factors[present], plddt[present], atol=5e-3 + 1e-6,
                             rtol=0)


def test_chain_index_names_pdb_chains(tmp_path, structure):
  batch, outputs = _example(structure, ptm=False)
  num_real = len(structure.aatype)
  batch['chain_index'] = (np.arange(num_real + _NUM_PAD) >= num_real // 2).astype(np.int32)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  written = protein.from_pdb_string(paths['pdb'].read_text())
  np.testing.assert_array_equal(written.chain_index, batch['chain_index'][:num_real])


@pytest.mark.parametrize('ptm', [True, False])
def test_npz_holds_cropped_float32_outputs(tmp_path, structure, ptm):
  batch, outputs = _example(structure, ptm=ptm)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  conf = outputs['confidence']
  expected = {
      'final_atom_positions': _crop(outputs['structure_module']['final_atom_positions'], 0),
      'final_atom_mask': _crop(outputs['structure_module']['final_atom_mask'], 0),
      'plddt': _crop(conf['plddt'], 0),
      'ranking_confidence': conf['ranking_confidence'],
      'distogram/logits': _crop(outputs['distogram']['logits'], 0, 1),
      'distogram/bin_edges': outputs['distogram']['bin_edges'],
      'masked_msa/logits': _crop(outputs['masked_msa']['logits'], 1),
      'experimentally_resolved/logits': _crop(outputs['experimentally_resolved']['logits'], 0),
      'predicted_lddt/logits': _crop(outputs['predicted_lddt']['logits'], 0),
  }
  if ptm:
    expected.update({
        'predicted_aligned_error': _crop(conf['predicted_aligned_error'], 0, 1),
        'max_predicted_aligned_error': conf['max_predicted_aligned_error'],
        'ptm': conf['ptm'],
        'aligned_confidence_probs': _crop(conf['aligned_confidence_probs'], 0, 1),
        'predicted_aligned_error/logits': _crop(outputs['predicted_aligned_error']['logits'], 0, 1),
        'predicted_aligned_error/breaks': outputs['predicted_aligned_error']['breaks'],
    })
  with np.load(paths['npz']) as saved:  # allow_pickle stays False: plain arrays only.
    assert sorted(saved.files) == sorted(expected)
    for key, value in expected.items():
      assert saved[key].dtype == np.float32, key
      assert saved[key].shape == np.shape(value), key
      np.testing.assert_array_equal(saved[key], np.asarray(value, np.float32), err_msg=key)
  with zipfile.ZipFile(paths['npz']) as archive:  # np.savez, not savez_compressed.
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_representations_saved_on_request(tmp_path, structure):
  batch, outputs = _example(structure, representations=True)
  paths = prediction_outputs.write_prediction(tmp_path / 'plain', 'myo', batch, outputs)
  with np.load(paths['npz']) as saved:
    assert not any(key.startswith('representations/') for key in saved.files)

  paths = prediction_outputs.write_prediction(tmp_path / 'reps', 'myo', batch, outputs,
                                              save_representations=True)
  residue_axes = {'msa_first_row': (0,), 'pair': (0, 1), 'single': (0,), 'msa': (1,),
                  'structure_module': (0,)}
  with np.load(paths['npz']) as saved:
    for key, axes in residue_axes.items():
      np.testing.assert_array_equal(
          saved[f'representations/{key}'],
          _crop(outputs['representations'][key], *axes).astype(np.float32), err_msg=key)


def test_unknown_representation_with_padding_is_refused(tmp_path, structure):
  batch, outputs = _example(structure, representations=True)
  outputs['representations']['extra'] = np.zeros((len(batch['aatype']), 3))
  with pytest.raises(ValueError, match=r"\['representations'\]\['extra'\] has unknown residue"):
    prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs,
                                        save_representations=True)
  assert not (tmp_path / 'out').exists()

  # Without padding there is nothing to crop, so it is saved as it is.
  real = slice(0, len(structure.aatype))
  batch = {key: value[real] for key, value in batch.items()}
  batch.pop('seq_mask')
  _, outputs = _example(structure, ptm=False, representations=True)
  outputs = _strip_padding(outputs, len(structure.aatype))
  outputs['representations']['extra'] = np.arange(7.0)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs,
                                              save_representations=True)
  with np.load(paths['npz']) as saved:
    np.testing.assert_array_equal(saved['representations/extra'], np.arange(7.0))


def _strip_padding(outputs: dict, num_real: int) -> dict:
  """The outputs of `_example` (ptm=False) as if the batch had no padding."""
  residue_axes = {('structure_module', 'final_atom_positions'): (0,),
                  ('structure_module', 'final_atom_mask'): (0,),
                  ('structure_module', 'final_atom14_positions'): (0,),
                  ('confidence', 'plddt'): (0,), ('predicted_lddt', 'logits'): (0,),
                  ('distogram', 'logits'): (0, 1), ('masked_msa', 'logits'): (1,),
                  ('experimentally_resolved', 'logits'): (0,),
                  ('representations', 'msa_first_row'): (0,), ('representations', 'pair'): (0, 1),
                  ('representations', 'single'): (0,), ('representations', 'msa'): (1,),
                  ('representations', 'structure_module'): (0,)}
  stripped = {head: dict(values) for head, values in outputs.items()}
  for (head, key), axes in residue_axes.items():
    index = [slice(None)] * stripped[head][key].ndim
    for axis in axes:
      index[axis] = slice(0, num_real)
    stripped[head][key] = stripped[head][key][tuple(index)]
  return stripped


@pytest.mark.parametrize('ptm', [True, False])
def test_confidence_json_matches_arrays(tmp_path, structure, ptm):
  batch, outputs = _example(structure, ptm=ptm)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  summary = json.loads(paths['json'].read_text())
  conf = outputs['confidence']
  plddt = _crop(conf['plddt'], 0).astype(np.float32)
  expected_keys = {'name', 'num_residues', 'mean_plddt', 'plddt', 'ranking_confidence'}
  if ptm:
    expected_keys |= {'ptm', 'max_predicted_aligned_error', 'mean_predicted_aligned_error'}
  assert set(summary) == expected_keys
  assert summary['name'] == 'myo' and summary['num_residues'] == len(structure.aatype)
  assert summary['mean_plddt'] == pytest.approx(float(plddt.mean()), rel=1e-6)
  np.testing.assert_allclose(summary['plddt'], plddt, atol=0.005 + 1e-6, rtol=0)
  assert all(round(value, 2) == value for value in summary['plddt'])
  assert summary['ranking_confidence'] == 71.25
  if ptm:
    assert summary['ptm'] == 0.8125 and summary['max_predicted_aligned_error'] == 31.75
    pae = _crop(conf['predicted_aligned_error'], 0, 1).astype(np.float32)
    assert summary['mean_predicted_aligned_error'] == pytest.approx(float(pae.mean()), rel=1e-6)


def test_png_with_and_without_pae(tmp_path, structure):
  sizes = {}
  for ptm in (True, False):
    batch, outputs = _example(structure, ptm=ptm)
    paths = prediction_outputs.write_prediction(tmp_path / str(ptm), 'myo', batch, outputs)
    data = paths['png'].read_bytes()
    assert data.startswith(_PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
      image.verify()
    with Image.open(io.BytesIO(data)) as image:
      sizes[ptm] = image.size
      # Not a blank canvas: the plots put many distinct colours on it.
      assert len(image.convert('RGB').getcolors(maxcolors=1 << 20)) > 10
  assert sizes[True][0] > sizes[False][0]  # The PAE panel widens the figure.
  assert sizes[True][1] == sizes[False][1]


def test_existing_file_without_overwrite_changes_nothing(tmp_path, structure):
  batch, outputs = _example(structure)
  output_dir = tmp_path / 'out'
  output_dir.mkdir()
  (output_dir / 'confidence.json').write_text('{"earlier": true}')
  (output_dir / 'notes.txt').write_text('kept')
  before = _listing(output_dir)
  with pytest.raises(FileExistsError, match=r'out/confidence\.json already exists'):
    prediction_outputs.write_prediction(output_dir, 'myo', batch, outputs)
  assert _listing(output_dir) == before
  assert [entry.name for entry in tmp_path.iterdir()] == ['out']

  prediction_outputs.write_prediction(output_dir, 'myo', batch, outputs, overwrite=True)
  assert json.loads((output_dir / 'confidence.json').read_text())['name'] == 'myo'
  assert (output_dir / 'notes.txt').read_text() == 'kept'
  assert [entry.name for entry in tmp_path.iterdir()] == ['out']


@pytest.mark.parametrize('exists', [True, False])
def test_failure_while_writing_leaves_nothing(tmp_path, structure, monkeypatch, exists):
  batch, outputs = _example(structure)
  output_dir = tmp_path / 'out'
  if exists:
    output_dir.mkdir()
    (output_dir / 'notes.txt').write_text('kept')

  def failing_png(*args, **kwargs):
    raise RuntimeError('plot failed')

  monkeypatch.setattr(prediction_outputs, '_write_confidence_png', failing_png)
  with pytest.raises(RuntimeError, match='plot failed'):
    prediction_outputs.write_prediction(output_dir, 'myo', batch, outputs)
  assert [entry.name for entry in tmp_path.iterdir()] == (['out'] if exists else [])
  if exists:
    assert _listing(output_dir) == {'notes.txt': b'kept'}


def test_failure_while_moving_removes_moved_files(tmp_path, structure, monkeypatch):
  batch, outputs = _example(structure)
  output_dir = tmp_path / 'out'
  real_replace = os.replace
  calls = []

  def replace_failing_third(source, target):
    calls.append(target)
    if len(calls) == 3:
      raise OSError('disk full')
    real_replace(source, target)

  monkeypatch.setattr(prediction_outputs.os, 'replace', replace_failing_third)
  with pytest.raises(OSError, match='disk full'):
    prediction_outputs.write_prediction(output_dir, 'myo', batch, outputs)
  assert len(calls) == 3
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('change,message', [
    (lambda b, o: b.update(aatype=b['aatype'][None]),
     r"batch\['aatype'\] has shape \(1, \d+\); expected \[N_res\]"),
    (lambda b, o: b.pop('residue_index'), r"batch has no 'residue_index'"),
    (lambda b, o: b.update(residue_index=b['residue_index'][:-1]),
     r"batch\['residue_index'\] has shape \(\d+,\); expected"),
    (lambda b, o: b.update(residue_index=b['residue_index'].astype(np.float32)),
     r"batch\['residue_index'\] has dtype float32; expected integers"),
    (lambda b, o: b.update(seq_mask=b['seq_mask'] * 0.5), r"seq_mask'\] holds values other"),
    (lambda b, o: b.update(seq_mask=b['seq_mask'] * 0), r"seq_mask'\] is all zero"),
    (lambda b, o: o['confidence'].pop('plddt'), r"outputs\['confidence'\]\['plddt'\] is missing"),
    (lambda b, o: o.pop('structure_module'),
     r"outputs\['structure_module'\]\['final_atom_positions'\] is missing"),
    (lambda b, o: o['confidence'].update(plddt=o['confidence']['plddt'][:-1]),
     r"outputs\['confidence'\]\['plddt'\] has shape \(\d+,\); expected \(\d+\) with N_res"),
    (lambda b, o: o['confidence'].update(plddt=o['confidence']['plddt'] / 100 - 0.5),
     r"plddt'\] spans .*; expected values in 0-100"),
    (lambda b, o: o['confidence'].update(ptm=np.float32(np.nan)),
     r"outputs\['confidence'\]\['ptm'\] has non-finite values"),
    (lambda b, o: o['confidence'].update(ranking_confidence=np.ones(1)),
     r"ranking_confidence'\] has shape \(1,\); expected \(\)"),
    (lambda b, o: o['structure_module'].update(
        final_atom_positions=o['structure_module']['final_atom_positions'][:, :14]),
     r"final_atom_positions'\] has shape \(\d+, 14, 3\); expected \(\d+, 37, 3\)"),
    (lambda b, o: o['masked_msa'].update(logits=o['masked_msa']['logits'][:, :-1]),
     r"outputs\['masked_msa'\]\['logits'\] has shape"),
    (lambda b, o: o['distogram'].update(logits=o['distogram']['logits'][0]),
     r"outputs\['distogram'\]\['logits'\] has shape \(\d+, 64\); expected \(\d+, \d+, any\)"),
])
def test_bad_input_raises_before_writing(tmp_path, structure, change, message):
  batch, outputs = _example(structure)
  change(batch, outputs)
  with pytest.raises(ValueError, match=message):
    prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('name', ['', 'my protein', 'a/b', '..'])
def test_bad_name_raises(tmp_path, structure, name):
  batch, outputs = _example(structure, ptm=False)
  with pytest.raises(ValueError, match='cannot be used in file names'):
    prediction_outputs.write_prediction(tmp_path / 'out', name, batch, outputs)
  assert list(tmp_path.iterdir()) == []


def test_representations_requested_but_absent(tmp_path, structure):
  batch, outputs = _example(structure, ptm=False)
  with pytest.raises(ValueError, match="save_representations is set but outputs has no"):
    prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs,
                                        save_representations=True)
  assert list(tmp_path.iterdir()) == []


def test_accepts_jax_arrays_in_bfloat16(tmp_path, structure):
  import jax
  import jax.numpy as jnp

  batch, outputs = _example(structure)
  expected = _crop(outputs['distogram']['logits'], 0, 1)
  outputs = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16)
                         if np.asarray(x).dtype.kind == 'f' else jnp.asarray(x), outputs)
  paths = prediction_outputs.write_prediction(tmp_path / 'out', 'myo', batch, outputs)
  with np.load(paths['npz']) as saved:
    assert saved['distogram/logits'].dtype == np.float32
    np.testing.assert_allclose(saved['distogram/logits'], expected, rtol=1e-2, atol=1e-2)


def test_import_does_not_load_matplotlib():
  code = ('import sys, jaxfold.prediction_outputs; '
          "sys.exit(any(name.split('.')[0] == 'matplotlib' for name in sys.modules))")
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
