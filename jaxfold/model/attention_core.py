"""The attention core softmax(q kᵀ + biases) v, with its implementations as configuration.

Every attention with a pair bias or mask (MSA row and column, triangle and template pointwise
attention: Jumper et al. (2021) Suppl. Alg. 7 lines 4-5) reduces to this core. Logits are
clipped to ±1e8 before the softmax, as in AlphaFold, so a fully masked row (every logit near
-1e9) stays finite and attends uniformly.

Implementations (`GlobalConfig.attention`):
- 'xla': the logits [B, H, Q, K] in one piece; AlphaFold's own ops, the reference.
- 'chunked': queries and keys in chunks of `chunk_size`, the softmax computed online (Rabe &
  Staats 2021, "Self-attention does not need O(n²) memory"; the low-memory attention of
  OpenFold): at most one [B, H, chunk, chunk] block of logits exists at a time, and the
  backward pass recomputes the blocks from the saved row statistics instead of storing them
  (a custom VJP), so it bounds memory in training too. Equal to 'xla' up to rounding.
- 'cudnn': `jax.nn.dot_product_attention`'s fused cuDNN kernel (flash attention with one
  bias: the biases are summed first), on a GPU in bfloat16 or float16. Where that kernel
  cannot run (another backend, float32, shapes it refuses) one warning says why and the same
  call runs XLA's implementation. Its logits are not clipped, so a row whose every key is
  masked is given the clip's result explicitly: the values' mean, with no gradient into the
  logits.
"""

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp

Implementation = Literal['xla', 'chunked', 'cudnn']
IMPLEMENTATIONS: tuple[str, ...] = get_args(Implementation)
LOGIT_CLIP = 1e8


def attention(q: jax.Array, k: jax.Array, v: jax.Array, biases: Sequence[jax.Array], *,
              implementation: Implementation = 'xla', chunk_size: int = 256) -> jax.Array:
  """softmax(clip(q kᵀ + Σ biases)) v over the keys.

  Args:
    q: queries [B, Q, H, C], already scaled.
    k: keys [B, K, H, C]; v: values [B, K, H, D].
    biases: each broadcastable to the logits [B, H, Q, K] (a mask bias [B, 1, 1, K], a pair
      bias [1, H, Q, K]); added in order.
    implementation: 'xla', 'chunked' or 'cudnn' (module docstring).
    chunk_size: the query and key chunk of 'chunked'.
  Returns:
    [B, Q, H, D] in q's dtype.
  """
  if implementation == 'xla':
    logits = jnp.einsum('bqhc,bkhc->bhqk', q, k)
    for bias in biases:
      logits = logits + bias
    weights = jax.nn.softmax(jnp.clip(logits, -LOGIT_CLIP, LOGIT_CLIP))
    return jnp.einsum('bhqk,bkhd->bqhd', weights, v)
  if implementation == 'chunked':
    biases = tuple(jnp.reshape(b, (1,) * (4 - b.ndim) + b.shape) for b in biases)
    return _chunked(min(chunk_size, q.shape[1]), min(chunk_size, k.shape[1]), q, k, v, biases)
  if implementation == 'cudnn':
    return _fused(q, k, v, biases)
  raise ValueError(f'unknown attention implementation {implementation!r}; '
                   f'choose one of {IMPLEMENTATIONS}')


def _fused(q: jax.Array, k: jax.Array, v: jax.Array, biases: Sequence[jax.Array]) -> jax.Array:
  """'cudnn': jax.nn.dot_product_attention with the biases summed into one, cuDNN's kernel
  where it runs, else (one warning) XLA's: that call's, or 'xla' where keys and values differ
  in head size (which the call does not take)."""
  bias = functools.reduce(jnp.add, biases) if biases else None
  attend = functools.partial(jax.nn.dot_product_attention, q, k, v, scale=1.0)
  same_heads = q.shape[-1] == v.shape[-1]
  if not same_heads:
    reason = f'keys and values differ in head size ({q.shape[-1]}, {v.shape[-1]})'
  elif jax.default_backend() != 'gpu':
    reason = f'no GPU (backend {jax.default_backend()})'
  elif q.dtype not in (jnp.bfloat16, jnp.float16):
    reason = f'cuDNN attention runs in bfloat16 or float16, not {q.dtype}'
  else:
    try:
      out = attend(bias=None if bias is None else bias.astype(q.dtype), implementation='cudnn')
      return _masked_rows_uniform(out, v, bias)
    except (NotImplementedError, ValueError, TypeError) as e:  # shapes the kernel refuses
      reason = f'cuDNN refuses these shapes ({e})'
  warnings.warn(f"attention 'cudnn': {reason}; running XLA's implementation instead",
                RuntimeWarning, stacklevel=2)
  if not same_heads:
    return attention(q, k, v, biases, implementation='xla')
  return _masked_rows_uniform(attend(bias=bias, implementation='xla').astype(q.dtype), v, bias)


