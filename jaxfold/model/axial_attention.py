"""Gated self-attention along the second axis of a 3-D representation, optionally pair-biased.

The shared core of Jumper et al. (2021) Suppl. Alg. 7 'MSARowAttentionWithPairBias',
Alg. 8 'MSAColumnAttention', Alg. 13 'TriangleAttentionStartingNode' and Alg. 14
'TriangleAttentionEndingNode': each row of an [A, B, C] tensor attends over its B entries
with a key mask, and an optional per-head bias [heads, B, B] projected from a pair
representation. Column variants read their input by columns (`axis=1`), a chunk at a time
when chunked, so the whole input is never transposed.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.attention import Attention
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import chunked, mask_to_bias


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


def pair_bias(module: nn.Module, pair: jax.Array, num_head: int, norm: nn.Module,
              global_config: GlobalConfig, axis: int = 0) -> jax.Array:
  """Per-head attention bias [heads, N_res, N_res] from the pair [N_res, N_res, c_z].

  The pair is normalised by `norm` (a LayerNorm submodule) and projected by `module`'s
  `feat_2d_weights` [c_z, heads] (AlphaFold's name and N(0, 1/c_z) init). axis=1 reads
  the pair transposed (the ending-node bias). With `global_config.pair_chunk_size` the
  rows are normalised and projected a chunk at a time.
  """
  channels = pair.shape[-1]
  weights = module.param('feat_2d_weights', nn.initializers.normal(stddev=channels**-0.5),
                         (channels, num_head), jnp.float32)

  def rows(_, pair_rows: jax.Array) -> jax.Array:
    return jnp.einsum('qkc,ch->qkh', norm(pair_rows), weights.astype(pair.dtype))

  bias = chunked(module, rows, global_config.pair_chunk_size, [pair], axis=axis, out_axis=0)
  return jnp.moveaxis(bias, -1, 0)


def attend_along_rows(module: nn.Module, act: jax.Array, mask: jax.Array,
                      config: AttentionConfig, global_config: GlobalConfig, norm: nn.Module,
                      nonbatched_bias: jax.Array | None = None, axis: int = 0,
                      add_to_input: bool = False) -> jax.Array:
  """Update [A, B, C] of act [A, B, C] whose rows, normalised by `norm`, attend over B.

  mask [A, B] masks keys; nonbatched_bias [heads, B, B] is shared by all rows. axis=1
  attends along columns instead (act read transposed, the update written back in act's
  layout). With `global_config.subbatch_size` the rows are normalised and attend a chunk
  at a time. With `add_to_input`, returns act + update, added in place chunk by chunk (the
  bias must then be computed beforehand). Creates the 'attention' submodule of `module`
  (call inside a compact method).
  """
  attention = Attention(num_head=config.num_head, output_dim=act.shape[-1],
                        key_dim=config.key_dim, value_dim=config.value_dim,
                        gating=config.gating,
                        global_config=dataclasses.replace(global_config, subbatch_size=None),
                        name='attention')

  def rows(_, act_rows: jax.Array, mask_rows: jax.Array) -> jax.Array:
    normed = norm(act_rows)
    bias = mask_to_bias(mask_rows, act_rows.dtype)[:, None, None, :]
    update = attention(normed, normed, bias, nonbatched_bias)
    return act_rows + update if add_to_input else update

  return chunked(module, rows, global_config.subbatch_size, [act, mask], axis=axis,
                 in_place=add_to_input)
