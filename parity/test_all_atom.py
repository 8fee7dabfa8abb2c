"""All-atom geometry (Suppl. Alg. 24, 25 and 1.8) against AlphaFold's all_atom, on a real protein.

Coordinates are sperm-whale myoglobin (PDB 101m) read with Biopython; a few atoms are
marked unresolved and a few residues set to UNK so that masks and the UNK rows matter.
"""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.model import all_atom as af_all_atom
from alphafold.model import r3

from jaxfold.common import residue_constants as rc
from jaxfold.common.geometry import Rigid, Vec3
from jaxfold.common import all_atom

def _read_atom37(path: pathlib.Path, max_residues: int = 64):
  """aatype [N], atom37 positions [N, 37, 3] and mask [N, 37] of the first chain's residues."""
  from Bio.PDB import PDBParser  # pylint: disable=import-outside-toplevel
  chain = next(PDBParser(QUIET=True).get_structure('s', str(path))[0].get_chains())
  residues = [r for r in chain if r.id[0] == ' '][:max_residues]
  aatype = np.array([rc.restype_order.get(rc.restype_3to1.get(r.get_resname(), 'X'),
                                          rc.unk_restype_index) for r in residues])
  pos = np.zeros([len(residues), 37, 3], np.float32)
  mask = np.zeros([len(residues), 37], np.float32)
  for i, res in enumerate(residues):
    for atom in res:
      if atom.get_id() in rc.atom_order:
        pos[i, rc.atom_order[atom.get_id()]] = atom.get_coord()
        mask[i, rc.atom_order[atom.get_id()]] = 1.0
  return aatype, pos, mask


@pytest.fixture(scope='module')
def protein(shared_dir):
  pdb = shared_dir / 'data' / 'pdb' / '101m.pdb'
  if not pdb.exists():
    pytest.skip(f'{pdb} not available')
  aatype, pos, mask = _read_atom37(pdb)
  mask[5, rc.atom_order['O']] = 0.0     # unresolved psi atom
  mask[9, rc.atom_order['CG']] = 0.0    # unresolved chi atom
  mask[12, rc.atom_order['CA']] = 0.0   # unresolved backbone
  aatype[20] = rc.unk_restype_index
  return aatype, pos, mask


def _af_rigid_to_flat12(r: r3.Rigids) -> np.ndarray:
  return np.asarray(r3.rigids_to_tensor_flat12(r))


def test_atom37_to_frames(parity, protein):
  aatype, pos, mask = protein
  ref = af_all_atom.atom37_to_frames(jnp.asarray(aatype), jnp.asarray(pos), jnp.asarray(mask))
  ours = all_atom.atom37_to_frames(aatype, pos, mask)
  parity.check('atom37_to_frames', ours, ref)


def test_atom37_to_torsion_angles(parity, protein):
  aatype, pos, mask = protein
  for placeholder in (False, True):
    ref = af_all_atom.atom37_to_torsion_angles(aatype[None], pos[None], mask[None],
                                               placeholder_for_undefined=placeholder)
    ours = all_atom.atom37_to_torsion_angles(aatype[None], pos[None], mask[None],
                                             placeholder_for_undefined=placeholder)
    parity.check(f'atom37_to_torsion_angles(placeholder={placeholder})', ours, ref)


def test_torsion_angles_to_atom14(parity, protein):
  """Backbone frames and torsion angles of the real structure, rebuilt into atoms."""
  aatype, pos, mask = protein
  frames = all_atom.atom37_to_frames(aatype, pos, mask)['rigidgroups_gt_frames'][:, 0]
  angles = all_atom.atom37_to_torsion_angles(aatype[None], pos[None], mask[None],
                                             placeholder_for_undefined=True)
  angles = np.asarray(angles['torsion_angles_sin_cos'][0])

  ref_frames = af_all_atom.torsion_angles_to_frames(
      jnp.asarray(aatype), r3.rigids_from_tensor_flat12(jnp.asarray(frames)), angles)
  ref_atoms = af_all_atom.frames_and_literature_positions_to_atom14_pos(
      jnp.asarray(aatype), ref_frames)
  ours_frames = all_atom.torsion_angles_to_frames(aatype, Rigid.from_tensor_flat12(frames),
                                                  angles)
  ours_atoms = all_atom.frames_and_literature_positions_to_atom14_pos(aatype, ours_frames)
  parity.check('torsion_angles_to_frames', ours_frames.to_tensor_flat12(),
               _af_rigid_to_flat12(ref_frames))
  parity.check('frames_and_literature_positions_to_atom14_pos', ours_atoms.to_array(),
               np.asarray(r3.vecs_to_tensor(ref_atoms)))


def test_atom_layout_conversion(parity, protein):
  aatype, pos, mask = protein
  batch = {
      'residx_atom37_to_atom14': rc.restype_atom37_to_atom14[aatype],
      'atom37_atom_exists': rc.restype_atom37_mask[aatype],
      'residx_atom14_to_atom37': rc.restype_atom14_to_atom37[aatype],
      'atom14_atom_exists': rc.restype_atom14_mask[aatype],
  }
  ref14 = af_all_atom.atom37_to_atom14(jnp.asarray(pos), batch)
  ours14 = all_atom.atom37_to_atom14(pos, batch['residx_atom14_to_atom37'],
                                     batch['atom14_atom_exists'])
  parity.check('atom37_to_atom14', ours14, ref14)
  ref37 = af_all_atom.atom14_to_atom37(ref14, batch)
  ours37 = all_atom.atom14_to_atom37(ours14, batch['residx_atom37_to_atom14'],
                                     batch['atom37_atom_exists'])
  parity.check('atom14_to_atom37', ours37, ref37)
  # Masks ([N, 14] without a trailing axis) convert too.
  parity.check('atom37_to_atom14(mask)', all_atom.atom37_to_atom14(
      mask, batch['residx_atom14_to_atom37'], batch['atom14_atom_exists']),
               af_all_atom.atom37_to_atom14(jnp.asarray(mask), batch))


def test_backbone_affine_round_trip(protein):
  """The 7-vector of the backbone frame describes the same rigid transform."""
  aatype, pos, mask = protein
  feats = all_atom.atom37_to_frames(aatype, pos, mask)
  affine, affine_mask = all_atom.backbone_affine_from_frames(feats['rigidgroups_gt_frames'],
                                                             feats['rigidgroups_gt_exists'])
  np.testing.assert_array_equal(affine_mask, feats['rigidgroups_gt_exists'][:, 0])
  rebuilt = Rigid.from_tensor_7(affine, normalize=True).to_tensor_flat12()
  np.testing.assert_allclose(rebuilt, feats['rigidgroups_gt_frames'][:, 0], atol=2e-5)
  # The backbone frame maps the literature N, CA, C onto the real atoms (up to bond noise).
  lit = Vec3.from_array(jnp.asarray(rc.restype_atom14_rigid_group_positions[aatype, :3]))
  placed = Rigid.from_tensor_7(affine).map(lambda a: a[:, None]).apply(lit).to_array()
  real = pos[:, [rc.atom_order['N'], rc.atom_order['CA'], rc.atom_order['C']]]
  ok = np.asarray(affine_mask, bool) & (aatype != rc.unk_restype_index)  # UNK: no literature atoms
  assert np.max(np.abs(placed - real)[ok]) < 0.2
