"""Outer product mean: the MSA's update to the pair representation.

Jumper et al. (2021) Suppl. Alg. 10 'OuterProductMean'.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear, chunked, fan_in_initializer

# AlphaFold's constant in the mean's denominator (eps + number of sequences covering i and j).
_NORM_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class OuterProductMeanConfig:
  """AlphaFold's `outer_product_mean` config.

  first: run before the MSA row attention instead of after the MSA transition (AlphaFold's
    monomer models: after). chunk_size: residues of the left side per chunk, used when
    `global_config.subbatch_size` is set (memory-bounded mode).
  """
  chunk_size: int = 128
  dropout_rate: float = 0.0
  first: bool = False
  num_outer_channel: int = 32
  orientation: Literal['per_row', 'per_column'] = 'per_row'
  shared_dropout: bool = True


class OuterProductMean(nn.Module):
  """Mean over sequences of the outer product of two projections of the MSA (Suppl. Alg. 10).

  Inputs: msa [N_seq, N_res, c_m], msa_mask [N_seq, N_res]. Output: pair update
  [N_res, N_res, num_output_channel]; the mean is AlphaFold's masked one, a sum divided by
  (1e-3 + number of sequences where both residues are present). With `add_to` (a pair of
  that shape), returns add_to + update instead, added in place chunk by chunk when chunked.
  """
  num_output_channel: int
  config: OuterProductMeanConfig = OuterProductMeanConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array, msa_mask: jax.Array, add_to: jax.Array | None = None
               ) -> jax.Array:
    c, gc = self.config, self.global_config
    mask = msa_mask[..., None].astype(msa.dtype)
    msa = LayerNorm(name='layer_norm_input')(msa)
    left = mask * Linear(c.num_outer_channel, name='left_projection')(msa)
    right = mask * Linear(c.num_outer_channel, name='right_projection')(msa)
    output_w = self.param('output_w',
                          fan_in_initializer('zeros' if gc.zero_init else 'relu',
                                             (c.num_outer_channel, c.num_outer_channel)),
                          (c.num_outer_channel, c.num_outer_channel, self.num_output_channel),
                          jnp.float32)
    output_b = self.param('output_b', nn.initializers.zeros, (self.num_output_channel,),
                          jnp.float32)

    def rows_of_update(_, left_res: jax.Array, mask_res: jax.Array) -> jax.Array:
      # left_res [n_i, N_seq, c], mask_res [n_i, N_seq]: a slice of residues i. The sum over
      # sequences and the projection by output_w run in float32 whatever the activations'
      # dtype, and so does the division by the number of sequences covering i and j.
      outer = jnp.einsum('ias,ajt->ijst', left_res, right, preferred_element_type=jnp.float32)
      update = jnp.einsum('ijst,stf->ijf', outer, output_w) + output_b
      norm = jnp.einsum('ia,aj->ij', mask_res, mask[..., 0], preferred_element_type=jnp.float32)
      return (update / (_NORM_EPSILON + norm[..., None])).astype(msa.dtype)

    chunk_size = c.chunk_size if gc.subbatch_size is not None else None
    if add_to is None:
      return chunked(self, rows_of_update, chunk_size, [left, mask[..., 0]], axis=1, out_axis=0)
    return chunked(self, lambda mdl, pair, *rest: pair + rows_of_update(mdl, *rest), chunk_size,
                   [add_to, left, mask[..., 0]], axis=(0, 1, 1), in_place=True)
