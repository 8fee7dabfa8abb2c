"""Renaming symmetric ground-truth atoms to the prediction's choice.

Jumper et al. (2021) Suppl. 1.8.5 and Alg. 26 'renameSymmetricGroundTruthAtoms'. Side chains
with a 180-degree-symmetric group (ASP, GLU, PHE, TYR; Suppl. Table 3) have two equally valid
namings of their symmetric atoms. Per residue, the ground truth is renamed to whichever
naming lies closer to the prediction, measured by the distances of its ambiguous atoms to
every unambiguous atom of the structure; the losses then all pull toward the same naming.

Shapes (one example, N residues): atom14 positions [N, 14, 3], masks [N, 14], rigid-group
frames [N, 8, 12] (`Rigid.to_tensor_flat12`), alt_naming_is_better [N].
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def _pairwise_distances(positions: jax.Array) -> jax.Array:
  """[N, 14, 3] -> [N, N, 14, 14]: distance from atom a of residue i to atom b of residue j."""
  diff = positions[:, None, :, None, :] - positions[None, :, None, :, :]
  return jnp.sqrt(1e-10 + jnp.sum(jnp.square(diff), axis=-1))


def find_optimal_renaming(atom14_gt_positions: jax.Array, atom14_alt_gt_positions: jax.Array,
                          atom14_atom_is_ambiguous: jax.Array, atom14_gt_exists: jax.Array,
                          atom14_pred_positions: jax.Array) -> jax.Array:
  """Alg. 26 lines 1-5: 1.0 for the residues whose alternative naming fits the prediction better.

  For each residue, sums |d_pred - d_gt| over the distances from its resolved ambiguous
  atoms to every resolved unambiguous atom (of any residue), once with the ground truth's
  naming and once with the alternative; the alternative wins only if strictly smaller.

  Args:
    atom14_gt_positions, atom14_alt_gt_positions, atom14_pred_positions: [N, 14, 3].
    atom14_atom_is_ambiguous, atom14_gt_exists: [N, 14].

  Returns:
    [N] float32 0/1 (no gradient flows through it).
  """
  pred = _pairwise_distances(atom14_pred_positions)

  def misfit(gt_positions):
    return jnp.sqrt(1e-10 + jnp.square(pred - _pairwise_distances(gt_positions)))

  ambiguous = atom14_gt_exists * atom14_atom_is_ambiguous  # rows: atoms a of residue i
  unambiguous = atom14_gt_exists * (1.0 - atom14_atom_is_ambiguous)  # columns: b of residue j
  mask = ambiguous[:, None, :, None] * unambiguous[None, :, None, :]
  per_residue = jnp.sum(mask * misfit(atom14_gt_positions), axis=(1, 2, 3))
  alt_per_residue = jnp.sum(mask * misfit(atom14_alt_gt_positions), axis=(1, 2, 3))
  return (alt_per_residue < per_residue).astype(jnp.float32)


def _choose(alt_naming_is_better: jax.Array, gt: jax.Array, alt_gt: jax.Array) -> jax.Array:
  """Per residue, gt [N, ...] or alt_gt [N, ...] by alt_naming_is_better [N]."""
  alt = alt_naming_is_better.reshape(alt_naming_is_better.shape + (1,) * (gt.ndim - 1))
  return (1.0 - alt) * gt + alt * alt_gt


def compute_renamed_ground_truth(batch: Mapping[str, jax.Array],
                                 atom14_pred_positions: jax.Array) -> dict[str, jax.Array]:
  """Alg. 26: the atom14 ground truth renamed per residue to fit the prediction.

  Args:
    batch: AlphaFold's features atom14_gt_positions [N, 14, 3], atom14_alt_gt_positions
      [N, 14, 3], atom14_atom_is_ambiguous [N, 14], atom14_gt_exists [N, 14],
      atom14_alt_gt_exists [N, 14].
    atom14_pred_positions: [N, 14, 3] the prediction (the final layer's atoms).

  Returns:
    'alt_naming_is_better' [N], 'renamed_atom14_gt_positions' [N, 14, 3],
    'renamed_atom14_gt_exists' [N, 14].
  """
  alt_naming_is_better = find_optimal_renaming(
      batch['atom14_gt_positions'], batch['atom14_alt_gt_positions'],
      batch['atom14_atom_is_ambiguous'], batch['atom14_gt_exists'], atom14_pred_positions)
  return {
      'alt_naming_is_better': alt_naming_is_better,
      'renamed_atom14_gt_positions': _choose(alt_naming_is_better, batch['atom14_gt_positions'],
                                             batch['atom14_alt_gt_positions']),
      'renamed_atom14_gt_exists': _choose(alt_naming_is_better, batch['atom14_gt_exists'],
                                          batch['atom14_alt_gt_exists']),
  }


def rename_rigidgroup_frames(alt_naming_is_better: jax.Array, rigidgroups_gt_frames: jax.Array,
                             rigidgroups_alt_gt_frames: jax.Array) -> jax.Array:
  """Alg. 26 line 7: the rigid-group frames [N, 8, 12] of the chosen naming (the alternative
  frames turn the symmetric group half a turn)."""
  return _choose(alt_naming_is_better, rigidgroups_gt_frames, rigidgroups_alt_gt_frames)
