"""Ground-truth label features against AlphaFold's own functions and OpenFold's recorded labels.

Two references, both on real structures from shared/data/mmcif:
- AlphaFold (live): all_atom.atom37_to_frames, all_atom.atom37_to_torsion_angles,
  tf.data_transforms.make_atom14_masks, all_atom_multimer.atom37_to_atom14 /
  get_alt_atom14 / get_atom14_is_ambiguous, modules.pseudo_beta_fn, and the QuatAffine through
  which AlphaFold's backbone FAPE reads `backbone_affine_tensor`. A seeded tenth of the atoms
  is marked unresolved so that every mask matters.
- OpenFold (recorded): the labels of fixtures/openfold/small_loss/loss_batch.npz, which
  OpenFold's data pipeline made from 2q2k.cif chain A (a 48-residue crop whose first 19
  residues are unresolved His-tag, so missing residues are covered too).
"""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.model import all_atom as af_all_atom
from alphafold.model import all_atom_multimer as af_all_atom_multimer
from alphafold.model import geometry as af_geometry
from alphafold.model import modules as af_modules
from alphafold.model import quat_affine
from alphafold.model import r3
from alphafold.model.tf import data_transforms
from Bio.PDB.MMCIF2Dict import MMCIF2Dict

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common.geometry import Rigid
from jaxfold.data import ground_truth

# (mmCIF, author chain): X-ray structures; 4i6p and 101m hold UNK residues (non-standard
# residues, and waters / ligands the parser keeps as UNK).
_STRUCTURES = [('2q2k', 'A'), ('3zee', None), ('4i6p', None), ('101m', None)]

# The OpenFold recording is compared to this absolute tolerance, key by key.
_OPENFOLD_ATOL = 1e-5


def _read(shared_dir: pathlib.Path, name: str) -> str:
  path = shared_dir / 'data' / 'mmcif' / f'{name}.cif'
  if not path.exists():
    pytest.skip(f'{path} not present')
  return path.read_text()


@pytest.fixture(scope='module', params=_STRUCTURES, ids=lambda s: s[0])
def structure(request, shared_dir):
  """aatype [N], atom37 positions [N, 37, 3] and mask [N, 37] of one chain, with a seeded
  tenth of its atoms unresolved (zero position, mask 0), and our features of it."""
  name, chain = request.param
  prot = protein.from_mmcif_string(_read(shared_dir, name), chain)
  first_chain = prot.chain_index == prot.chain_index[0]
  aatype = prot.aatype[first_chain]
  pos = prot.atom_positions[first_chain].astype(np.float32)
  mask = prot.atom_mask[first_chain].astype(np.float32)
  unresolved = np.random.default_rng(0).random(mask.shape) < 0.1
  mask[unresolved] = 0.0
  pos[unresolved] = 0.0
  return aatype, pos, mask, ground_truth.ground_truth_features(aatype, pos, mask, 2.0, name)


# Where a frame's or angle's atoms are unresolved, its value comes from zero coordinates: when
# two of them coincide it is rounding noise, which differs between AlphaFold's eager ops and
# our jitted ones. The losses mask these out, so frames and angles are compared where their
# mask is 1 (the OpenFold recording below is compared everywhere).

def test_frames_equal_alphafold(parity, structure):
  aatype, pos, mask, ours = structure
  ref = af_all_atom.atom37_to_frames(jnp.asarray(aatype), jnp.asarray(pos), jnp.asarray(mask))
  resolved = np.asarray(ref['rigidgroups_gt_exists'])[..., None]
  frames = ('rigidgroups_gt_frames', 'rigidgroups_alt_gt_frames')
  parity.check('ground_truth/frames',
               {k: ours[k] * resolved if k in frames else ours[k] for k in ref},
               {k: np.asarray(v) * resolved if k in frames else v for k, v in ref.items()})


