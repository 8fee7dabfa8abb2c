"""Distogram loss, Jumper et al. (2021) Suppl. 1.9.8 'Distogram prediction'.

The true Cβ-Cβ distance of every residue pair (Cα for glycine: `pseudo_beta`) falls into
one of `num_bins` bins; the loss is the cross entropy of the distogram head's logits
[N_res, N_res, num_bins] against that bin, averaged over pairs whose two residues both
have a pseudo-β atom (AlphaFold's `_distogram_log_loss`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class DistogramLossConfig:
  """The loss's denominator epsilon; the bins are the head's (its outputs' 'bin_edges')."""
  eps: float = 1e-6


def distogram_loss(logits: jax.Array, bin_edges: jax.Array, pseudo_beta: jax.Array,
                   pseudo_beta_mask: jax.Array,
                   config: DistogramLossConfig = DistogramLossConfig()) -> jax.Array:
  """Mean cross entropy of the distogram over residue pairs.

  Args:
    logits: [N_res, N_res, num_bins] the distogram head's logits.
    bin_edges: [num_bins - 1] the head's bin edges (Å), increasing.
    pseudo_beta: [N_res, 3] true Cβ positions (Cα for glycine), Å.
    pseudo_beta_mask: [N_res] 1 where the pseudo-β atom is resolved.
    config: the epsilon of the denominator (the bins come with `bin_edges`).

  Returns:
    [] the loss: sum over pairs of mask_i mask_j xent_ij / (eps + sum of mask_i mask_j).
  """
  if logits.shape[-1] != bin_edges.shape[-1] + 1:
    raise ValueError(f'logits have {logits.shape[-1]} bins but bin_edges {bin_edges.shape} '
                     'define one more than its length')
  # Squared distances against squared edges: no square root, so no gradient issue at 0.
  dist2 = jnp.sum(jnp.square(pseudo_beta[:, None, :] - pseudo_beta[None, :, :]), axis=-1)
  true_bins = jnp.sum(dist2[..., None] > jnp.square(bin_edges), axis=-1)
  errors = optax.softmax_cross_entropy_with_integer_labels(logits, true_bins)
  square_mask = pseudo_beta_mask[:, None] * pseudo_beta_mask[None, :]
  return jnp.sum(errors * square_mask) / (config.eps + jnp.sum(square_mask))
