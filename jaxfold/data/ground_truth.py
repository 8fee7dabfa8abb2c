"""Ground-truth (label) features for training, from an experimental structure.

The training losses of Jumper et al. (2021) Suppl. 1.9 read the true structure in several
forms; this file derives all of them, with AlphaFold's feature names, from atom37
coordinates: atom14 positions and their alternatives with symmetric atom names swapped
(Suppl. 1.8.5, Alg. 26 'renameSymmetricGroundTruthAtoms', Table 3), the 8 rigid-group frames
and their alternatives (Suppl. 1.8.1, Table 2) with the backbone frame for FAPE (Suppl.
1.9.2, Alg. 28 'computeFAPE'), the chi angles (Suppl. 1.9.1, Alg. 27 'torsionAngleLoss'),
pseudo-beta positions for the distogram (Suppl. 1.9.8) and the resolution by which the pLDDT
and experimentally-resolved losses filter (Suppl. 1.9.6, 1.9.10).

Frames are 12-vectors (the 9 rotation entries row by row, then the translation), the layout
AlphaFold's losses read; the backbone frame is also AlphaFold's 7-vector (unit quaternion,
real part first, then translation). The geometry is `jaxfold.common.all_atom`'s, run on the
host CPU; every output is numpy (float32, index maps int32).
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import all_atom
from jaxfold.common import protein as protein_lib
from jaxfold.common import residue_constants as rc
from jaxfold.data import transforms

# chi1-chi4 are torsion angles 3-6 of `all_atom.atom37_to_torsion_angles`.
_FIRST_CHI = 3


class GroundTruthError(ValueError):
  """The structure given for the ground truth is malformed."""


def _checked(source: str, aatype: Any, all_atom_positions: Any, all_atom_mask: Any,
             resolution: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32]:
  """The inputs as int32 / float32 numpy arrays, or GroundTruthError naming what is wrong."""
  aatype = np.asarray(aatype)
  if aatype.ndim != 1 or aatype.dtype.kind not in 'iu':
    raise GroundTruthError(f'{source}: aatype must be a 1-D integer array; got shape '
                           f'{aatype.shape}, dtype {aatype.dtype}.')
  bad = (aatype < 0) | (aatype > rc.unk_restype_index)
  if bad.any():
    raise GroundTruthError(f'{source}: aatype {aatype[bad][0]} at residue '
                           f'{np.flatnonzero(bad)[0]} is outside 0..{rc.unk_restype_index}.')
  num_res = aatype.shape[0]
  positions, mask = np.asarray(all_atom_positions), np.asarray(all_atom_mask)
  for key, value, shape in (('all_atom_positions', positions, (num_res, rc.atom_type_num, 3)),
                            ('all_atom_mask', mask, (num_res, rc.atom_type_num))):
    if value.shape != shape:
      raise GroundTruthError(f'{source}: {key} has shape {value.shape}; expected {shape} '
                             f'(N_res = {num_res} from aatype).')
    if value.dtype.kind not in 'biuf' or not np.isfinite(value).all():
      raise GroundTruthError(f'{source}: {key} must be finite numbers (unresolved atoms are '
                             f'zeros with mask 0); got dtype {value.dtype} or NaN/inf.')
  if not np.isin(mask, (0, 1)).all():
    raise GroundTruthError(f'{source}: all_atom_mask holds {mask[~np.isin(mask, (0, 1))][0]}; '
                           'expected only 0 and 1.')
  try:
    value = float(resolution)
  except (TypeError, ValueError):
    value = math.nan
  if not (math.isfinite(value) and value >= 0):
    raise GroundTruthError(f'{source}: resolution must be a finite number >= 0 (0 where the '
                           f'method has none); got {resolution!r}.')
  return (aatype.astype(np.int32), positions.astype(np.float32), mask.astype(np.float32),
          np.float32(value))


def _atom14_features(aatype: jax.Array, positions: jax.Array, mask: jax.Array
                     ) -> dict[str, jax.Array]:
  """atom14 ground truth and its symmetry-renamed alternative (Suppl. Alg. 26)."""
  def per_type(table):
    return jnp.asarray(table)[aatype]
  residx_atom14_to_atom37 = per_type(rc.restype_atom14_to_atom37)
  atom14_atom_exists = per_type(rc.restype_atom14_mask)
  gt_exists = atom14_atom_exists * all_atom.atom37_to_atom14(
      mask, residx_atom14_to_atom37, atom14_atom_exists)
  gt_positions = all_atom.atom37_to_atom14(positions, residx_atom14_to_atom37, gt_exists)
  # The renaming permutation is an involution: slot b of the alternative holds the atom in
  # slot partner[b] of the ground truth, positions and mask alike, so a pair with only one
  # resolved atom keeps that atom under its swapped name.
  partner = per_type(rc.restype_atom14_renaming_permutation)
  return {
      'atom14_gt_positions': gt_positions,
      'atom14_gt_exists': gt_exists,
      'atom14_alt_gt_positions': jnp.take_along_axis(gt_positions, partner[..., None], axis=1),
      'atom14_alt_gt_exists': jnp.take_along_axis(gt_exists, partner, axis=1),
      'atom14_atom_is_ambiguous': per_type(rc.restype_atom14_is_ambiguous),
  }


def _chi_features(aatype: jax.Array, positions: jax.Array, mask: jax.Array
                  ) -> dict[str, jax.Array]:
  """chi1-chi4 as (sin, cos) [N, 4, 2], their mask [N, 4] (0 where a chi is undefined or
  unresolved) and the angles in radians [N, 4], which AlphaFold's supervised chi loss reads,
  zero where masked."""
  torsions = all_atom.atom37_to_torsion_angles(aatype[None], positions[None], mask[None])
  sin_cos = torsions['torsion_angles_sin_cos'][0, :, _FIRST_CHI:]
  chi_mask = torsions['torsion_angles_mask'][0, :, _FIRST_CHI:]
  return {
      'chi_angles_sin_cos': sin_cos,
      'chi_angles': jnp.arctan2(sin_cos[..., 0], sin_cos[..., 1]) * chi_mask,
      'chi_mask': chi_mask,
  }


@jax.jit
def _geometric_features(aatype: jax.Array, positions: jax.Array, mask: jax.Array
                        ) -> dict[str, jax.Array]:
  """Every label that `all_atom` computes, for aatype [N], positions [N, 37, 3], mask [N, 37]."""
  features = _atom14_features(aatype, positions, mask)
  features.update(all_atom.atom37_to_frames(aatype, positions, mask))
  features['backbone_affine_tensor'], features['backbone_affine_mask'] = (
      all_atom.backbone_affine_from_frames(features['rigidgroups_gt_frames'],
                                           features['rigidgroups_gt_exists']))
  features.update(_chi_features(aatype, positions, mask))
  return features


def _padded_length(num_res: int) -> int:
  """Residues rounded up to a power of two (at least 64), so that `_geometric_features`
  compiles once per size class rather than once per chain length."""
  return max(64, 1 << max(num_res - 1, 0).bit_length())


def ground_truth_features(aatype: Any, all_atom_positions: Any, all_atom_mask: Any,
                          resolution: float, source: str = 'ground truth'
                          ) -> dict[str, np.ndarray]:
  """AlphaFold's label features of one structure.

  aatype [N] int (0-19, 20 = UNK), all_atom_positions [N, 37, 3] Å, all_atom_mask [N, 37]
  (1 where the atom was resolved; unresolved atoms and missing residues are zeros),
  resolution in Å (0 where the method has none). `source` names the structure in errors.

  Returns numpy arrays (float32; index maps int32):
    all_atom_positions [N, 37, 3], all_atom_mask [N, 37];
    atom14_gt_positions [N, 14, 3], atom14_gt_exists [N, 14], atom14_alt_gt_positions
    [N, 14, 3], atom14_alt_gt_exists [N, 14] (ASP, GLU, PHE, TYR with their symmetric atom
    names swapped), atom14_atom_is_ambiguous [N, 14], atom14_atom_exists [N, 14],
    residx_atom14_to_atom37 [N, 14], residx_atom37_to_atom14 [N, 37], atom37_atom_exists [N, 37];
    rigidgroups_gt_frames [N, 8, 12], rigidgroups_gt_exists [N, 8], rigidgroups_group_exists
    [N, 8], rigidgroups_group_is_ambiguous [N, 8], rigidgroups_alt_gt_frames [N, 8, 12];
    backbone_affine_tensor [N, 7], backbone_affine_mask [N];
    chi_angles_sin_cos [N, 4, 2], chi_angles [N, 4] (radians), chi_mask [N, 4];
    pseudo_beta [N, 3], pseudo_beta_mask [N]; resolution [].
  Where a mask is 0, frames and angles are what AlphaFold's and OpenFold's formulas give for
  the zero coordinates of unresolved atoms (the losses ignore them; when two of a frame's
  atoms coincide they are rounding noise); only chi_angles is zeroed there.
  Raises GroundTruthError (a ValueError) on malformed input.
  """
  aatype, positions, mask, resolution = _checked(source, aatype, all_atom_positions,
                                                 all_atom_mask, resolution)
  # Label making is host-side data work: keep it off any accelerator. Padding residues are
  # UNK without atoms; every label kept is per residue, so they change nothing.
  num_res = aatype.shape[0]
  pad = _padded_length(num_res) - num_res
  cpu = jax.devices('cpu')[0]
  padded = [jax.device_put(np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=c),
                           cpu)
            for x, c in ((aatype, rc.unk_restype_index), (positions, 0), (mask, 0))]
  features = {key: np.asarray(value)[:num_res]
              for key, value in _geometric_features(*padded).items()}
  features['pseudo_beta'], features['pseudo_beta_mask'] = transforms.pseudo_beta(
      aatype, positions, mask)
  # The atom14 / atom37 maps and existence masks, as the feature processing makes them.
  features.update({k: v for k, v in transforms.make_atom14_masks({'aatype': aatype}).items()
                   if k != 'aatype'})
  features.update(all_atom_positions=positions, all_atom_mask=mask, resolution=resolution)
  return {key: np.asarray(value, np.int32 if key.startswith('residx_') else np.float32)
          for key, value in features.items()}


def from_protein(prot: protein_lib.Protein, resolution: float,
                 source: str = 'ground truth') -> dict[str, np.ndarray]:
  """`ground_truth_features` of a `Protein` (all of its residues, in order)."""
  return ground_truth_features(prot.aatype, prot.atom_positions, prot.atom_mask, resolution,
                               source=source)
