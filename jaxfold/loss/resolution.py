"""The resolution filter of the confidence-head losses (Jumper et al. (2021) Suppl. 1.9.6,
1.9.7, 1.9.10): they train only on structures whose resolution lies in [min, max] Å (NMR and
distillation examples carry resolution 0)."""

import jax
import jax.numpy as jnp


def resolution_weight(resolution: jax.Array, config) -> jax.Array:
  """[] 1.0 where `config` (filter_by_resolution, min_resolution, max_resolution) keeps the
  structure, else 0.0."""
  if not config.filter_by_resolution:
    return jnp.float32(1.0)
  return ((resolution >= config.min_resolution)
          & (resolution <= config.max_resolution)).astype(jnp.float32)