def test_chi_angles_equal_alphafold(parity, structure):
  aatype, pos, mask, ours = structure
  ref = af_all_atom.atom37_to_torsion_angles(aatype[None], pos[None], mask[None],
                                             placeholder_for_undefined=False)
  chi_mask = np.asarray(ref['torsion_angles_mask'][0, :, 3:])
  ref_sin_cos = np.asarray(ref['torsion_angles_sin_cos'][0, :, 3:]) * chi_mask[..., None]
  ref_angles = np.arctan2(ref_sin_cos[..., 0], ref_sin_cos[..., 1]) * chi_mask
  # An angle near +-pi may land on either side; compare the difference modulo 2 pi.
  ours_angles = ref_angles + np.angle(np.exp(1j * (ours['chi_angles'] - ref_angles)))
  parity.check('ground_truth/chi', {
      'chi_angles_sin_cos': ours['chi_angles_sin_cos'] * ours['chi_mask'][..., None],
      'chi_angles': ours_angles,
      'chi_mask': ours['chi_mask'],
  }, {
      'chi_angles_sin_cos': ref_sin_cos,
      'chi_angles': ref_angles,
      'chi_mask': chi_mask,
  })


def test_atom14_equal_alphafold(parity, structure):
  aatype, pos, mask, ours = structure
  masks = data_transforms.make_atom14_masks({'aatype': aatype})
  masks.pop('aatype')
  parity.check('ground_truth/make_atom14_masks', {k: ours[k] for k in masks}, masks)

  gt_pos, gt_mask = af_all_atom_multimer.atom37_to_atom14(
      jnp.asarray(aatype), af_geometry.Vec3Array.from_array(jnp.asarray(pos)), jnp.asarray(mask))
  alt_pos, alt_mask = af_all_atom_multimer.get_alt_atom14(jnp.asarray(aatype), gt_pos, gt_mask)
  parity.check('ground_truth/atom14', {
      k: ours[k] for k in ('atom14_gt_positions', 'atom14_gt_exists', 'atom14_alt_gt_positions',
                           'atom14_alt_gt_exists', 'atom14_atom_is_ambiguous')
  }, {
      'atom14_gt_positions': gt_pos.to_array(),
      'atom14_gt_exists': gt_mask,
      'atom14_alt_gt_positions': alt_pos.to_array(),
      'atom14_alt_gt_exists': alt_mask,
      'atom14_atom_is_ambiguous': af_all_atom_multimer.get_atom14_is_ambiguous(aatype),
  })


def test_pseudo_beta_equal_alphafold(parity, structure):
  aatype, pos, mask, ours = structure
  ref_pos, ref_mask = af_modules.pseudo_beta_fn(jnp.asarray(aatype), jnp.asarray(pos),
                                                jnp.asarray(mask))
  parity.check('ground_truth/pseudo_beta', [ours['pseudo_beta'], ours['pseudo_beta_mask']],
               [ref_pos, ref_mask])


def test_backbone_affine_reads_as_alphafold_backbone_frame(parity, structure):
  """AlphaFold's FAPE turns `backbone_affine_tensor` into frames via QuatAffine; those must
  be AlphaFold's own backbone frames wherever the frame is resolved."""
  aatype, pos, mask, ours = structure
  frames = af_all_atom.atom37_to_frames(jnp.asarray(aatype), jnp.asarray(pos),
                                        jnp.asarray(mask))
  resolved = np.asarray(frames['rigidgroups_gt_exists'][:, 0])
  read = r3.rigids_to_tensor_flat12(r3.rigids_from_quataffine(
      quat_affine.QuatAffine.from_tensor(jnp.asarray(ours['backbone_affine_tensor']))))
  parity.check('ground_truth/backbone_affine', [
      np.asarray(read) * resolved[:, None], ours['backbone_affine_mask']
  ], [np.asarray(frames['rigidgroups_gt_frames'][:, 0]) * resolved[:, None], resolved])


# ---------------------------------------------------------------------------------------------
# OpenFold's recorded ground truth for 2q2k chain A.
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def openfold_batch(shared_dir) -> dict[str, np.ndarray]:
  """The last recycling slice of OpenFold's training batch (its recycling axis is last)."""
  path = shared_dir / 'fixtures' / 'openfold' / 'small_loss' / 'loss_batch.npz'
  if not path.exists():
    pytest.skip(f'{path} not present')
  with np.load(path) as batch:
    return {key: batch[key][..., -1] for key in batch.files}


