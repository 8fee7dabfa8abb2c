"""jaxfold.data.ground_truth: label features of a real structure (PDB 2q2k), checked by atom name.

The references here are independent of the code under test: atoms looked up by name, the
textbook dihedral formula, the symmetric atom pairs of Suppl. Table 3 written out, and the
features of the same structure with those atom names swapped.
"""

import numpy as np
import pytest

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.data import ground_truth

# Suppl. Table 3: the atom names a 180-degree side-chain flip exchanges. LEU, VAL and ARG are
# symmetric too but AlphaFold does not rename them.
_SWAPS = {'ASP': [('OD1', 'OD2')], 'GLU': [('OE1', 'OE2')],
          'PHE': [('CD1', 'CD2'), ('CE1', 'CE2')], 'TYR': [('CD1', 'CD2'), ('CE1', 'CE2')]}
_NOT_RENAMED = ('LEU', 'VAL', 'ARG')


@pytest.fixture(scope='module')
def chain_a(shared_dir) -> protein.Protein:
  path = shared_dir / 'data' / 'mmcif' / '2q2k.cif'
  if not path.exists():
    pytest.skip(f'{path} not present')
  return protein.from_mmcif_string(path.read_text(), 'A')


@pytest.fixture(scope='module')
def labels(chain_a) -> dict[str, np.ndarray]:
  return ground_truth.from_protein(chain_a, 3.0, source='2q2k.cif chain A')


def _slot14(resname: str, atom: str) -> int:
  return rc.restype_name_to_atom14_names[resname].index(atom)


def _residues_named(chain: protein.Protein, resname: str) -> np.ndarray:
  return np.flatnonzero(chain.aatype == rc.resname_to_idx[resname])


def test_shapes_dtypes_and_finite(chain_a, labels):
  n = len(chain_a.aatype)
  shapes = {
      'all_atom_positions': (n, 37, 3), 'all_atom_mask': (n, 37),
      'atom14_gt_positions': (n, 14, 3), 'atom14_gt_exists': (n, 14),
      'atom14_alt_gt_positions': (n, 14, 3), 'atom14_alt_gt_exists': (n, 14),
      'atom14_atom_is_ambiguous': (n, 14), 'atom14_atom_exists': (n, 14),
      'residx_atom14_to_atom37': (n, 14), 'residx_atom37_to_atom14': (n, 37),
      'atom37_atom_exists': (n, 37),
      'rigidgroups_gt_frames': (n, 8, 12), 'rigidgroups_gt_exists': (n, 8),
      'rigidgroups_group_exists': (n, 8), 'rigidgroups_group_is_ambiguous': (n, 8),
      'rigidgroups_alt_gt_frames': (n, 8, 12),
      'backbone_affine_tensor': (n, 7), 'backbone_affine_mask': (n,),
      'chi_angles_sin_cos': (n, 4, 2), 'chi_angles': (n, 4), 'chi_mask': (n, 4),
      'pseudo_beta': (n, 3), 'pseudo_beta_mask': (n,), 'resolution': (),
  }
  assert {k: v.shape for k, v in labels.items()} == shapes
  for key, value in labels.items():
    assert isinstance(value, np.ndarray), key
    assert value.dtype == (np.int32 if key.startswith('residx_') else np.float32), key
    assert np.isfinite(value).all(), key
  assert labels['resolution'] == np.float32(3.0)
  np.testing.assert_array_equal(labels['all_atom_positions'], chain_a.atom_positions)


def test_atom14_positions_by_name(chain_a, labels):
  for i, restype in enumerate(chain_a.aatype):
    resname = rc.resnames[restype]
    for slot, atom in enumerate(rc.restype_name_to_atom14_names[resname]):
      if not atom:
        assert labels['atom14_atom_exists'][i, slot] == 0
        continue
      assert labels['residx_atom14_to_atom37'][i, slot] == rc.atom_order[atom]
      assert labels['atom14_gt_exists'][i, slot] == chain_a.atom_mask[i, rc.atom_order[atom]]
      np.testing.assert_array_equal(labels['atom14_gt_positions'][i, slot],
                                    chain_a.atom_positions[i, rc.atom_order[atom]])


