"""Structure-quality metrics for validation: Cα RMSD, GDT-TS / GDT-HA, drmsd and lDDT-Cα.

AlphaFold2 scores structures by lDDT-Cα with a 15 Å inclusion radius (Jumper et al. (2021)
Suppl. 1.9.6, the target of pLDDT); OpenFold's training loop (`train_openfold.py`,
`_compute_validation_metrics`) validates with lDDT-Cα, drmsd-Cα, the Cα RMSD after
superposition and GDT-TS / GDT-HA. Every metric here reads one chain (no batch axis),
N = N_res:

  * `kabsch` / `superimpose` / `rmsd`: the proper rotation (det +1, reflections excluded) and
    translation that minimise the (weighted) RMSD, by SVD of the 3x3 covariance matrix.
  * `drmsd`: OpenFold's `validation_metrics.drmsd`, sqrt(sum over ordered pairs i != j of
    (|p_i - p_j| - |x_i - x_j|)^2 / (n (n - 1))), 0 for n <= 1.
  * `gdt`: the mean over cutoffs of the largest fraction of resolved Cα within the cutoff
    (d <= cutoff) after a superposition. Two superposition rules:
      - `search=True` (default), an iterative search in the manner of LGA (Zemla 2003) and of
        the TM-score program (Zhang & Skolnick 2004): a superposition is fitted on every window
        of consecutive resolved residues (lengths 4, 8, 16, ... and the whole chain), then
        refitted on the residues within the cutoff (at least the 3 closest), 8 fits per seed in
        all; every fitted superposition is a candidate and the best one counts, per cutoff.
        The whole-chain seed makes the result never lower than the single superposition's.
        Like LGA's, the search is a heuristic: a lower bound of the exact maximum over all
        superpositions. OpenFold's validation does not search.
      - `search=False`, OpenFold's rule: one least-squares superposition on all resolved Cα
        (`utils/superimposition.superimpose`), then `validation_metrics.gdt`.
  * lDDT-Cα: `jaxfold.loss.lddt.lddt` on Cα atoms, 15 Å radius (AlphaFold's `lddt`).

`chain_metrics` computes all of them from atom37 coordinates; `average` takes the unweighted
mean over chains. Pure jax.numpy and jit-able; masked-out residues never contribute, and an
empty mask gives finite values. Gradients: `rmsd` and `drmsd` are differentiable with finite
gradients (the optimal superposition is held fixed, which is exact at the optimum); `gdt` is
piecewise constant and does not propagate gradients.
"""

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.loss.lddt import lddt

_HIGHEST = jax.lax.Precision.HIGHEST
# AlphaFold's epsilons: inside square roots, and added to the denominators of masked means.
_SQRT_EPS = 1e-10
_DIV_EPS = 1e-10

GDT_TS_CUTOFFS = (1., 2., 4., 8.)  # Å
GDT_HA_CUTOFFS = (0.5, 1., 2., 4.)  # Å


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
  """Settings of `chain_metrics`: AlphaFold's lDDT radius, the GDT superposition search."""
  lddt_cutoff: float = 15.  # Å, AlphaFold's lDDT-Cα inclusion radius
  gdt_search: bool = True  # False: OpenFold's single whole-chain superposition
  gdt_min_window: int = 4  # shortest seed window, in resolved residues (TM-score's L_init)
  gdt_window_step: int = 1  # seed windows start every this many resolved residues
  gdt_iterations: int = 8  # superpositions fitted per seed: its own, then refits


def _safe_sqrt(x: jax.Array) -> jax.Array:
  return jnp.sqrt(x + _SQRT_EPS)


