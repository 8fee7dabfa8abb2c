"""Gated multi-head attention with pair bias, and global attention.

Jumper et al. (2021) Suppl. Alg. 7 lines 2-7 (the attention core shared by MSA row,
MSA column and triangle attention) and Suppl. Alg. 19 lines 2-7 (global attention).
Parameter names and shapes are AlphaFold's: `query_w` [C_q, heads, c], `output_w`
[heads, c, C_out], gates `gating_w` / `gating_b`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model import attention_core
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import chunked, glorot_uniform, mask_to_bias


def _zeros_or_glorot(gc: GlobalConfig):
  return nn.initializers.zeros if gc.zero_init else glorot_uniform


class Attention(nn.Module):
  """Gated multi-head attention (Suppl. Alg. 7 lines 2-7).

  Inputs: q_data [B, Q, C_q], m_data [B, K, C_m], bias broadcastable to
  [B, heads, Q, K] (e.g. a mask bias [B, 1, 1, K]), nonbatched_bias [heads, Q, K] or None. Output [B, Q, output_dim].
  With `global_config.subbatch_size` set, the batch axis B is processed in chunks;
  `global_config.attention` chooses the core's implementation (`attention_core`).
  """
  num_head: int
  output_dim: int
  key_dim: int | None = None    # total over heads; defaults to C_q
  value_dim: int | None = None  # total over heads; defaults to C_m
  gating: bool = True
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, q_data: jax.Array, m_data: jax.Array, bias: jax.Array,
               nonbatched_bias: jax.Array | None = None) -> jax.Array:
    gc = self.global_config
    key_dim = (self.key_dim or q_data.shape[-1]) // self.num_head
    value_dim = (self.value_dim or m_data.shape[-1]) // self.num_head
    h, f32 = self.num_head, jnp.float32
    params = {
        'query_w': self.param('query_w', glorot_uniform, (q_data.shape[-1], h, key_dim), f32),
        'key_w': self.param('key_w', glorot_uniform, (m_data.shape[-1], h, key_dim), f32),
        'value_w': self.param('value_w', glorot_uniform, (m_data.shape[-1], h, value_dim), f32),
    }
    if self.gating:
      params['gating_w'] = self.param('gating_w', nn.initializers.zeros,
                                      (q_data.shape[-1], h, value_dim), f32)
      params['gating_b'] = self.param('gating_b', nn.initializers.ones, (h, value_dim), f32)
    params['output_w'] = self.param('output_w', _zeros_or_glorot(gc),
                                    (h, value_dim, self.output_dim), f32)
    params['output_b'] = self.param('output_b', nn.initializers.zeros, (self.output_dim,), f32)
    params = jax.tree.map(lambda p: p.astype(q_data.dtype), params)

    def attend(_, q_data, m_data, bias):
      q = jnp.einsum('bqa,ahc->bqhc', q_data, params['query_w']) * key_dim**-0.5
      k = jnp.einsum('bka,ahc->bkhc', m_data, params['key_w'])
      v = jnp.einsum('bka,ahc->bkhc', m_data, params['value_w'])
      biases = [bias] if nonbatched_bias is None else [bias, nonbatched_bias[None]]
      out = attention_core.attention(q, k, v, biases, implementation=gc.attention,
                                     chunk_size=gc.attention_chunk_size)
      if self.gating:
        gate = jnp.einsum('bqc,chv->bqhv', q_data, params['gating_w']) + params['gating_b']
        out = out * jax.nn.sigmoid(gate)
      return jnp.einsum('bqhc,hco->bqo', out, params['output_w']) + params['output_b']

    return chunked(self, attend, gc.subbatch_size, [q_data, m_data, bias])


class GlobalAttention(nn.Module):
  """Global gated attention: one mean query per column (Suppl. Alg. 19 lines 2-7).

  Inputs: q_data [B, Q, C], m_data [B, K, C], q_mask [B, Q, 1] (1 = real, 0 = padding).
  Keys and values are shared across heads (`key_w` [C, c], `value_w` [C, c]).
  Output [B, Q, output_dim].
  """
  num_head: int
  output_dim: int
  key_dim: int | None = None
  value_dim: int | None = None
  gating: bool = True
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, q_data: jax.Array, m_data: jax.Array, q_mask: jax.Array) -> jax.Array:
    gc = self.global_config
    key_dim = (self.key_dim or q_data.shape[-1]) // self.num_head
    value_dim = (self.value_dim or m_data.shape[-1]) // self.num_head
    h, f32 = self.num_head, jnp.float32
    params = {
        'query_w': self.param('query_w', glorot_uniform, (q_data.shape[-1], h, key_dim), f32),
        'key_w': self.param('key_w', glorot_uniform, (m_data.shape[-1], key_dim), f32),
        'value_w': self.param('value_w', glorot_uniform, (m_data.shape[-1], value_dim), f32),
        'output_w': self.param('output_w', _zeros_or_glorot(gc),
                               (h, value_dim, self.output_dim), f32),
        'output_b': self.param('output_b', nn.initializers.zeros, (self.output_dim,), f32),
    }
    if self.gating:
      params['gating_w'] = self.param('gating_w', nn.initializers.zeros,
                                      (q_data.shape[-1], h, value_dim), f32)
      params['gating_b'] = self.param('gating_b', nn.initializers.ones, (h, value_dim), f32)
    params = jax.tree.map(lambda p: p.astype(q_data.dtype), params)

    def attend(_, q_data, m_data, q_mask):
      mask = jnp.broadcast_to(q_mask, q_data.shape).astype(q_data.dtype)
      q_avg = jnp.sum(mask * q_data, axis=1) / (jnp.sum(mask, axis=1) + 1e-10)
      q = jnp.einsum('ba,ahc->bhc', q_avg, params['query_w']) * key_dim**-0.5
      k = jnp.einsum('bka,ac->bkc', m_data, params['key_w'])
      v = jnp.einsum('bka,ac->bkc', m_data, params['value_w'])
      bias = mask_to_bias(q_mask[:, None, :, 0], q_data.dtype)
      logits = jnp.einsum('bhc,bkc->bhk', q, k) + bias
      clip = attention_core.LOGIT_CLIP
      weights = jax.nn.softmax(jnp.clip(logits, -clip, clip))
      avg = jnp.einsum('bhk,bkc->bhc', weights, v)
      if self.gating:
        gate = jax.nn.sigmoid(
            jnp.einsum('bqc,chv->bqhv', q_data, params['gating_w']) + params['gating_b'])
        return jnp.einsum('bqhc,hco->bqo', avg[:, None] * gate,
                          params['output_w']) + params['output_b']
      out = jnp.einsum('bhc,hco->bo', avg, params['output_w']) + params['output_b']
      return out[:, None]

    return chunked(self, attend, gc.subbatch_size, [q_data, m_data, q_mask])
