"""Triangle multiplicative update of the pair representation, outgoing or incoming edges.

Jumper et al. (2021) Suppl. Alg. 11 'TriangleMultiplicationOutgoing' (equation
'ikc,jkc->ijc') and Alg. 12 'TriangleMultiplicationIncoming' ('kjc,kic->ijc'). Parameters
are AlphaFold's unfused ones: separate left/right projections and gates.
"""

import dataclasses
import math
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear, layer_norm, map_chunks, take_chunk


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


# Intermediate channels projected and multiplied at a time by the chunked path.
CHANNEL_BLOCK = 32


class TriangleMultiplication(nn.Module):
  """Gated projections of the pair multiplied along a shared third node (Suppl. Alg. 11 / 12).

  Inputs: pair [N_res, N_res, c_z], pair_mask [N_res, N_res]. Output: update [N_res, N_res, c_z].
  With `global_config.pair_chunk_size` set (inference), the same numbers are computed
  without any whole N_res x N_res x c intermediate but the triangle product itself
  (`_chunked_update`).
  """
  config: TriangleMultiplicationConfig = OUTGOING
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array) -> jax.Array:
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
    if chunk is not None and chunk < pair.shape[0] and not self.is_initializing():
      return _chunked_update(self.variables['params'], pair, pair_mask, c.equation, chunk)

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
    return update * jax.nn.sigmoid(layers['gating_linear'](pair))


def _linear(x: jax.Array, params, first: jax.Array | int = 0, width: int | None = None
            ) -> jax.Array:
  """A `Linear` layer's output channels [first, first + width) (all by default)."""
  w, b = params['weights'], params['bias']
  if width is not None:
    w = jax.lax.dynamic_slice_in_dim(w, first, width, 1)
    b = jax.lax.dynamic_slice_in_dim(b, first, width, 0)
  return jnp.einsum('...a,ab->...b', x, w.astype(x.dtype)) + b.astype(x.dtype)


def _chunked_update(params, pair: jax.Array, pair_mask: jax.Array, equation: str,
                    chunk: int) -> jax.Array:
  """The module's update computed `chunk` pair rows and CHANNEL_BLOCK channels at a time.

  1. For each block of intermediate channels, the gated left and right projections are
     built row chunk by row chunk (layer norm included), channel-first [block, N, N], and
     multiplied; the product fills that block of the float32 triangle product [c, N, N].
  2. Row chunk by row chunk, the product's center layer norm, output projection and gate.
  Besides the pair and the update, only the product (float32, c channels) is whole. Both
  are loops, so that one block and one chunk exist at a time.
  """
  num_res, _, channels = pair.shape
  num_intermediate = params['left_projection']['weights'].shape[-1]
  width = math.gcd(num_intermediate, CHANNEL_BLOCK)
  # 'ikc,jkc->ijc' on channel-first operands: 'cik,cjk->cij'.
  inputs, output = equation.split('->')
  channel_first = ','.join('c' + term.replace('c', '') for term in inputs.split(','))
  channel_first += '->c' + output.replace('c', '')

  def block_product(first):
    def projections(start):
      rows = layer_norm(take_chunk(pair, start, chunk, 0), params['layer_norm_input'])
      mask_rows = take_chunk(pair_mask, start, chunk, 0)[..., None].astype(rows.dtype)
      sides = []
      for side in ('left', 'right'):
        proj = _linear(rows, params[f'{side}_projection'], first, width)
        gate = _linear(rows, params[f'{side}_gate'], first, width)
        # [rows, N, block] -> [rows, block, N]: written channel-first ([2, block, N, N]).
        sides.append(jnp.swapaxes(mask_rows * proj * jax.nn.sigmoid(gate), 1, 2))
      return jnp.stack(sides, axis=1)

    sides = map_chunks(projections, num_res, chunk, out_axis=2)
    return jnp.einsum(channel_first, sides[0], sides[1], preferred_element_type=jnp.float32)

  product = map_chunks(block_product, num_intermediate, width)

  def outputs(start):
    rows = layer_norm(take_chunk(pair, start, chunk, 0), params['layer_norm_input'])
    update = jnp.moveaxis(jax.lax.dynamic_slice_in_dim(product, start, chunk, 1), 0, -1)
    update = layer_norm(update, params['center_layer_norm']).astype(pair.dtype)
    update = _linear(update, params['output_projection'])
    return update * jax.nn.sigmoid(_linear(rows, params['gating_linear']))

  return map_chunks(outputs, num_res, chunk)