def test_symmetric_atoms_swapped_in_alt_truth(chain_a, labels):
  """ASP, GLU, PHE, TYR: the alternative truth holds each named atom's partner; every other
  atom, and every atom of LEU, VAL, ARG, is unchanged and not ambiguous."""
  expected_alt = labels['atom14_gt_positions'].copy()
  expected_ambiguous = np.zeros_like(labels['atom14_atom_is_ambiguous'])
  for resname, pairs in _SWAPS.items():
    residues = _residues_named(chain_a, resname)
    assert residues.size, f'2q2k chain A has no {resname}'
    for a, b in pairs:
      for x, y in ((a, b), (b, a)):
        expected_alt[residues, _slot14(resname, x)] = (
            chain_a.atom_positions[residues, rc.atom_order[y]])
        expected_ambiguous[residues, _slot14(resname, x)] = 1
  np.testing.assert_array_equal(labels['atom14_alt_gt_positions'], expected_alt)
  np.testing.assert_array_equal(labels['atom14_atom_is_ambiguous'], expected_ambiguous)
  for resname in _NOT_RENAMED:
    residues = _residues_named(chain_a, resname)
    assert residues.size, f'2q2k chain A has no {resname}'
    assert not labels['rigidgroups_group_is_ambiguous'][residues].any()


def test_alt_truth_is_the_truth_of_the_swapped_names(chain_a, labels):
  """Renaming the symmetric atoms in the coordinates turns the truth into the alternative
  truth: atom14 positions exactly; the last chi group's frame up to the side chain's
  deviation from planarity; that chi angle shifted by pi."""
  positions = chain_a.atom_positions.copy()
  for resname, pairs in _SWAPS.items():
    residues = _residues_named(chain_a, resname)
    for a, b in pairs:
      ia, ib = rc.atom_order[a], rc.atom_order[b]
      positions[residues, ia], positions[residues, ib] = (positions[residues, ib],
                                                          positions[residues, ia].copy())
  swapped = ground_truth.ground_truth_features(chain_a.aatype, positions, chain_a.atom_mask, 3.0)
  np.testing.assert_array_equal(swapped['atom14_gt_positions'], labels['atom14_alt_gt_positions'])
  np.testing.assert_array_equal(swapped['atom14_alt_gt_positions'], labels['atom14_gt_positions'])

  ambiguous = labels['rigidgroups_group_is_ambiguous'] > 0
  assert ambiguous.sum() == sum(_residues_named(chain_a, r).size for r in _SWAPS)
  np.testing.assert_allclose(swapped['rigidgroups_gt_frames'][ambiguous],  # measured 0.04
                             labels['rigidgroups_alt_gt_frames'][ambiguous], atol=0.1)
  np.testing.assert_array_equal(labels['rigidgroups_alt_gt_frames'][~ambiguous],
                                labels['rigidgroups_gt_frames'][~ambiguous])
  # The ambiguous group's frame differs from the original by a half turn about x.
  assert (np.abs(labels['rigidgroups_alt_gt_frames'][ambiguous]
                 - labels['rigidgroups_gt_frames'][ambiguous]).max(axis=-1) > 0.5).all()

  chi = ambiguous[:, 4:]  # an ambiguous group 4 + k is rotated by chi k
  shift = np.angle(np.exp(1j * (swapped['chi_angles'][chi] - labels['chi_angles'][chi])))
  np.testing.assert_allclose(np.abs(shift), np.pi, atol=0.1)  # measured 0.05


def _dihedral(p0, p1, p2, p3):
  """Textbook dihedral angle p0-p1-p2-p3 in radians, [..., 3] points -> [...]."""
  b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
  b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
  v = b0 - np.sum(b0 * b1, -1, keepdims=True) * b1
  w = b2 - np.sum(b2 * b1, -1, keepdims=True) * b1
  return np.arctan2(np.sum(np.cross(b1, v) * w, -1), np.sum(v * w, -1))


