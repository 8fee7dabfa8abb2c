"""Attention over the edges of the residue graph that share a node.

Jumper et al. (2021) Suppl. Alg. 13 'TriangleAttentionStartingNode' (orientation
'per_row': edge ij attends over edges ik, biased by jk) and Alg. 14
'TriangleAttentionEndingNode' (orientation 'per_column': the same on the transposed pair,
edge ij attends over edges kj, biased by ki).
"""

import flax.linen as nn
import jax

from jaxfold.model.axial_attention import AttentionConfig, attend_along_rows, pair_bias
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm

STARTING_NODE = AttentionConfig(dropout_rate=0.25, num_head=4, orientation='per_row')
ENDING_NODE = AttentionConfig(dropout_rate=0.25, num_head=4, orientation='per_column')


class TriangleAttention(nn.Module):
  """Triangle self-attention around the starting or ending node (Suppl. Alg. 13 / 14).

  Inputs: pair [N_res, N_res, c_z], pair_mask [N_res, N_res]. Output: update [N_res, N_res, c_z],
  or pair + update with `add_to_input` (in place, chunk by chunk when chunked).
  """
  config: AttentionConfig = STARTING_NODE
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array, add_to_input: bool = False
               ) -> jax.Array:
    # The ending-node variant is the starting-node one on the transposed pair, read by columns.
    axis = 1 if self.config.orientation == 'per_column' else 0
    norm = LayerNorm(name='query_norm')
    bias = pair_bias(self, pair, self.config.num_head, norm, self.global_config, axis)
    return attend_along_rows(self, pair, pair_mask, self.config, self.global_config, norm,
                             bias, axis, add_to_input)
