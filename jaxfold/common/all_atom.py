"""All-atom geometry: rigid-group frames, torsion angles and atom layouts.

Jumper et al. (2021) Suppl. 1.8 'Representations of frames, torsion angles and atoms'
(rigid groups, Suppl. Table 2), Suppl. Alg. 24 'computeAllAtomCoordinates' and Suppl.
Alg. 25 'makeRotX'. Two atom layouts: atom37 (one slot per atom name, [N_res, 37]) and
atom14 (the residue type's own heavy atoms, [N_res, 14]); see `residue_constants`.

Each residue has 8 rigid groups: 0 backbone, 1 pre-omega, 2 phi, 3 psi, 4-7 chi1-chi4, and 7
torsion angles (pre-omega, phi, psi, chi1-chi4) as (sin, cos) pairs [..., 7, 2].
Frames are `geometry.Rigid`; in arrays they use the 12-vector layout (rotation row by row,
then translation) of AlphaFold's `rigidgroups_*` features.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.common.geometry import Rigid, Rot3, Vec3

# Suppl. 1.8: the backbone frame of rigidFrom3Points(C, CA, N) is turned half a turn about
# y so that its x axis points from CA to C, the convention of the literature positions.
_GROUP_FLIPS = np.tile(np.eye(3, dtype=np.float32), [8, 1, 1])
_GROUP_FLIPS[0] = np.diag([-1.0, 1.0, -1.0])

# Chi angles defined for each residue type, with an all-zero row for UNK: [21, 4].
_CHI_ANGLES_MASK = np.concatenate([np.asarray(rc.chi_angles_mask, np.float32),
                                   np.zeros([1, 4], np.float32)])

# psi is measured through O, which sits opposite to the next residue's N: flip its sine
# and cosine so that psi is the usual N-CA-C-N(next) dihedral.
_TORSION_SIGNS = np.asarray([1., 1., -1., 1., 1., 1., 1.], np.float32)


def _per_type(table: np.ndarray, aatype: jax.Array) -> jax.Array:
  """table[aatype] for a per-residue-type table [21, ...]; out-of-range types clip to UNK."""
  return jnp.take(jnp.asarray(table), aatype, axis=0, mode='clip')


def _take_atoms(values: jax.Array, indices: jax.Array, atom_axis: int) -> jax.Array:
  """Per residue, the atoms `indices` of `values`.

  values [..., A, *rest] with the atom axis at `atom_axis` (negative), indices [..., *idx]
  with the same leading residue axes -> [..., *idx, *rest].
  """
  num_lead = values.ndim + atom_axis
  lead = values.shape[:num_lead]
  flat_v = values.reshape((-1,) + values.shape[num_lead:])
  flat_i = indices.reshape((-1,) + indices.shape[num_lead:])
  out = jax.vmap(lambda v, i: jnp.take(v, i, axis=0, mode='clip'))(flat_v, flat_i)
  return out.reshape(lead + out.shape[1:])


def _convert_layout(data: jax.Array, index: jax.Array, exists: jax.Array) -> jax.Array:
  """Gathers per-atom data [N, A_in, ...] into another layout [N, A_out, ...], zero where the
  atom does not exist."""
  out = jax.vmap(lambda d, i: jnp.take(d, i, axis=0, mode='clip'))(data, index)
  return out * exists.reshape(exists.shape + (1,) * (data.ndim - 2)).astype(out.dtype)


def atom14_to_atom37(atom14_data: jax.Array, residx_atom37_to_atom14: jax.Array,
                     atom37_atom_exists: jax.Array) -> jax.Array:
  """[N, 14, ...] -> [N, 37, ...], given the batch's per-residue index map [N, 37] and mask."""
  return _convert_layout(atom14_data, residx_atom37_to_atom14, atom37_atom_exists)


def atom37_to_atom14(atom37_data: jax.Array, residx_atom14_to_atom37: jax.Array,
                     atom14_atom_exists: jax.Array) -> jax.Array:
  """[N, 37, ...] -> [N, 14, ...], given the batch's per-residue index map [N, 14] and mask."""
  return _convert_layout(atom37_data, residx_atom14_to_atom37, atom14_atom_exists)


