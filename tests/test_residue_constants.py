"""jaxfold.common.residue_constants: equal to AlphaFold's tables, and chemically sane."""

import subprocess
import sys

import numpy as np
import pytest

from jaxfold.common import residue_constants as rc


def _alphafold_modules():
  pytest.importorskip('alphafold')
  pytest.importorskip('jax')
  from alphafold.common import residue_constants as af_rc
  from alphafold.model import all_atom, all_atom_multimer
  return af_rc, all_atom, all_atom_multimer


def _as_plain(value):
  """Lists and tuples compare as lists, so a tuple-of-tuples fact equals AlphaFold's lists."""
  if isinstance(value, dict):
    return {k: _as_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_as_plain(v) for v in value]
  return value


def _assert_equal(ours, theirs, name):
  if isinstance(theirs, np.ndarray):
    assert isinstance(ours, np.ndarray), name
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    assert ours.dtype == theirs.dtype, (name, ours.dtype, theirs.dtype)
    if np.issubdtype(theirs.dtype, np.floating):
      np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6, err_msg=name)
    else:
      np.testing.assert_array_equal(ours, theirs, err_msg=name)
  else:
    assert _as_plain(ours) == _as_plain(theirs), name


# Names in AlphaFold's module that are not tables: imports, helpers, type aliases, and the
# loop variables its module-level chi_groups_for_atom loop leaves behind.
_NOT_TABLES = {'atom', 'atom_i', 'chi_angle_atoms_for_res', 'chi_group', 'chi_group_i', 'res_name',
               'Final', 'List', 'Mapping', 'Tuple', 'collections', 'functools', 'os', 'np',
               'tree', 'Bond', 'BondAngle', 'load_stereo_chemical_props', 'sequence_to_onehot',
               'chi_angle_atom', 'atom_id_to_type', 'make_atom14_dists_bounds',
               'stereo_chemical_props_path'}


def test_every_alphafold_table_is_equal():
  af_rc, _, _ = _alphafold_modules()
  names = [n for n in dir(af_rc) if not n.startswith('_') and n not in _NOT_TABLES]
  missing = [n for n in names if not hasattr(rc, n)]
  assert not missing, f'tables AlphaFold has and we lack: {missing}'
  for name in names:
    _assert_equal(getattr(rc, name), getattr(af_rc, name), name)
  # Spot-check that the comparison above covered the big ones.
  assert {'rigid_group_atom_positions', 'restype_rigid_group_default_frame',
          'chi_atom_1_one_hot', 'chi_angles_atom_indices', 'STANDARD_ATOM_MASK',
          'HHBLITS_AA_TO_ID', 'MAP_HHBLITS_AATYPE_TO_OUR_AATYPE'} <= set(names)


def test_every_alphafold_function_is_equal():
  af_rc, _, _ = _alphafold_modules()
  for index in range(4):
    _assert_equal(rc.chi_angle_atom(index), af_rc.chi_angle_atom(index), f'chi_angle_atom({index})')
  for kwargs in ({}, {'overlap_tolerance': 1.0, 'bond_length_tolerance_factor': 12}):
    ours, theirs = rc.make_atom14_dists_bounds(**kwargs), af_rc.make_atom14_dists_bounds(**kwargs)
    assert ours.keys() == theirs.keys()
    for key in theirs:
      _assert_equal(ours[key], theirs[key], f'make_atom14_dists_bounds({kwargs})[{key}]')
  for atom_id in ('CA', 'N', 'OXT', 'SG', 'HB2'):
    assert rc.atom_id_to_type(atom_id) == af_rc.atom_id_to_type(atom_id)
  with pytest.raises(ValueError):
    rc.atom_id_to_type('XX')


def test_stereo_chemical_props_equal():
  af_rc, _, _ = _alphafold_modules()
  ours, theirs = rc.load_stereo_chemical_props(), af_rc.load_stereo_chemical_props()
  for ours_table, theirs_table in zip(ours, theirs, strict=True):
    assert ours_table.keys() == theirs_table.keys()
    for resname, theirs_rows in theirs_table.items():
      ours_rows = ours_table[resname]
      assert len(ours_rows) == len(theirs_rows), resname
      for ours_row, theirs_row in zip(ours_rows, theirs_rows):
        assert ours_row._fields == theirs_row._fields
        for field, ours_value, theirs_value in zip(ours_row._fields, ours_row, theirs_row):
          if isinstance(theirs_value, str):
            assert ours_value == theirs_value, (resname, field)
          else:
            np.testing.assert_allclose(ours_value, theirs_value, rtol=1e-12, err_msg=field)


