"""Attention within the MSA representation: along rows with pair bias, along columns, global.

Jumper et al. (2021) Suppl. Alg. 7 'MSARowAttentionWithPairBias', Alg. 8
'MSAColumnAttention' and Alg. 19 'MSAColumnGlobalAttention' (the extra-MSA stack's).
Each returns the update to the MSA [N_seq, N_res, c_m]; the caller adds it with dropout.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.attention import GlobalAttention
from jaxfold.model.axial_attention import AttentionConfig, attend_along_rows, pair_bias
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm

COLUMN_ATTENTION = AttentionConfig(dropout_rate=0.0, orientation='per_column')


class MSARowAttentionWithPairBias(nn.Module):
  """Each MSA row attends over residues, biased by the pair (Suppl. Alg. 7).

  Inputs: msa [N_seq, N_res, c_m], msa_mask [N_seq, N_res], pair [N_res, N_res, c_z].
  Output: update [N_seq, N_res, c_m].
  """
  config: AttentionConfig = AttentionConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array, msa_mask: jax.Array, pair: jax.Array) -> jax.Array:
    gc = self.global_config
    bias = pair_bias(self, pair, self.config.num_head, LayerNorm(name='feat_2d_norm'), gc)
    return attend_along_rows(self, msa, msa_mask, self.config, gc,
                             LayerNorm(name='query_norm'), bias)


class MSAColumnAttention(nn.Module):
  """Each MSA column attends over sequences (Suppl. Alg. 8).

  Inputs: msa [N_seq, N_res, c_m], msa_mask [N_seq, N_res]. Output: update [N_seq, N_res, c_m].
  """
  config: AttentionConfig = COLUMN_ATTENTION
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array, msa_mask: jax.Array) -> jax.Array:
    return attend_along_rows(self, msa, msa_mask, self.config, self.global_config,
                             LayerNorm(name='query_norm'), axis=1)


class MSAColumnGlobalAttention(nn.Module):
  """Each MSA column attends over sequences with one averaged query (Suppl. Alg. 19).

  Inputs: msa [N_seq, N_res, c_m], msa_mask [N_seq, N_res]. Output: update [N_seq, N_res, c_m].
  """
  config: AttentionConfig = COLUMN_ATTENTION
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array, msa_mask: jax.Array) -> jax.Array:
    msa, msa_mask = jnp.swapaxes(msa, 0, 1), jnp.swapaxes(msa_mask, 0, 1)
    msa = LayerNorm(name='query_norm')(msa)
    attention = GlobalAttention(num_head=self.config.num_head, output_dim=msa.shape[-1],
                                key_dim=self.config.key_dim, value_dim=self.config.value_dim,
                                gating=self.config.gating, global_config=self.global_config,
                                name='attention')
    return jnp.swapaxes(attention(msa, msa, msa_mask[..., None]), 0, 1)