def torsion_angles_to_frames(aatype: jax.Array, backb_to_global: Rigid,
                             torsion_angles_sin_cos: jax.Array) -> Rigid:
  """Suppl. Alg. 24 lines 1-10: the 8 rigid-group frames in the global frame.

  aatype [...], backb_to_global Rigid [...], torsion_angles_sin_cos [..., 7, 2] ->
  Rigid [..., 8]. Each group is its default frame (relative to its parent) rotated about
  x by its torsion angle; chi2-chi4 hang off the previous chi group, all others off the
  backbone.
  """
  default_frames = Rigid.from_tensor_4x4(_per_type(rc.restype_rigid_group_default_frame, aatype))
  # The backbone group itself is not rotated.
  sin = jnp.concatenate([jnp.zeros_like(torsion_angles_sin_cos[..., :1, 0]),
                         torsion_angles_sin_cos[..., 0]], axis=-1)
  cos = jnp.concatenate([jnp.ones_like(torsion_angles_sin_cos[..., :1, 1]),
                         torsion_angles_sin_cos[..., 1]], axis=-1)
  to_parent = default_frames.compose_rotation(Rot3.from_x_rotation(sin, cos))

  to_backbone = [to_parent.map(lambda a: a[..., :5])]
  chained = to_parent.map(lambda a: a[..., 4])
  for group in (5, 6, 7):
    chained = chained @ to_parent.map(lambda a, g=group: a[..., g])
    to_backbone.append(chained.map(lambda a: a[..., None]))
  to_backbone = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=-1), *to_backbone)
  return backb_to_global.map(lambda a: a[..., None]) @ to_backbone


def frames_and_literature_positions_to_atom14_pos(aatype: jax.Array,
                                                  all_frames_to_global: Rigid) -> Vec3:
  """Suppl. Alg. 24 line 11: literature atom positions placed by their group's frame.

  aatype [...], all_frames_to_global Rigid [..., 8] -> Vec3 [..., 14] (zero for absent atoms).
  """
  group = _per_type(rc.restype_atom14_to_rigid_group, aatype)  # [..., 14]
  atom_frames = all_frames_to_global.map(lambda a: jnp.take_along_axis(a, group, axis=-1))
  local = Vec3.from_array(_per_type(rc.restype_atom14_rigid_group_positions, aatype))
  return atom_frames.apply(local) * _per_type(rc.restype_atom14_mask, aatype)


def atom37_to_frames(aatype: jax.Array, all_atom_positions: jax.Array,
                     all_atom_mask: jax.Array) -> dict[str, jax.Array]:
  """Rigid-group frames of (ground-truth) coordinates (Suppl. 1.8.1, Table 2).

  aatype [...], all_atom_positions [..., 37, 3], all_atom_mask [..., 37] ->
  'rigidgroups_gt_frames' [..., 8, 12], 'rigidgroups_gt_exists' [..., 8] (group exists and
  its three atoms are resolved), 'rigidgroups_group_exists' [..., 8],
  'rigidgroups_group_is_ambiguous' [..., 8], 'rigidgroups_alt_gt_frames' [..., 8, 12] (the
  frames after swapping symmetric atom names: a half turn of the last chi group about x).
  """
  base_idx = _per_type(rc.restype_rigidgroup_base_atom37_idx, aatype)  # [..., 8, 3]
  base_pos = _take_atoms(all_atom_positions, base_idx, -2)  # [..., 8, 3, 3]
  frames = Rigid.from_3_points(point_on_neg_x_axis=Vec3.from_array(base_pos[..., 0, :]),
                               origin=Vec3.from_array(base_pos[..., 1, :]),
                               point_on_xy_plane=Vec3.from_array(base_pos[..., 2, :]))
  frames = frames.compose_rotation(Rot3.from_array(jnp.asarray(_GROUP_FLIPS)))
  alt_frames = frames.compose_rotation(
      Rot3.from_array(_per_type(rc.restype_rigidgroup_rots, aatype)))

  group_exists = _per_type(rc.restype_rigidgroup_mask, aatype)
  atoms_resolved = _take_atoms(all_atom_mask.astype(jnp.float32), base_idx, -1)  # [..., 8, 3]
  return {
      'rigidgroups_gt_frames': frames.to_tensor_flat12(),
      'rigidgroups_gt_exists': jnp.min(atoms_resolved, axis=-1) * group_exists,
      'rigidgroups_group_exists': group_exists,
      'rigidgroups_group_is_ambiguous': _per_type(rc.restype_rigidgroup_is_ambiguous, aatype),
      'rigidgroups_alt_gt_frames': alt_frames.to_tensor_flat12(),
  }


def backbone_affine_from_frames(rigidgroups_gt_frames: jax.Array,
                                rigidgroups_gt_exists: jax.Array
                                ) -> tuple[jax.Array, jax.Array]:
  """The backbone frame as AlphaFold's 7-vector (unit quaternion, real part first, then
  translation): `backbone_affine_tensor` [..., 7] and `backbone_affine_mask` [...] from
  `atom37_to_frames`' [..., 8, 12] and [..., 8]."""
  backbone = Rigid.from_tensor_flat12(rigidgroups_gt_frames[..., 0, :])
  return backbone.to_tensor_7(), rigidgroups_gt_exists[..., 0]


