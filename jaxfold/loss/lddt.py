"""lDDT: the superposition-free local distance difference test (Mariani et al. 2013).

AlphaFold's approximate lDDT (alphafold/model/lddt.py), used by the pLDDT loss on Cα atoms
(Jumper et al. (2021) Suppl. 1.9.6, Alg. 29) and by the validation metrics. For every pair
of distinct points closer than `cutoff` in the TRUE structure, the difference between the
true and predicted distance is scored against the thresholds 0.5, 1, 2 and 4 Å (a quarter
point per threshold it stays under). Unlike the original score there is no stereochemical
plausibility check and no per-atom-type inclusion radius.

Shapes: points [..., N, 3] (any leading batch axes, e.g. none for one chain), mask
[..., N, 1]. The score is in [0, 1]; it is invariant to rigid motions of either structure.
Being a step function of the coordinates, its gradient is zero almost everywhere.
"""

import jax
import jax.numpy as jnp

from jaxfold.common import residue_constants

THRESHOLDS = (0.5, 1.0, 2.0, 4.0)  # Å

# Inside square roots and the normaliser: AlphaFold's value, keeps empty masks finite.
EPSILON = 1e-10


def _distances(points: jax.Array) -> jax.Array:
  """[..., N, N] pairwise distances; eps keeps the zero self-distance differentiable."""
  diff = points[..., :, None, :] - points[..., None, :, :]
  return jnp.sqrt(EPSILON + jnp.sum(jnp.square(diff), axis=-1))


def lddt(predicted_points: jax.Array, true_points: jax.Array, true_points_mask: jax.Array,
         cutoff: float = 15.0, per_residue: bool = False) -> jax.Array:
  """AlphaFold's approximate lDDT of predicted points against true points.

  Args:
    predicted_points: [..., N, 3] predicted coordinates (Å).
    true_points: [..., N, 3] true coordinates (Å).
    true_points_mask: [..., N, 1] 1 where the true point exists (float or bool).
    cutoff: pairs further apart than this in the true structure are not scored (Å).
    per_residue: score each point over its own pairs instead of all pairs together.

  Returns:
    [...] one score per structure, or [..., N] per point with `per_residue`. The global
    score is the mean over all scored pairs, not the mean of the per-point scores. A point
    (or structure) with no scored pair gets 1e-10 / 1e-10 = 1, as in AlphaFold.
  """
  if predicted_points.shape[-1] != 3 or true_points.shape != predicted_points.shape:
    raise ValueError(f'points must both be [..., N, 3]: got {predicted_points.shape} and '
                     f'{true_points.shape}')
  if true_points_mask.shape != true_points.shape[:-1] + (1,):
    raise ValueError(f'true_points_mask must be [..., N, 1] = {true_points.shape[:-1] + (1,)}, '
                     f'got {true_points_mask.shape}')
  mask = true_points_mask.astype(jnp.float32)
  dmat_true = _distances(true_points)
  dmat_predicted = _distances(predicted_points)
  num_points = true_points.shape[-2]
  dists_to_score = ((dmat_true < cutoff).astype(jnp.float32) * mask
                    * jnp.swapaxes(mask, -1, -2) * (1.0 - jnp.eye(num_points)))
  dist_l1 = jnp.abs(dmat_true - dmat_predicted)
  score = 0.25 * sum((dist_l1 < t).astype(jnp.float32) for t in THRESHOLDS)
  axes = (-1,) if per_residue else (-2, -1)
  norm = 1.0 / (EPSILON + jnp.sum(dists_to_score, axis=axes))
  return norm * (EPSILON + jnp.sum(dists_to_score * score, axis=axes))


def lddt_ca(predicted_positions: jax.Array, true_positions: jax.Array, true_mask: jax.Array,
            cutoff: float = 15.0, per_residue: bool = False) -> jax.Array:
  """lDDT-Cα from atom37 coordinates: [..., N, 37, 3] twice and mask [..., N, 37] -> as `lddt`."""
  ca = residue_constants.atom_order['CA']
  return lddt(predicted_positions[..., ca, :], true_positions[..., ca, :],
              true_mask[..., ca:ca + 1], cutoff=cutoff, per_residue=per_residue)
