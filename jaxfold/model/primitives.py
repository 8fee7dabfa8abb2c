"""Linear, LayerNorm, dropout and chunking with AlphaFold's conventions.

Parameters are stored in float32 under AlphaFold's names (`weights`, `bias`, `scale`,
`offset`) and cast to the activations' dtype on use, so bfloat16 compute keeps float32
master weights.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model import logical_axes

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
    return layer_norm(x, {'scale': scale, 'offset': offset}, self.eps)


def layer_norm(x: jax.Array, params: Mapping[str, jax.Array], eps: float = 1e-5) -> jax.Array:
  """`LayerNorm` as a function of its parameters {'scale', 'offset'}, for code that reads
  a module's parameters directly (e.g. a chunked path that slices them)."""
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps) * params['scale'] + params['offset']
  return y.astype(x.dtype)


def linear(x: jax.Array, params: Mapping[str, jax.Array]) -> jax.Array:
  """A one-input-axis `Linear` as a function of its parameters {'weights', 'bias'}."""
  weights, bias = params['weights'].astype(x.dtype), params['bias'].astype(x.dtype)
  return jnp.einsum('...a,ah->...h', x, weights) + bias


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


def row_blocks(n: int) -> int:
  """Into how many blocks a chunked loop over n rows walks side by side: under dynamic axial
  parallelism (`logical_axes.residue_devices`) the devices those rows are split over, where
  they divide n; else 1.

  A loop over rows split across devices would slice rows that other devices hold, and XLA
  gathers the whole array onto every device to do so. So with d blocks a chunk at offset s
  holds rows s..s+size of every device's block of n/d rows (d x size rows, block-major):
  each device slices only its own rows, and fn, which treats rows independently, sees them
  all at once.
  """
  d = logical_axes.residue_devices()
  return d if d > 1 and n % d == 0 else 1


def local_rows(n: int) -> int:
  """The rows of one block (`row_blocks`): the length a chunked loop over n rows walks."""
  return n // row_blocks(n)


def is_chunked(chunk_size: int | None, n: int) -> bool:
  """Whether chunks of `chunk_size` split a loop over n rows (else: one piece)."""
  return chunk_size is not None and chunk_size < local_rows(n)


def _on_devices(x: jax.Array, axis: int) -> jax.Array:
  """x with `axis` split over the devices of `row_blocks`, so that XLA keeps each block where
  it is rather than gathering it inside a loop."""
  return logical_axes.constrain(x, [None] * axis + ['res_i'] + [None] * (x.ndim - axis - 1))


