"""Gated self-attention along the second axis of a 3-D representation, optionally pair-biased.

The shared core of Jumper et al. (2021) Suppl. Alg. 7 'MSARowAttentionWithPairBias',
Alg. 8 'MSAColumnAttention', Alg. 13 'TriangleAttentionStartingNode' and Alg. 14
'TriangleAttentionEndingNode': each row of an [A, B, C] tensor attends over its B entries
with a key mask, and an optional per-head bias [heads, B, B] projected from a pair
representation. Column variants transpose their input first.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.attention import Attention
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import mask_to_bias


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
  """AlphaFold's config of an MSA or triangle attention module.

  Defaults are the Evoformer's `msa_row_attention_with_pair_bias`. `key_dim` / `value_dim`
  are totals over heads; None means the input's channel count (AlphaFold's default).
  """
  dropout_rate: float = 0.15
  gating: bool = True
  num_head: int = 8
  orientation: Literal['per_row', 'per_column'] = 'per_row'
  shared_dropout: bool = True
  key_dim: int | None = None
  value_dim: int | None = None


def pair_bias(module: nn.Module, pair: jax.Array, num_head: int) -> jax.Array:
  """Per-head attention bias [heads, N_res, N_res] from a normalised pair [N_res, N_res, c_z].

  Creates `module`'s `feat_2d_weights` [c_z, heads] (AlphaFold's name and N(0, 1/c_z) init).
  """
  channels = pair.shape[-1]
  weights = module.param('feat_2d_weights', nn.initializers.normal(stddev=channels**-0.5),
                         (channels, num_head), jnp.float32)
  return jnp.einsum('qkc,ch->hqk', pair, weights.astype(pair.dtype))


def attend_along_rows(act: jax.Array, mask: jax.Array, config: AttentionConfig,
                      global_config: GlobalConfig,
                      nonbatched_bias: jax.Array | None = None) -> jax.Array:
  """Update [A, B, C] of a normalised act [A, B, C] whose rows attend over B.

  mask [A, B] masks keys; nonbatched_bias [heads, B, B] is shared by all rows. Creates the
  'attention' submodule of the calling module (call inside a compact method).
  """
  bias = mask_to_bias(mask, act.dtype)[:, None, None, :]
  attention = Attention(num_head=config.num_head, output_dim=act.shape[-1],
                        key_dim=config.key_dim, value_dim=config.value_dim,
                        gating=config.gating, global_config=global_config, name='attention')
  return attention(act, act, bias, nonbatched_bias)