def _mask_or_ones(points: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.ones(points.shape[:-1], points.dtype)
  return jnp.asarray(mask, points.dtype)


def kabsch(moving: jax.Array, target: jax.Array,
           mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The rigid motion that best superposes `moving` on `target` in the least-squares sense.

  Kabsch (1976) with the reflection correction: the rotation is proper (det +1) even when a
  mirror image would fit better.

  Args:
    moving: [N, 3] points to move.
    target: [N, 3] points to fit.
    mask: [..., N] weights (1 for points that count, 0 for the rest), one superposition per
      leading index; None: all points.

  Returns:
    rotation [..., 3, 3] and translation [..., 3] with target ≈ moving @ rotation.T +
    translation. With fewer than 3 (non-collinear) weighted points the rotation is one of the
    optimal ones.
  """
  weights = _mask_or_ones(moving, mask)
  # Centred first on the centroids of all weighted points, so that the covariances below,
  # sums of products, lose no precision to coordinates far from the origin.
  union = jnp.sum(weights.reshape((-1,) + weights.shape[-1:]), axis=0)
  moving_origin = jnp.einsum('n,ni->i', union, moving, precision=_HIGHEST) / (
      _DIV_EPS + jnp.sum(union))
  target_origin = jnp.einsum('n,ni->i', union, target, precision=_HIGHEST) / (
      _DIV_EPS + jnp.sum(union))
  moving, target = moving - moving_origin, target - target_origin
  norm = (_DIV_EPS + jnp.sum(weights, axis=-1))[..., None]
  moving_mean = jnp.einsum('...n,ni->...i', weights, moving, precision=_HIGHEST) / norm
  target_mean = jnp.einsum('...n,ni->...i', weights, target, precision=_HIGHEST) / norm
  # One matrix product over the points for every set of weights.
  products = (moving[:, :, None] * target[:, None, :]).reshape(-1, 9)
  covariance = (jnp.einsum('...n,nk->...k', weights, products, precision=_HIGHEST).reshape(
      weights.shape[:-1] + (3, 3)) - norm[..., None] * moving_mean[..., :, None] *
                target_mean[..., None, :])
  u, _, vt = jnp.linalg.svd(covariance)
  # Flip the least significant axis when U V^T is a reflection.
  sign = jnp.where(jnp.linalg.det(u) * jnp.linalg.det(vt) < 0., -1., 1.)
  correction = jnp.stack([jnp.ones_like(sign), jnp.ones_like(sign), sign], axis=-1)
  rotation = jnp.einsum('...ki,...k,...jk->...ij', vt, correction, u, precision=_HIGHEST)
  translation = (target_mean + target_origin - jnp.einsum(
      '...ij,...j->...i', rotation, moving_mean + moving_origin, precision=_HIGHEST))
  return rotation, translation


def _squared_distances(rotation: jax.Array, translation: jax.Array, moving: jax.Array,
                       target: jax.Array) -> jax.Array:
  """|rotation @ moving_n + translation - target_n|^2 for rotations [..., 3, 3], translations
  [..., 3] and points [N, 3]: [..., N].

  Written component by component so that XLA fuses it into one loop over [..., N].
  """
  total = 0.
  for i in range(3):
    component = translation[..., i, None] - target[:, i]
    for j in range(3):
      component = component + rotation[..., i, j, None] * moving[:, j]
    total = total + component ** 2
  return total


def superimpose(moving: jax.Array, target: jax.Array,
                mask: jax.Array | None = None) -> jax.Array:
  """`moving` [N, 3] after the rigid motion of `kabsch` fitted on the masked points: [N, 3]."""
  rotation, translation = kabsch(moving, target, mask)
  return jnp.einsum('ij,nj->ni', rotation, moving, precision=_HIGHEST) + translation


def rmsd(predicted_points: jax.Array, true_points: jax.Array,
         mask: jax.Array | None = None) -> jax.Array:
  """RMSD (Å) between masked points after optimal superposition of the prediction: [].

  Args:
    predicted_points: [N, 3].
    true_points: [N, 3].
    mask: [N] 1 for resolved points; None: all.
  """
  weights = _mask_or_ones(predicted_points, mask)
  # The gradient with the superposition held fixed is the exact gradient of the minimum
  # (envelope theorem), and avoids differentiating the SVD at degenerate singular values.
  rotation, translation = jax.lax.stop_gradient(kabsch(predicted_points, true_points, weights))
  squared = _squared_distances(rotation, translation, predicted_points, true_points)
  return _safe_sqrt(jnp.sum(weights * squared) / (_DIV_EPS + jnp.sum(weights)))


def _distance_matrix(points: jax.Array) -> jax.Array:
  return _safe_sqrt(jnp.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=-1))


def drmsd(predicted_points: jax.Array, true_points: jax.Array,
          mask: jax.Array | None = None) -> jax.Array:
  """Distance RMSD (Å) over ordered pairs of masked points, OpenFold's formula: [].

  Args:
    predicted_points: [N, 3].
    true_points: [N, 3].
    mask: [N] 1 for resolved points; None: all.
  """
  weights = _mask_or_ones(predicted_points, mask)
  difference = _distance_matrix(predicted_points) - _distance_matrix(true_points)
  pair_weights = weights[:, None] * weights[None, :]
  n = jnp.sum(weights)
  # The diagonal contributes 0, so n <= 1 gives 0 / 1.
  return _safe_sqrt(jnp.sum(pair_weights * difference ** 2) / jnp.maximum(n * (n - 1.), 1.))


def _seed_windows(num_res: int, min_window: int, step: int) -> tuple[np.ndarray, np.ndarray]:
  """Window starts and lengths [S] over resolved-residue ranks, the whole chain first.

  Windows of min_window, 2 min_window, 4 min_window, ... residues at every `step`-th start.
  """
  starts, lengths = [0], [num_res]
  length = min_window
  while length < num_res:
    for start in range(0, num_res - length + 1, step):
      starts.append(start)
      lengths.append(length)
    length *= 2
  return np.asarray(starts, np.int32), np.asarray(lengths, np.int32)


def _third_smallest(values: jax.Array) -> jax.Array:
  """Along the last axis, the third smallest distinct value (inf when there is none): [...].

  Three passes of min, which XLA runs far faster than top_k next to a fused producer.
  """
  for _ in range(2):
    values = jnp.where(values <= jnp.min(values, axis=-1, keepdims=True), jnp.inf, values)
  return jnp.min(values, axis=-1)


def _searched_counts(predicted_points: jax.Array, true_points: jax.Array, weights: jax.Array,
                     cutoffs: jax.Array, min_window: int, step: int,
                     iterations: int) -> jax.Array:
  """Per cutoff [C], the most masked points within it over the searched superpositions."""
  num_res = predicted_points.shape[0]
  starts, lengths = _seed_windows(num_res, min_window, step)
  rank = jnp.cumsum(weights) - 1.
  ends = (starts + lengths)[:, None]
  windows = weights * ((rank >= starts[:, None]) & (rank < ends))  # [S, N]
  # Windows that run past the last resolved residue become the whole-chain seed, so that
  # padding and masked-out residues leave the searched superpositions unchanged.
  seeds = jnp.where(ends <= jnp.sum(weights), windows, weights)

  def search(cutoff):
    def refit(subset, _):
      distance = jnp.sqrt(_squared_distances(*kabsch(predicted_points, true_points, subset),
                                             predicted_points, true_points))  # [S, N]
      distance = jnp.where(weights > 0., distance, jnp.inf)
      count = jnp.sum(distance <= cutoff, axis=-1)
      # At least the 3 closest points, so that the refit stays defined.
      threshold = jnp.maximum(cutoff, _third_smallest(distance))
      return weights * (distance <= threshold[:, None]), jnp.max(count)
    return jnp.max(jax.lax.scan(refit, seeds, None, length=iterations)[1])

  return jax.lax.map(search, cutoffs)


def gdt_fractions(predicted_points: jax.Array, true_points: jax.Array,
                  mask: jax.Array | None, cutoffs: Sequence[float], search: bool = True,
                  min_window: int = 4, window_step: int = 1, iterations: int = 8) -> jax.Array:
  """Per cutoff, the fraction of masked points within it after superposition: [C].

  Args:
    predicted_points: [N, 3] (Cα).
    true_points: [N, 3].
    mask: [N] 1 for resolved points (the denominator counts them); None: all.
    cutoffs: C distances in Å; a point counts when its distance is <= the cutoff.
    search: True: the best of the iterative window-seeded superpositions, per cutoff (see the
      module docstring); False: OpenFold's one least-squares superposition on all points.
    min_window: the shortest seed window (search only).
    window_step: seed windows start every this many resolved residues (search only).
    iterations: superpositions fitted per seed, its own then refits (search only).
  """
  predicted_points = jax.lax.stop_gradient(predicted_points)
  true_points = jax.lax.stop_gradient(true_points)
  weights = _mask_or_ones(predicted_points, mask)
  cutoff_array = jnp.asarray(cutoffs, predicted_points.dtype)
  if search:
    counts = _searched_counts(predicted_points, true_points, weights, cutoff_array,
                              min_window, window_step, iterations)
  else:
    distance = jnp.sqrt(_squared_distances(*kabsch(predicted_points, true_points, weights),
                                           predicted_points, true_points))
    counts = jnp.sum(weights * (distance <= cutoff_array[:, None]), axis=-1)
  return counts / (_DIV_EPS + jnp.sum(weights))


def gdt(predicted_points: jax.Array, true_points: jax.Array, mask: jax.Array | None = None,
        cutoffs: Sequence[float] = GDT_TS_CUTOFFS, **kwargs) -> jax.Array:
  """Global distance test, the mean of `gdt_fractions` over `cutoffs`: []; kwargs as its."""
  return jnp.mean(gdt_fractions(predicted_points, true_points, mask, cutoffs, **kwargs))


def gdt_ts(predicted_points: jax.Array, true_points: jax.Array,
           mask: jax.Array | None = None, **kwargs) -> jax.Array:
  """GDT-TS: `gdt` at 1, 2, 4 and 8 Å; kwargs as `gdt`'s."""
  return gdt(predicted_points, true_points, mask, GDT_TS_CUTOFFS, **kwargs)


def gdt_ha(predicted_points: jax.Array, true_points: jax.Array,
           mask: jax.Array | None = None, **kwargs) -> jax.Array:
  """GDT-HA: `gdt` at 0.5, 1, 2 and 4 Å; kwargs as `gdt`'s."""
  return gdt(predicted_points, true_points, mask, GDT_HA_CUTOFFS, **kwargs)


@functools.partial(jax.jit, static_argnames='config')
def chain_metrics(pred_atom37: jax.Array, true_atom37: jax.Array, atom37_mask: jax.Array,
                  config: MetricsConfig = MetricsConfig()) -> dict[str, jax.Array]:
  """Every metric of one chain, on its Cα atoms.

  Args:
    pred_atom37: [N, 37, 3] predicted atom positions (e.g. 'final_atom_positions').
    true_atom37: [N, 37, 3] experimental positions ('all_atom_positions').
    atom37_mask: [N, 37] 1 where the experimental atom exists ('all_atom_mask'); its Cα
      column selects the residues scored.
    config: the metric settings.

  Returns:
    Scalars: 'lddt_ca', 'rmsd_ca' (Å, after superposition), 'gdt_ts', 'gdt_ha', 'drmsd_ca' (Å),
    and 'num_ca', the number of resolved Cα.
  """
  ca = rc.atom_order['CA']
  pred, true = pred_atom37[:, ca].astype(jnp.float32), true_atom37[:, ca].astype(jnp.float32)
  mask = atom37_mask[:, ca].astype(jnp.float32)
  gdt_options = dict(search=config.gdt_search, min_window=config.gdt_min_window,
                     window_step=config.gdt_window_step, iterations=config.gdt_iterations)
  # Both GDTs from one search over the union of their cutoffs.
  cutoffs = sorted(set(GDT_TS_CUTOFFS) | set(GDT_HA_CUTOFFS))
  fractions = dict(zip(cutoffs, gdt_fractions(pred, true, mask, cutoffs, **gdt_options)))
  return {
      'lddt_ca': lddt(pred, true, mask[:, None], cutoff=config.lddt_cutoff, per_residue=False),
      'rmsd_ca': rmsd(pred, true, mask),
      'gdt_ts': jnp.mean(jnp.stack([fractions[c] for c in GDT_TS_CUTOFFS])),
      'gdt_ha': jnp.mean(jnp.stack([fractions[c] for c in GDT_HA_CUTOFFS])),
      'drmsd_ca': drmsd(pred, true, mask),
      'num_ca': jnp.sum(mask),
  }


def average(per_chain: Sequence[Mapping[str, jax.Array]]) -> dict[str, jax.Array]:
  """The unweighted mean over chains of every metric of `chain_metrics`.

  Args:
    per_chain: one `chain_metrics` dict per chain; chains without a resolved Cα are skipped.

  Returns:
    The mean of each metric (0 when no chain counts) and 'num_chains', the chains averaged.
  """
  if not per_chain:
    raise ValueError('average: no chains given')
  names = sorted(set(per_chain[0]) - {'num_ca'})
  for index, chain in enumerate(per_chain):
    if set(chain) != set(per_chain[0]):
      raise KeyError(f'average: chain {index} has metrics {sorted(chain)}, chain 0 has '
                     f'{sorted(per_chain[0])}')
  counted = jnp.stack([jnp.asarray(m['num_ca']) > 0 for m in per_chain]).astype(jnp.float32)
  num_chains = jnp.sum(counted)
  averaged = {
      name: jnp.sum(counted * jnp.stack([jnp.asarray(m[name], jnp.float32) for m in per_chain]))
      / jnp.maximum(num_chains, 1.) for name in names}
  averaged['num_chains'] = num_chains
  return averaged