def _masked_rows_uniform(out: jax.Array, v: jax.Array, bias: jax.Array | None) -> jax.Array:
  """`out` [B, Q, H, D] with each row whose every logit the clip would flatten (every key
  masked) replaced by the mean of the values, as the clipped softmax gives it."""
  if bias is None:
    return out
  dead = jnp.max(bias, axis=-1) <= -LOGIT_CLIP  # [B|1, H|1, Q|1]
  dead = jnp.broadcast_to(dead, (out.shape[0], out.shape[2], out.shape[1]))
  return jnp.where(jnp.swapaxes(dead, 1, 2)[..., None],
                   jnp.mean(v, axis=1, keepdims=True).astype(out.dtype), out)


# ---------------------------------------------------------------------------------------------
# 'chunked': online softmax over key chunks, recomputed in the backward pass.
# ---------------------------------------------------------------------------------------------

def online_softmax_step(top: jax.Array, total: jax.Array, acc: jax.Array, logits: jax.Array,
                        weighted_sum: Callable[[jax.Array], jax.Array]
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One block of keys added to a running softmax-weighted average (float32).

  top, total [...]: the maximum logit so far and the sum of exp(logit - top); acc [..., D]:
  the sum of exp(logit - top) * value. logits [..., K]: the block's logits (-inf for keys
  that are not there); weighted_sum(p [..., K]) -> [..., D]: sum_k p_k value_k. The
  average is acc / total once every block is in.
  """
  new_top = jnp.maximum(top, logits.max(axis=-1))
  p = jnp.exp(logits - new_top[..., None])
  rescale = jnp.exp(top - new_top)
  return new_top, total * rescale + p.sum(axis=-1), acc * rescale[..., None] + weighted_sum(p)


def _pad(x: jax.Array, axis: int, size: int, value: float = 0.0) -> jax.Array:
  """x padded with `value` along `axis` to `size` (an axis of length 1 broadcasts: kept)."""
  if x.shape[axis] in (1, size):
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def _slice(x: jax.Array, axis: int, start: jax.Array, size: int) -> jax.Array:
  """x[..., start:start + size, ...] along `axis`, unless that axis broadcasts (length 1)."""
  if x.shape[axis] == 1:
    return x
  return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _block_logits(q, k, biases, q_start, k_start, cq, ck, num_keys):
  """Raw logits of one block [B, H, cq, ck] (before clipping), and which keys are real."""
  s = jnp.einsum('bqhc,bkhc->bhqk', q, k).astype(jnp.float32)
  for bias in biases:
    s = s + _slice(_slice(bias, 2, q_start, cq), 3, k_start, ck).astype(jnp.float32)
  real = (k_start + jnp.arange(ck)) < num_keys
  return s, real


def _padded(cq, ck, q, k, v, biases):
  """Inputs padded to whole chunks: (q, k, v, biases, num_q_chunks, num_k_chunks)."""
  nq, nk = -(-q.shape[1] // cq), -(-k.shape[1] // ck)
  q = _pad(q, 1, nq * cq)
  k, v = _pad(k, 1, nk * ck), _pad(v, 1, nk * ck)
  biases = tuple(_pad(_pad(b, 2, nq * cq), 3, nk * ck) for b in biases)
  return q, k, v, biases, nq, nk


def _forward(cq, ck, q, k, v, biases):
  """(out [B, Q, H, D], the softmax's (row maximum, row sum of exp(logit - maximum)) [B, H, Q]
  of the clipped logits), float32 inside. The two are kept apart: their log-sum-exp would
  round away the sum where every logit of a row is clipped to -1e8 (a masked row)."""
  num_q, num_keys = q.shape[1], k.shape[1]
  q, k, v, biases, nq, nk = _padded(cq, ck, q, k, v, biases)
  batch, heads, dim = q.shape[0], q.shape[2], v.shape[-1]

  def query_chunk(i):
    q_start = i * cq
    qc = jax.lax.dynamic_slice_in_dim(q, q_start, cq, 1)

    def key_chunk(carry, j):
      top, total, acc = carry
      k_start = j * ck
      kc, vc = (jax.lax.dynamic_slice_in_dim(x, k_start, ck, 1) for x in (k, v))
      s, real = _block_logits(qc, kc, biases, q_start, k_start, cq, ck, num_keys)
      s = jnp.where(real, jnp.clip(s, -LOGIT_CLIP, LOGIT_CLIP), -jnp.inf)
      carry = online_softmax_step(
          top, total, acc, s,
          lambda p: jnp.einsum('bhqk,bkhd->bhqd', p, vc.astype(jnp.float32)))
      return carry, None

    init = (jnp.full((batch, heads, cq), -jnp.inf, jnp.float32),
            jnp.zeros((batch, heads, cq), jnp.float32),
            jnp.zeros((batch, heads, cq, dim), jnp.float32))
    (top, total, acc), _ = jax.lax.scan(key_chunk, init, jnp.arange(nk))
    return acc / total[..., None], (top, total)

  # [nq, B, H, cq, D] and two [nq, B, H, cq]
  out, stats = jax.lax.map(query_chunk, jnp.arange(nq))
  out = jnp.moveaxis(out, 0, 2).reshape(batch, heads, nq * cq, dim)[:, :, :num_q]
  stats = tuple(jnp.moveaxis(x, 0, 2).reshape(batch, heads, nq * cq)[:, :, :num_q]
                for x in stats)
  return jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype), stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked(cq, ck, q, k, v, biases):
  return _forward(cq, ck, q, k, v, biases)[0]


def _chunked_fwd(cq, ck, q, k, v, biases):
  out, stats = _forward(cq, ck, q, k, v, biases)
  return out, (q, k, v, biases, out, stats)


def _reduce_to(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """x summed over the axes where `shape` broadcasts (length 1)."""
  axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
  return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _chunked_bwd(cq, ck, residuals, d_out):
  q0, k0, v0, biases0, out, (top, total) = residuals
  num_q, num_keys = q0.shape[1], k0.shape[1]
  q, k, v, biases, nq, nk = _padded(cq, ck, q0, k0, v0, biases0)
  # Padded query rows get no cotangent, so they add nothing to any gradient.
  d_out = _pad(d_out.astype(jnp.float32), 1, nq * cq)
  out = _pad(out.astype(jnp.float32), 1, nq * cq)
  # Padded rows: logits 0, so weights exp(0) / 1, times a zero cotangent.
  top, total = _pad(top, 2, nq * cq), _pad(total, 2, nq * cq, 1.0)
  # softmax backward: dS = P * (dP - rowsum(dO * O)).
  row_dot = jnp.einsum('bqhd,bqhd->bhq', d_out, out)

  def query_chunk(carry, i):
    dk, dv, dbiases = carry
    q_start = i * cq
    qc, doc = (jax.lax.dynamic_slice_in_dim(x, q_start, cq, 1) for x in (q, d_out))
    top_c, total_c, row_c = (jax.lax.dynamic_slice_in_dim(x, q_start, cq, 2)
                             for x in (top, total, row_dot))

    def key_chunk(carry, j):
      dq, dk, dv, dbiases = carry
      k_start = j * ck
      kc, vc = (jax.lax.dynamic_slice_in_dim(x, k_start, ck, 1) for x in (k, v))
      s, real = _block_logits(qc, kc, biases, q_start, k_start, cq, ck, num_keys)
      inside = real & (jnp.abs(s) <= LOGIT_CLIP)  # the clip passes no gradient outside
      clipped = jnp.clip(s, -LOGIT_CLIP, LOGIT_CLIP)
      p = jnp.where(real, jnp.exp(clipped - top_c[..., None]) / total_c[..., None], 0.0)
      dp = jnp.einsum('bqhd,bkhd->bhqk', doc, vc.astype(jnp.float32))
      ds = jnp.where(inside, p * (dp - row_c[..., None]), 0.0)
      dq = dq + jnp.einsum('bhqk,bkhc->bqhc', ds, kc.astype(jnp.float32))
      dk_c = jnp.einsum('bhqk,bqhc->bkhc', ds, qc.astype(jnp.float32))
      dv_c = jnp.einsum('bhqk,bqhd->bkhd', p, doc)
      dk = jax.lax.dynamic_update_slice_in_dim(
          dk, jax.lax.dynamic_slice_in_dim(dk, k_start, ck, 1) + dk_c, k_start, 1)
      dv = jax.lax.dynamic_update_slice_in_dim(
          dv, jax.lax.dynamic_slice_in_dim(dv, k_start, ck, 1) + dv_c, k_start, 1)
      dbiases = tuple(_add_block(db, _reduce_to(ds, b.shape), q_start, k_start, cq, ck)
                      for db, b in zip(dbiases, biases))
      return (dq, dk, dv, dbiases), None

    dq0 = jnp.zeros(qc.shape, jnp.float32)
    (dq, dk, dv, dbiases), _ = jax.lax.scan(key_chunk, (dq0, dk, dv, dbiases), jnp.arange(nk))
    return (dk, dv, dbiases), dq

  zeros = lambda x: jnp.zeros(x.shape, jnp.float32)
  init = (zeros(k), zeros(v), tuple(zeros(b) for b in biases))
  (dk, dv, dbiases), dq = jax.lax.scan(query_chunk, init, jnp.arange(nq))
  dq = jnp.moveaxis(dq, 0, 1).reshape(q.shape)[:, :num_q]
  dbiases = tuple(db[:, :, :b.shape[2], :b.shape[3]].astype(b.dtype)
                  for db, b in zip(dbiases, biases0))
  return (dq.astype(q0.dtype), dk[:, :num_keys].astype(k0.dtype),
          dv[:, :num_keys].astype(v0.dtype), dbiases)


def _add_block(total: jax.Array, block: jax.Array, q_start, k_start, cq: int, ck: int):
  """total += block at [.., q_start:+cq, k_start:+ck] (axes of length 1 take the whole block)."""
  starts = [0, 0, q_start if total.shape[2] != 1 else 0, k_start if total.shape[3] != 1 else 0]
  current = jax.lax.dynamic_slice(total, starts, block.shape)
  return jax.lax.dynamic_update_slice(total, current + block, starts)


_chunked.defvjp(_chunked_fwd, _chunked_bwd)
