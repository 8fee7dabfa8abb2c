"""Triangle multiplicative update of the pair representation, outgoing or incoming edges.

Jumper et al. (2021) Suppl. Alg. 11 'TriangleMultiplicationOutgoing' (equation
'ikc,jkc->ijc') and Alg. 12 'TriangleMultiplicationIncoming' ('kjc,kic->ijc'). Parameters
are AlphaFold's unfused ones: separate left/right projections and gates.
"""

import contextlib
import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model import logical_axes
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import (LayerNorm, Linear, chunked, is_chunked, layer_norm,
                                      linear, map_chunks, take_chunk)


@dataclasses.dataclass(frozen=True)
class TriangleMultiplicationConfig:
  """AlphaFold's `triangle_multiplication_*` config (defaults: the Evoformer's outgoing one).

  `equation` contracts the left and right projections ('a' and 'b' of Alg. 11; Alg. 12's
  'a' is the right projection, hence the swapped operands in the incoming equation).
  """
  dropout_rate: float = 0.25
  equation: str = 'ikc,jkc->ijc'
  num_intermediate_channel: int = 128
  orientation: Literal['per_row', 'per_column'] = 'per_row'
  shared_dropout: bool = True


OUTGOING = TriangleMultiplicationConfig()
INCOMING = TriangleMultiplicationConfig(equation='kjc,kic->ijc')


# The chunked path per equation: the axis of the pair it chunks (rows for outgoing edges,
# columns for incoming ones), which is also the axis of the channel-first right projection
# [c, N, N] its rows are stored along, so that both sum over the right projection's last axis.
_CHUNKED = {'ikc,jkc->ijc': 0, 'kjc,kic->ijc': 1}


class TriangleMultiplication(nn.Module):
  """Gated projections of the pair multiplied along a shared third node (Suppl. Alg. 11 / 12).

  Inputs: pair [N_res, N_res, c_z], pair_mask [N_res, N_res]. Output: update [N_res, N_res, c_z],
  or pair + update with `add_to_input`. With `global_config.pair_chunk_size` set
  (inference), the same numbers are computed a chunk of rows or columns at a time
  (`_chunked`), and with `add_to_input` added into the pair in place.
  """
  config: TriangleMultiplicationConfig = OUTGOING
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array, add_to_input: bool = False
               ) -> jax.Array:
    c, final_init = self.config, self.global_config.final_init
    channels = pair.shape[-1]
    layers = {
        'layer_norm_input': LayerNorm(name='layer_norm_input'),
        'left_projection': Linear(c.num_intermediate_channel, name='left_projection'),
        'left_gate': Linear(c.num_intermediate_channel, initializer=final_init, bias_init=1.0,
                            name='left_gate'),
        'right_projection': Linear(c.num_intermediate_channel, name='right_projection'),
        'right_gate': Linear(c.num_intermediate_channel, initializer=final_init,
                             bias_init=1.0, name='right_gate'),
        'center_layer_norm': LayerNorm(name='center_layer_norm'),
        'output_projection': Linear(channels, initializer=final_init, name='output_projection'),
        'gating_linear': Linear(channels, initializer=final_init, bias_init=1.0,
                                name='gating_linear'),
    }
    chunk = self.global_config.pair_chunk_size
    if is_chunked(chunk, pair.shape[0]) and not self.is_initializing():
      return _chunked(self, pair, pair_mask, c.equation, chunk, add_to_input)

    residual = pair
    mask = pair_mask[..., None].astype(pair.dtype)
    pair = layers['layer_norm_input'](pair)

    def gated_projection(side: str) -> jax.Array:
      proj = layers[f'{side}_projection'](pair)
      return mask * proj * jax.nn.sigmoid(layers[f'{side}_gate'](pair))

    left, right = gated_projection('left'), gated_projection('right')
    # The sum over N_res is accumulated in float32, so that bfloat16 compute keeps its precision.
    update = jnp.einsum(c.equation, left, right, preferred_element_type=jnp.float32)
    update = layers['center_layer_norm'](update).astype(pair.dtype)
    update = layers['output_projection'](update)
    update = update * jax.nn.sigmoid(layers['gating_linear'](pair))
    return residual + update if add_to_input else update


def _gated(rows: jax.Array, mask: jax.Array, params, side: str) -> jax.Array:
  """The masked, gated left or right projection of normalised pair rows [.., c_z] -> [.., c]."""
  proj = linear(rows, params[f'{side}_projection'])
  return mask[..., None].astype(rows.dtype) * proj * jax.nn.sigmoid(
      linear(rows, params[f'{side}_gate']))


def _chunked(module: nn.Module, pair: jax.Array, pair_mask: jax.Array, equation: str,
             chunk: int, add_to_input: bool) -> jax.Array:
  """The module's update computed `chunk` pair rows (outgoing) or columns (incoming) at a time.

  Row i of the outgoing product sums left row i against the whole right projection; column
  j of the incoming one, left column j against it. So the gated right projection is built
  first, row chunk by row chunk, channel-first [c, N, N] (the one whole intermediate;
  transposed for incoming edges, so that both sum over its last axis);
  then, chunk by chunk along the chunked axis, the left projection, its float32 product
  with the right one, the center layer norm, the output projection and the gate, which
  need nothing of the pair beyond the chunk. With `add_to_input` each chunk's update is
  added into the pair in place (`chunked(in_place=True)`).
  """
  if equation not in _CHUNKED:
    raise ValueError(f'no chunked triangle multiplication for {equation!r}; expected one of '
                     f'{sorted(_CHUNKED)}')
  axis = _CHUNKED[equation]
  params = module.variables['params']

  def right_rows(start):  # [chunk, c, N] of the channel-first right projection
    rows = layer_norm(take_chunk(pair, start, chunk, 0), params['layer_norm_input'])
    right = _gated(rows, take_chunk(pair_mask, start, chunk, 0), params, 'right')
    return jnp.swapaxes(right, 1, 2)

  # Outgoing: right[c, j, k] of pair (j, k); incoming: right[c, i, k] of pair (k, i).
  right = map_chunks(right_rows, pair.shape[0], chunk, out_axis=1 + axis)

  def update(_, pair_chunk, mask_chunk):
    rows = layer_norm(pair_chunk, params['layer_norm_input'])
    left = jnp.moveaxis(_gated(rows, mask_chunk, params, 'left'), -1, 0)
    product = jnp.einsum('ctk,cjk->ctj', left, right, preferred_element_type=jnp.float32)
    product = layer_norm(jnp.moveaxis(product, 0, -1), params['center_layer_norm'])
    product = linear(product.astype(pair.dtype), params['output_projection'])
    product = product * jax.nn.sigmoid(linear(rows, params['gating_linear']))
    return pair_chunk + product if add_to_input else product

  # Incoming edges chunk the pair's columns, which dynamic axial parallelism leaves whole (it
  # splits the rows): each device slices its own rows of a column chunk, as on one device.
  with contextlib.nullcontext() if axis == 0 else logical_axes.rows_whole():
    return chunked(module, update, chunk, [pair, pair_mask], axis=axis, in_place=add_to_input)