def test_chi_angles_are_dihedrals(chain_a, labels):
  checked = 0
  for i, restype in enumerate(chain_a.aatype):
    quads = rc.chi_angles_atoms[rc.resnames[restype]] if restype < rc.restype_num else []
    np.testing.assert_array_equal(labels['chi_mask'][i, len(quads):], 0)
    for k, quad in enumerate(quads):
      idx = [rc.atom_order[a] for a in quad]
      assert labels['chi_mask'][i, k] == chain_a.atom_mask[i, idx].min()
      if labels['chi_mask'][i, k]:
        expected = _dihedral(*chain_a.atom_positions[i, idx].astype(np.float64))
        assert abs(np.angle(np.exp(1j * (labels['chi_angles'][i, k] - expected)))) < 1e-4
        np.testing.assert_allclose(labels['chi_angles_sin_cos'][i, k],
                                   [np.sin(expected), np.cos(expected)], atol=1e-5)
        checked += 1
  assert checked > 50


def _quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
  """[..., 4] unit quaternion (w, x, y, z) -> [..., 3, 3]."""
  w, x, y, z = np.moveaxis(q, -1, 0)
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
  ], -2)


def test_backbone_frame(chain_a, labels):
  """Origin at CA, x axis towards C, N in the xy-plane on the +y side (Suppl. Alg. 21); the
  12-vector and the 7-vector hold the same frame."""
  assert labels['backbone_affine_mask'].all()
  ca, c, n = (chain_a.atom_positions[:, rc.atom_order[a]] for a in ('CA', 'C', 'N'))
  frames = labels['rigidgroups_gt_frames'][:, 0]
  rotation, translation = frames[:, :9].reshape(-1, 3, 3), frames[:, 9:]
  np.testing.assert_allclose(translation, ca, atol=1e-5)
  x_axis = (c - ca) / np.linalg.norm(c - ca, axis=-1, keepdims=True)
  np.testing.assert_allclose(rotation[:, :, 0], x_axis, atol=1e-5)
  local_n = np.einsum('nji,nj->ni', rotation, n - ca)
  np.testing.assert_allclose(local_n[:, 2], 0, atol=1e-4)
  assert (local_n[:, 1] > 0).all()

  quaternion = labels['backbone_affine_tensor'][:, :4]
  np.testing.assert_allclose(np.linalg.norm(quaternion, axis=-1), 1, atol=1e-5)
  np.testing.assert_allclose(_quaternion_to_rotation(quaternion), rotation, atol=1e-5)
  np.testing.assert_allclose(labels['backbone_affine_tensor'][:, 4:], ca, atol=1e-5)


def test_pseudo_beta(chain_a, labels):
  is_gly = chain_a.aatype == rc.restype_order['G']
  assert is_gly.any() and not is_gly.all()
  atom = np.where(is_gly, rc.atom_order['CA'], rc.atom_order['CB'])
  rows = np.arange(len(atom))
  np.testing.assert_array_equal(labels['pseudo_beta'], chain_a.atom_positions[rows, atom])
  np.testing.assert_array_equal(labels['pseudo_beta_mask'], chain_a.atom_mask[rows, atom])