@pytest.mark.parametrize('sequence,mapping,to_x', [
    ('ARNDCQEGHILKMFPSTWYV', 'restype_order', False),
    ('ACDXBZUO', 'restype_order_with_x', True),
    ('AC-DE-X', 'HHBLITS_AA_TO_ID', False),
])
def test_sequence_to_onehot_equal(sequence, mapping, to_x):
  af_rc, _, _ = _alphafold_modules()
  _assert_equal(rc.sequence_to_onehot(sequence, getattr(rc, mapping), to_x),
                af_rc.sequence_to_onehot(sequence, getattr(af_rc, mapping), to_x), mapping)


def test_sequence_to_onehot_errors():
  with pytest.raises(ValueError, match='Invalid character'):
    rc.sequence_to_onehot('AC-', rc.restype_order_with_x, map_unknown_to_x=True)
  with pytest.raises(ValueError, match='without any gaps'):
    rc.sequence_to_onehot('A', {'A': 0, 'C': 2})
  with pytest.raises(KeyError):
    rc.sequence_to_onehot('AB', rc.restype_order)


def test_tables_alphafold_builds_elsewhere_equal():
  """Arrays that AlphaFold's all_atom / data pipeline build from residue_constants."""
  _, all_atom, all_atom_multimer = _alphafold_modules()
  m = all_atom_multimer
  pairs = {
      'chi_atom_indices': np.asarray(all_atom.get_chi_atom_indices()),
      'renaming_matrices': all_atom.RENAMING_MATRICES,
      'restype_atom14_to_atom37': m.RESTYPE_ATOM14_TO_ATOM37,
      'restype_atom37_to_atom14': m.RESTYPE_ATOM37_TO_ATOM14,
      'restype_atom14_is_ambiguous': m.RESTYPE_ATOM14_IS_AMBIGUOUS,
      'restype_rigidgroup_base_atom37_idx': m.RESTYPE_RIGIDGROUP_BASE_ATOM37_IDX,
      'restype_rigidgroup_mask': m.RESTYPE_RIGIDGROUP_MASK,
  }
  for name, theirs in pairs.items():
    ours = getattr(rc, name)
    if name == 'chi_atom_indices':  # AlphaFold's is a jax array of the platform int.
      np.testing.assert_array_equal(ours, theirs, err_msg=name)
    else:
      _assert_equal(ours, np.asarray(theirs), name)
  # The atom37 mask the data pipeline builds from residue_atoms equals the rigid-group one.
  np.testing.assert_array_equal(rc.restype_atom37_mask, m.RESTYPE_ATOM37_MASK)
  np.testing.assert_array_equal(rc.restype_atom14_mask, m.RESTYPE_ATOM14_MASK)


def test_ambiguous_frames_and_radii_match_alphafold_usage():
  """Ambiguous rigid groups as atom37_to_frames builds them; radii as folding.find_structural_violations."""
  af_rc, _, _ = _alphafold_modules()
  is_ambiguous = np.zeros([21, 8], np.float32)
  rots = np.tile(np.eye(3, dtype=np.float32), [21, 8, 1, 1])
  for resname in af_rc.residue_atom_renaming_swaps:
    restype = af_rc.restype_order[af_rc.restype_3to1[resname]]
    group = int(sum(af_rc.chi_angles_mask[restype]) - 1) + 4
    is_ambiguous[restype, group] = 1
    rots[restype, group, 1, 1] = rots[restype, group, 2, 2] = -1
  _assert_equal(rc.restype_rigidgroup_is_ambiguous, is_ambiguous, 'rigidgroup_is_ambiguous')
  _assert_equal(rc.restype_rigidgroup_rots, rots, 'rigidgroup_rots')

  radius = np.array([af_rc.van_der_waals_radius[n[0]] for n in af_rc.atom_types])
  expected = np.asarray(rc.restype_atom14_mask) * radius[rc.restype_atom14_to_atom37]
  np.testing.assert_allclose(rc.restype_atom14_van_der_waals_radius, expected, atol=1e-6)


# ---- Reference-free checks. ----------------------------------------------------------------