def atom37_to_torsion_angles(aatype: jax.Array, all_atom_pos: jax.Array,
                             all_atom_mask: jax.Array, placeholder_for_undefined: bool = False
                             ) -> dict[str, jax.Array]:
  """The 7 torsion angles of each residue from coordinates (Suppl. 1.8.2, Table 2).

  aatype [B, N], all_atom_pos [B, N, 37, 3], all_atom_mask [B, N, 37] ->
  'torsion_angles_sin_cos' [B, N, 7, 2], 'alt_torsion_angles_sin_cos' [B, N, 7, 2] (chi
  angles of pi-periodic groups shifted by pi), 'torsion_angles_mask' [B, N, 7].
  pre-omega and phi use the previous residue (none for the first). With
  `placeholder_for_undefined`, undefined angles read (sin, cos) = (1, 0).
  """
  aatype = jnp.minimum(aatype, rc.unk_restype_index)
  all_atom_mask = all_atom_mask.astype(jnp.float32)
  prev_pos = jnp.concatenate([jnp.zeros_like(all_atom_pos[:, :1]), all_atom_pos[:, :-1]], axis=1)
  prev_mask = jnp.concatenate([jnp.zeros_like(all_atom_mask[:, :1]), all_atom_mask[:, :-1]],
                              axis=1)
  n, ca, c, o = (rc.atom_order[a] for a in ('N', 'CA', 'C', 'O'))

  def quad(atoms):
    """[B, N, 4, 3] positions and [B, N] mask of four (previous?, atom37 slot) atoms."""
    pos = jnp.stack([(prev_pos if prev else all_atom_pos)[:, :, i] for prev, i in atoms], axis=2)
    mask = jnp.prod(jnp.stack([(prev_mask if prev else all_atom_mask)[:, :, i]
                               for prev, i in atoms], axis=-1), axis=-1)
    return pos, mask

  backbone = [quad([(True, ca), (True, c), (False, n), (False, ca)]),   # pre-omega
              quad([(True, c), (False, n), (False, ca), (False, c)]),   # phi
              quad([(False, n), (False, ca), (False, c), (False, o)])]  # psi
  chi_idx = _per_type(rc.chi_atom_indices, aatype)  # [B, N, 4, 4]
  chi_pos = _take_atoms(all_atom_pos, chi_idx, -2)  # [B, N, 4, 4, 3]
  chi_mask = _per_type(_CHI_ANGLES_MASK, aatype) * jnp.prod(
      _take_atoms(all_atom_mask, chi_idx, -1), axis=-1)

  atom_pos = jnp.concatenate([p[:, :, None] for p, _ in backbone] + [chi_pos], axis=2)
  torsion_mask = jnp.concatenate([m[:, :, None] for _, m in backbone] + [chi_mask], axis=2)

  # The dihedral is the 4th atom's direction about the 2nd->3rd bond, in the frame with
  # origin at the 3rd atom, -x toward the 2nd and the 1st in the xy plane.
  frames = Rigid.from_3_points(point_on_neg_x_axis=Vec3.from_array(atom_pos[..., 1, :]),
                               origin=Vec3.from_array(atom_pos[..., 2, :]),
                               point_on_xy_plane=Vec3.from_array(atom_pos[..., 0, :]))
  fourth = frames.inverse().apply(Vec3.from_array(atom_pos[..., 3, :]))
  sin_cos = jnp.stack([fourth.z, fourth.y], axis=-1)
  sin_cos = sin_cos / jnp.sqrt(jnp.sum(jnp.square(sin_cos), axis=-1, keepdims=True) + 1e-8)
  sin_cos = sin_cos * _TORSION_SIGNS[:, None]

  chi_shift = 1.0 - 2.0 * _per_type(np.asarray(rc.chi_pi_periodic, np.float32), aatype)
  alt_sin_cos = sin_cos * jnp.concatenate([jnp.ones_like(chi_shift[..., :3]), chi_shift],
                                          axis=-1)[..., None]
  if placeholder_for_undefined:
    placeholder = jnp.asarray([1.0, 0.0], sin_cos.dtype)
    keep = torsion_mask[..., None]
    sin_cos = sin_cos * keep + placeholder * (1 - keep)
    alt_sin_cos = alt_sin_cos * keep + placeholder * (1 - keep)
  return {
      'torsion_angles_sin_cos': sin_cos,
      'alt_torsion_angles_sin_cos': alt_sin_cos,
      'torsion_angles_mask': torsion_mask,
  }