def _seqres_atoms(shared_dir: pathlib.Path, chain: str) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
  """A chain of 2q2k over its whole SEQRES (pdbx_poly_seq_scheme): residue names [L], atom37
  positions [L, 37, 3] and mask [L, 37], zero for residues without coordinates."""
  path = shared_dir / 'data' / 'mmcif' / '2q2k.cif'
  scheme = MMCIF2Dict(str(path))
  strand = np.asarray(scheme['_pdbx_poly_seq_scheme.pdb_strand_id'])
  mon_id = np.asarray(scheme['_pdbx_poly_seq_scheme.mon_id'])[strand == chain]
  auth_num = np.asarray(scheme['_pdbx_poly_seq_scheme.auth_seq_num'])[strand == chain]
  row_of_author_number = {int(n): row for row, n in enumerate(auth_num) if n != '?'}
  prot = protein.from_mmcif_string(_read(shared_dir, '2q2k'), chain)
  rows = [row_of_author_number[int(n)] for n in prot.residue_index]
  pos = np.zeros([len(mon_id), rc.atom_type_num, 3], np.float32)
  mask = np.zeros([len(mon_id), rc.atom_type_num], np.float32)
  pos[rows], mask[rows] = prot.atom_positions, prot.atom_mask
  return mon_id, pos, mask


def test_openfold_batch_is_2q2k_chain_a(shared_dir, openfold_batch):
  """The recording's residues are SEQRES positions `residue_index` of 2q2k chain A."""
  mon_id, pos, mask = _seqres_atoms(shared_dir, 'A')
  rows = openfold_batch['residue_index']
  aatype = np.asarray([rc.resname_to_idx.get(m, rc.unk_restype_index) for m in mon_id[rows]])
  np.testing.assert_array_equal(openfold_batch['aatype'], aatype)
  np.testing.assert_array_equal(openfold_batch['all_atom_mask'], mask[rows])
  np.testing.assert_array_equal(openfold_batch['all_atom_positions'], pos[rows])
  # The crop starts inside the unresolved His-tag: whole residues without coordinates.
  assert (mask[rows].sum(-1) == 0).sum() == 19


def _flat12(frames_4x4: np.ndarray) -> np.ndarray:
  return np.asarray(Rigid.from_tensor_4x4(jnp.asarray(frames_4x4)).to_tensor_flat12())


def test_labels_equal_openfold(parity, openfold_batch):
  batch = openfold_batch
  ours = ground_truth.ground_truth_features(batch['aatype'], batch['all_atom_positions'],
                                            batch['all_atom_mask'], batch['resolution'],
                                            'loss_batch.npz')
  # OpenFold keeps frames as 4x4 matrices and names the backbone frame `backbone_rigid_*`.
  ref = dict(batch)
  for key in ('rigidgroups_gt_frames', 'rigidgroups_alt_gt_frames', 'backbone_rigid_tensor'):
    ref[key] = _flat12(batch[key])
  # The backbone frame as a 7-vector, compared where it is resolved (elsewhere the frame of
  # zero coordinates is no rotation and has no quaternion).
  resolved = batch['backbone_rigid_mask'][:, None]
  ref['backbone_rigid_tensor'] = ref['backbone_rigid_tensor'] * resolved
  ours['backbone_rigid_tensor'] = np.asarray(Rigid.from_tensor_7(
      jnp.asarray(ours['backbone_affine_tensor']), normalize=True).to_tensor_flat12()) * resolved
  ours['backbone_rigid_mask'] = ours['backbone_affine_mask']
  compared = sorted(ref.keys() & ours.keys())
  rows = parity.check('openfold_ground_truth', {k: ours[k] for k in compared},
                      {k: ref[k] for k in compared})
  for row in rows:
    print(row.row())
  # Every label was compared but the two AlphaFold-only forms (checked against AlphaFold above).
  assert ours.keys() - ref.keys() == {'backbone_affine_tensor', 'backbone_affine_mask',
                                      'chi_angles'}, sorted(ours.keys() - ref.keys())
  beyond = [row.row() for row in rows if row.max_abs_diff > _OPENFOLD_ATOL]
  assert not beyond, f'beyond {_OPENFOLD_ATOL:g} absolute:\n' + '\n'.join(beyond)