def test_alphabets():
  assert len(rc.restypes) == rc.restype_num == 20
  assert ''.join(rc.restypes) == 'ARNDCQEGHILKMFPSTWYV'
  assert rc.resnames[-1] == 'UNK' and len(rc.resnames) == 21
  assert rc.atom_type_num == 37 and rc.atom_types[-1] == 'OXT'
  assert all(rc.restype_3to1[rc.restype_1to3[r]] == r for r in rc.restypes)
  assert [rc.restypes_with_x_and_gap[i] for i in rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE] == [
      rc.ID_TO_HHBLITS_AA[i] for i in range(22)]


def test_atom14_consistent_with_atom37():
  for restype, resname in enumerate(rc.resnames[:20]):
    names14 = [n for n in rc.restype_name_to_atom14_names[resname] if n]
    assert sorted(names14) == sorted(rc.residue_atoms[resname]), resname
    assert sorted(names14) == sorted(a for a, _, _ in rc.rigid_group_atom_positions[resname])
    for slot, name in enumerate(names14):
      assert rc.atom_types[rc.restype_atom14_to_atom37[restype, slot]] == name
      assert rc.restype_atom37_to_atom14[restype, rc.atom_order[name]] == slot
    assert rc.restype_atom14_mask[restype].sum() == len(names14)
    assert rc.restype_atom37_mask[restype].sum() == len(names14)
  assert not rc.restype_atom14_mask[20].any() and not rc.restype_atom37_mask[20].any()


def test_default_frames_are_proper_rigid_transforms():
  # Groups 0-3 exist for every standard residue, chi groups where the chi angle does; absent
  # ones are all-zero, as in AlphaFold.
  exists = np.concatenate([np.ones([20, 4], bool), np.asarray(rc.chi_angles_mask, bool)], axis=1)
  frames = rc.restype_rigid_group_default_frame[:20].astype(np.float64)
  present, absent = frames[exists], frames[~exists]
  rots = present[:, :3, :3]
  np.testing.assert_allclose(rots @ np.swapaxes(rots, -1, -2),
                             np.broadcast_to(np.eye(3), rots.shape), atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-6)
  np.testing.assert_array_equal(present[:, 3], np.broadcast_to([0, 0, 0, 1], (len(present), 4)))
  assert not absent.any() and not rc.restype_rigid_group_default_frame[20].any()


def test_chi_frames_sit_on_their_axis_atoms():
  """Each chi frame's origin is the end atom of its rotation axis (CB for chi1 in the backbone
  frame; for later chis, the previous group's axis atom in the previous chi frame)."""
  for restype, resname in enumerate(rc.resnames[:20]):
    positions = {name: (group, np.array(xyz)) for name, group, xyz in
                 rc.rigid_group_atom_positions[resname]}
    for chi, quad in enumerate(rc.chi_angles_atoms[resname]):
      group, xyz = positions[quad[2]]
      assert group == (0 if chi == 0 else 3 + chi), (resname, chi)
      np.testing.assert_allclose(rc.restype_rigid_group_default_frame[restype, 4 + chi, :3, 3],
                                 xyz, atol=1e-6)


def test_chi_and_ambiguity_tables():
  for restype, resname in enumerate(rc.resnames[:20]):
    assert sum(rc.chi_angles_mask[restype]) == len(rc.chi_angles_atoms[resname])
  perm = rc.restype_atom14_renaming_permutation
  np.testing.assert_array_equal(np.take_along_axis(perm, perm, axis=1),
                                np.tile(np.arange(14), [21, 1]))  # an involution
  assert rc.restype_atom14_is_ambiguous.sum() == 2 + 2 + 4 + 4
  assert np.asarray(rc.chi_pi_periodic).sum() == 4


def test_bond_bounds_bracket_literature():
  bounds = rc.make_atom14_dists_bounds()
  assert (bounds['lower_bound'] <= bounds['upper_bound']).all()
  residue_bonds, virtual, angles = rc.load_stereo_chemical_props()
  assert set(residue_bonds) == set(rc.resnames) == set(virtual) == set(angles)
  assert all(0 < b.length < 3 for bonds in virtual.values() for b in bonds)


def test_import_is_numpy_only():
  code = ('import sys, jaxfold.common.residue_constants; '
          'bad = [m for m in ("jax", "haiku", "flax", "tensorflow") if m in sys.modules]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)
