"""Attention over the edges of the residue graph that share a node.

Jumper et al. (2021) Suppl. Alg. 13 'TriangleAttentionStartingNode' (orientation
'per_row': edge ij attends over edges ik, biased by jk) and Alg. 14
'TriangleAttentionEndingNode' (orientation 'per_column': the same on the transposed pair,
edge ij attends over edges kj, biased by ki).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.axial_attention import AttentionConfig, attend_along_rows, pair_bias
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm

STARTING_NODE = AttentionConfig(dropout_rate=0.25, num_head=4, orientation='per_row')
ENDING_NODE = AttentionConfig(dropout_rate=0.25, num_head=4, orientation='per_column')


class TriangleAttention(nn.Module):
  """Triangle self-attention around the starting or ending node (Suppl. Alg. 13 / 14).

  Inputs: pair [N_res, N_res, c_z], pair_mask [N_res, N_res]. Output: update [N_res, N_res, c_z].
  """
  config: AttentionConfig = STARTING_NODE
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array) -> jax.Array:
    # The ending-node variant is the starting-node one applied to the transposed pair.
    transpose = self.config.orientation == 'per_column'
    if transpose:
      pair, pair_mask = jnp.swapaxes(pair, 0, 1), jnp.swapaxes(pair_mask, 0, 1)
    pair = LayerNorm(name='query_norm')(pair)
    bias = pair_bias(self, pair, self.config.num_head)
    update = attend_along_rows(pair, pair_mask, self.config, self.global_config, bias)
    return jnp.swapaxes(update, 0, 1) if transpose else update