def _blocked(x: jax.Array, axis: int) -> jax.Array:
  """x with `axis` split into (blocks, rows of a block): a reshape, no copy."""
  d = row_blocks(x.shape[axis])
  return _on_devices(x.reshape(x.shape[:axis] + (d, x.shape[axis] // d) + x.shape[axis + 1:]),
                     axis)


def take_chunk(x: jax.Array, start: jax.Array | int, size: int, axis: int) -> jax.Array:
  """Rows start..start + size of every block (`row_blocks`) along `axis`, that axis moved
  to the front: x[start:start + size] with one block, all of x with size the whole axis."""
  if row_blocks(x.shape[axis]) == 1 or size == x.shape[axis]:
    return jnp.moveaxis(jax.lax.dynamic_slice_in_dim(x, start, size, axis), axis, 0)
  chunk = jax.lax.dynamic_slice_in_dim(_blocked(x, axis), start, size, axis + 1)
  chunk = jnp.moveaxis(chunk, (axis, axis + 1), (0, 1))
  return _on_devices(chunk.reshape((-1,) + chunk.shape[2:]), 0)


def put_chunk(out: jax.Array, chunk: jax.Array, start: jax.Array | int, axis: int) -> jax.Array:
  """`out` with the chunk (its chunk axis first, `take_chunk`'s rows) written at start along
  `axis`."""
  d = row_blocks(out.shape[axis])
  if d == 1:
    return jax.lax.dynamic_update_slice_in_dim(out, jnp.moveaxis(chunk, 0, axis), start, axis)
  chunk = jnp.moveaxis(chunk.reshape((d, -1) + chunk.shape[1:]), (0, 1), (axis, axis + 1))
  blocked = jax.lax.dynamic_update_slice_in_dim(_blocked(out, axis), _on_devices(chunk, axis),
                                                start, axis + 1)
  return _on_devices(blocked.reshape(out.shape), axis)


def chunk_offsets(start: jax.Array | int, size: int, n: int) -> jax.Array:
  """The offset within its block of each row of a chunk (`take_chunk`) of n rows [d x size]."""
  return jnp.tile(start + jnp.arange(size), row_blocks(n))


def chunk_starts(n: int, chunk_size: int) -> tuple[int, Callable[[jax.Array], jax.Array]]:
  """(number of chunks, start of chunk i) covering n rows (each block of `local_rows`) in
  chunks of `chunk_size` <= local_rows(n).

  The last chunk is shifted back to end at the block's end, overlapping its neighbour instead
  of being padded: its rows are computed twice, identically, and nothing is padded or copied.
  """
  local = local_rows(n)
  return -(-local // chunk_size), lambda i: jnp.minimum(i * chunk_size, local - chunk_size)


def _whole(chunk: jax.Array, n: int, axis: int) -> jax.Array:
  """The first chunk (its chunk axis first) padded into a result of n rows along `axis`.

  Padding a computed chunk, not writing it into zeros, matters: XLA shares one buffer among
  equal zero constants and keeps it alive from its first use to its last, and copies it
  into each loop that writes into it.
  """
  d = row_blocks(n)
  chunk = jnp.moveaxis(chunk.reshape((d, -1) + chunk.shape[1:]), (0, 1), (axis, axis + 1))
  widths = [(0, 0)] * chunk.ndim
  widths[axis + 1] = (0, n // d - chunk.shape[axis + 1])
  padded = jnp.pad(chunk, widths)
  return padded.reshape(padded.shape[:axis] + (n,) + padded.shape[axis + 2:])


def map_chunks(fn: Callable[[jax.Array], Any], n: int, chunk_size: int, out_axis: int = 0
               ) -> Any:
  """The result whose rows [start, start + chunk_size) along `out_axis` are fn(start).

  fn(start) returns a tree of chunks, the chunk axis first; chunks overlap at the end
  (`chunk_starts`). A plain-JAX loop for functions of arrays, not of Flax submodules.
  """
  num_chunks, start_of = chunk_starts(n, chunk_size)
  out = jax.tree.map(lambda y: _whole(y, n, out_axis), fn(0))

  def body(i, out):
    start = start_of(i)
    return jax.tree.map(lambda o, y: put_chunk(o, y, start, out_axis), out, fn(start))

  return jax.lax.fori_loop(1, num_chunks, body, out)


def chunked(module: nn.Module, fn: Callable[..., Any], chunk_size: int | None,
            batched: Sequence[jax.Array], unbatched: Sequence[Any] = (),
            axis: int | Sequence[int] = 0, out_axis: int | None = None,
            in_place: bool = False) -> Any:
  """fn(module, *batched, *unbatched) computed `chunk_size` slices at a time.

  AlphaFold's inference subbatching: `fn` must treat each slice independently, so results
  equal one unchunked call and only peak memory changes. Each batched array is sliced along
  `axis` (one for all, or one per array) and `fn` sees the slice with that axis first; it
  returns arrays (any tree) whose first axis is the chunk's, which land at `out_axis` of the
  result (default: the first batched array's axis). Only one chunk of inputs and outputs
  exists besides the whole result: slices are read and written in place, never padded or
  transposed as a whole. `fn` may call Flax submodules of `module`: the loop is a
  Flax-lifted scan with the parameters broadcast to every chunk, so the parameter tree is
  that of one call.

  With `in_place`, fn returns one array, the new value of its chunk of batched[0] (e.g. the
  chunk plus a residual update), and the result is batched[0] rewritten chunk by chunk in
  its own buffer: each chunk is read just before it is replaced, so besides batched[0] only
  one chunk exists. Chunks then never overlap (the last one is shorter), since a row
  rewritten twice would be wrong.
  """
  axes = [axis] * len(batched) if isinstance(axis, int) else list(axis)
  out_axis = axes[0] if out_axis is None else out_axis
  n = batched[0].shape[axes[0]]

  def run(mdl, arrays, start, size):
    return fn(mdl, *(take_chunk(x, start, size, a) for x, a in zip(arrays, axes)), *unbatched)

  one_piece = not is_chunked(chunk_size, n) or module.is_initializing()
  if in_place:
    return _rewrite(module, run, list(batched), axes[0], None if one_piece else chunk_size)
  if one_piece:
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, out_axis), run(module, batched, 0, n))
  num_chunks, start_of = chunk_starts(n, chunk_size)
  # The first chunk runs outside the loop: it gives the result's shapes.
  out = jax.tree.map(lambda y: _whole(y, n, out_axis), run(module, batched, 0, chunk_size))

  def body(mdl, out, i):
    start = start_of(i)
    return jax.tree.map(lambda o, y: put_chunk(o, y, start, out_axis), out,
                        run(mdl, batched, start, chunk_size)), None

  scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False})
  out, _ = scan(module, out, jnp.arange(1, num_chunks))
  return out


def _rewrite(module: nn.Module, run: Callable[..., jax.Array], batched: list[jax.Array],
             axis: int, chunk_size: int | None) -> jax.Array:
  """`chunked(in_place=True)`: batched[0]'s chunks along `axis` replaced by run's, in turn."""
  act, rest = batched[0], batched[1:]
  n = act.shape[axis]
  if chunk_size is None:
    return jnp.moveaxis(run(module, batched, 0, n), 0, axis).astype(act.dtype)
  n = local_rows(n)

  def rewrite(mdl, act, start, size):
    return put_chunk(act, run(mdl, [act] + rest, start, size).astype(act.dtype), start, axis)

  def body(mdl, act, i):
    return rewrite(mdl, act, i * chunk_size, chunk_size), None

  num_whole, tail = divmod(n, chunk_size)
  scan = nn.scan(body, variable_broadcast='params', split_rngs={'params': False})
  act, _ = scan(module, act, jnp.arange(num_whole))
  return rewrite(module, act, n - tail, tail) if tail else act
