"""Linear, LayerNorm, dropout and chunking with AlphaFold's conventions.

Parameters are stored in float32 under AlphaFold's names (`weights`, `bias`, `scale`,
`offset`) and cast to the activations' dtype on use, so bfloat16 compute keeps float32
master weights.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it makes the
# truncated draw have the intended variance.
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def fan_in_initializer(name: str, fan_in_shape: Sequence[int]) -> Callable:
  """AlphaFold's initialisers by name: 'linear' (LeCun), 'relu' (He) or 'zeros'.

  Fan-in scaled truncated normals as in Jumper et al. (2021) Suppl. 1.11.4.
  """
  if name == 'zeros':
    return nn.initializers.zeros
  if name not in ('linear', 'relu'):
    raise ValueError(f"unknown initializer {name!r}; expected 'linear', 'relu' or 'zeros'")
  variance = (2.0 if name == 'relu' else 1.0) / max(1, math.prod(fan_in_shape))
  stddev = math.sqrt(variance) / _TRUNCATED_NORMAL_STDDEV
  return nn.initializers.truncated_normal(stddev=stddev, lower=-2.0, upper=2.0)


glorot_uniform = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform')


class Linear(nn.Module):
  """Linear layer over the last `num_input_dims` axes with AlphaFold's initialisers.

  `num_output` may be a tuple (e.g. (heads, channels)); the weight then has shape
  in_shape + out_shape, as in AlphaFold's checkpoints.
  """
  num_output: int | Sequence[int]
  initializer: str = 'linear'
  num_input_dims: int = 1
  use_bias: bool = True
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_shape = ((self.num_output,) if isinstance(self.num_output, int)
                 else tuple(self.num_output))
    in_shape = tuple(x.shape[x.ndim - self.num_input_dims:])
    weights = self.param('weights', fan_in_initializer(self.initializer, in_shape),
                         in_shape + out_shape, jnp.float32)
    in_idx = 'abcde'[:len(in_shape)]
    out_idx = 'hijkl'[:len(out_shape)]
    y = jnp.einsum(f'...{in_idx},{in_idx}{out_idx}->...{out_idx}', x, weights.astype(x.dtype))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.constant(self.bias_init), out_shape,
                        jnp.float32)
      y = y + bias.astype(x.dtype)
    return y


class LayerNorm(nn.Module):
  """LayerNorm over the last axis (eps 1e-5), computed in float32 (or float64 for float64 input)."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    offset = self.param('offset', nn.initializers.zeros, (c,), jnp.float32)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale + offset
    return y.astype(x.dtype)


def mask_to_bias(mask: jax.Array, dtype: Any) -> jax.Array:
  """Additive attention bias: 0 where mask is 1, -1e9 where it is 0 (AlphaFold's value)."""
  return (1e9 * (mask.astype(jnp.float32) - 1.0)).astype(dtype)


def residual_dropout(x: jax.Array, rate: float, shared_axis: int | None,
                     deterministic: bool) -> jax.Array:
  """Dropout of a residual update, one mask shared along `shared_axis`.

  AlphaFold drops whole rows or columns of an update (Suppl. 1.11.6): a 'per_row'
  module shares its mask across the first (row) axis, a 'per_column' module across the
  second. Must be called inside a compact Flax method; draws from the 'dropout' stream.
  """
  if deterministic or rate == 0.0:
    return x
  dims = () if shared_axis is None else (shared_axis % x.ndim,)
  return nn.Dropout(rate=rate, broadcast_dims=dims)(x, deterministic=False)


def chunked(module: nn.Module, fn: Callable[..., Any], chunk_size: int | None,
            batched: Sequence[jax.Array], unbatched: Sequence[Any] = ()) -> Any:
  """fn(module, *batched, *unbatched) computed `chunk_size` slices of axis 0 at a time.

  AlphaFold's inference subbatching: `fn` must treat each slice of axis 0 independently,
  so results equal one unchunked call and only peak memory changes. `fn` may call Flax
  submodules of `module`: the loop is a Flax-lifted scan with the parameters broadcast to
  every chunk, so the parameter tree is that of one call. The last chunk is zero-padded
  and its padding discarded.
  """
  n = batched[0].shape[0]
  if chunk_size is None or chunk_size >= n or module.is_initializing():
    return fn(module, *batched, *unbatched)
  num_chunks = -(-n // chunk_size)
  pad = num_chunks * chunk_size - n

  def split(x):
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num_chunks, chunk_size) + x.shape[1:])

  def body(mdl, carry, xs):
    return carry, fn(mdl, *xs, *unbatched)

  scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False})
  _, out = scan(module, None, tuple(split(x) for x in batched))
  return jax.tree.map(lambda y: y.reshape((num_chunks * chunk_size,) + y.shape[2:])[:n], out)