def test_missing_residues_and_atoms(chain_a, labels):
  """Residues without coordinates (as in SEQRES) and unresolved atoms: labels stay finite,
  their masks are 0, and the other residues' labels do not change."""
  n = len(chain_a.aatype)
  insert_at = np.asarray([0, n // 2, n])  # before the first, in the middle, after the last
  missing_types = [rc.resname_to_idx[r] for r in ('ASP', 'GLY', 'TYR')]
  aatype = np.insert(chain_a.aatype, insert_at, missing_types)
  positions = np.insert(chain_a.atom_positions, insert_at, 0.0, axis=0)
  mask = np.insert(chain_a.atom_mask, insert_at, 0.0, axis=0)
  missing = insert_at + np.arange(len(insert_at))
  kept = np.setdiff1d(np.arange(len(aatype)), missing)

  asp = np.flatnonzero(aatype == rc.resname_to_idx['ASP'])[-1]
  phe = np.flatnonzero(aatype == rc.resname_to_idx['PHE'])[0]
  leu = np.flatnonzero(aatype == rc.resname_to_idx['LEU'])[0]
  for residue, atom in ((asp, 'OD1'), (phe, 'CG'), (leu, 'CB')):
    mask[residue, rc.atom_order[atom]] = 0.0
    positions[residue, rc.atom_order[atom]] = 0.0

  gappy = ground_truth.ground_truth_features(aatype, positions, mask, 3.0)
  for key, value in gappy.items():
    assert np.isfinite(value).all(), key
  for key in ('atom14_gt_exists', 'atom14_alt_gt_exists', 'rigidgroups_gt_exists',
              'backbone_affine_mask', 'chi_mask', 'pseudo_beta_mask', 'all_atom_mask'):
    assert not gappy[key][missing].any(), key
  # What exists depends on the residue type alone.
  np.testing.assert_array_equal(gappy['atom14_atom_exists'][missing],
                                rc.restype_atom14_mask[missing_types])

  # OD1 unresolved: the truth lacks OD1, the alternative truth lacks it under the name OD2.
  assert gappy['atom14_gt_exists'][asp, _slot14('ASP', 'OD1')] == 0
  assert gappy['atom14_alt_gt_exists'][asp, _slot14('ASP', 'OD2')] == 0
  assert gappy['atom14_alt_gt_exists'][asp, _slot14('ASP', 'OD1')] == 1
  np.testing.assert_array_equal(gappy['atom14_alt_gt_positions'][asp, _slot14('ASP', 'OD1')],
                                positions[asp, rc.atom_order['OD2']])
  assert gappy['chi_mask'][asp].tolist() == [1, 0, 0, 0]
  # CG unresolved: chi1 and chi2 and their groups are gone, the backbone is not.
  assert gappy['chi_mask'][phe].tolist() == [0, 0, 0, 0]
  assert gappy['rigidgroups_gt_exists'][phe].tolist() == [1, 0, 0, 1, 0, 0, 0, 0]
  # CB unresolved: no pseudo-beta, although CA is there.
  assert gappy['pseudo_beta_mask'][leu] == 0 and gappy['all_atom_mask'][leu, 1] == 1

  changed = [asp, phe, leu]
  untouched = np.setdiff1d(kept, changed)
  original = np.setdiff1d(np.arange(n), [r - np.sum(missing < r) for r in changed])
  for key in labels:
    if key != 'resolution':
      np.testing.assert_allclose(gappy[key][untouched], labels[key][original], atol=1e-5,
                                 err_msg=key)


def test_from_protein_matches_arrays(chain_a, labels):
  direct = ground_truth.ground_truth_features(chain_a.aatype, chain_a.atom_positions,
                                              chain_a.atom_mask, 3.0)
  assert direct.keys() == labels.keys()
  for key in labels:
    np.testing.assert_array_equal(direct[key], labels[key], err_msg=key)


def test_labels_do_not_depend_on_chain_length(chain_a, labels):
  """Every label is per residue: the chain twice over (another padded size) repeats them."""
  twice = ground_truth.ground_truth_features(
      np.tile(chain_a.aatype, 2), np.tile(chain_a.atom_positions, [2, 1, 1]),
      np.tile(chain_a.atom_mask, [2, 1]), 3.0)
  n = len(chain_a.aatype)
  for key in labels:
    if key != 'resolution':
      for copy in (slice(0, n), slice(n, 2 * n)):
        np.testing.assert_allclose(twice[key][copy], labels[key], atol=1e-5, err_msg=key)


@pytest.mark.parametrize('change, key', [
    (lambda a, p, m, r: (a[:, None], p, m, r), 'aatype'),
    (lambda a, p, m, r: (a + 21, p, m, r), 'aatype'),
    (lambda a, p, m, r: (a.astype(np.float32), p, m, r), 'aatype'),
    (lambda a, p, m, r: (a, p[:, :14], m, r), 'all_atom_positions'),
    (lambda a, p, m, r: (a, np.where(m[..., None] > 0, np.nan, p), m, r), 'all_atom_positions'),
    (lambda a, p, m, r: (a, p, m[:-1], r), 'all_atom_mask'),
    (lambda a, p, m, r: (a, p, m * 0.5, r), 'all_atom_mask'),
    (lambda a, p, m, r: (a, p, m, -1.0), 'resolution'),
    (lambda a, p, m, r: (a, p, m, 'high'), 'resolution'),
])
def test_bad_input_raises(chain_a, change, key):
  args = change(chain_a.aatype, chain_a.atom_positions, chain_a.atom_mask, 3.0)
  with pytest.raises(ground_truth.GroundTruthError, match=f'^2q2k.cif: {key}') as error:
    ground_truth.ground_truth_features(*args, source='2q2k.cif')
  assert '\n' not in str(error.value)
