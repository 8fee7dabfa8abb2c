"""Triangle multiplicative update of the pair representation, outgoing or incoming edges.

Jumper et al. (2021) Suppl. Alg. 11 'TriangleMultiplicationOutgoing' (equation
'ikc,jkc->ijc') and Alg. 12 'TriangleMultiplicationIncoming' ('kjc,kic->ijc'). Parameters
are AlphaFold's unfused ones: separate left/right projections and gates.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear


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


class TriangleMultiplication(nn.Module):
  """Gated projections of the pair multiplied along a shared third node (Suppl. Alg. 11 / 12).

  Inputs: pair [N_res, N_res, c_z], pair_mask [N_res, N_res]. Output: update [N_res, N_res, c_z].
  """
  config: TriangleMultiplicationConfig = OUTGOING
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array) -> jax.Array:
    c, final_init = self.config, self.global_config.final_init
    channels = pair.shape[-1]
    mask = pair_mask[..., None].astype(pair.dtype)
    pair = LayerNorm(name='layer_norm_input')(pair)

    def gated_projection(side: str) -> jax.Array:
      proj = Linear(c.num_intermediate_channel, name=f'{side}_projection')(pair)
      gate = Linear(c.num_intermediate_channel, initializer=final_init, bias_init=1.0,
                    name=f'{side}_gate')(pair)
      return mask * proj * jax.nn.sigmoid(gate)

    left, right = gated_projection('left'), gated_projection('right')
    # The sum over N_res is accumulated in float32, so that bfloat16 compute keeps its precision.
    update = jnp.einsum(c.equation, left, right, preferred_element_type=jnp.float32)
    update = LayerNorm(name='center_layer_norm')(update).astype(pair.dtype)
    update = Linear(channels, initializer=final_init, name='output_projection')(update)
    gate = Linear(channels, initializer=final_init, bias_init=1.0, name='gating_linear')(pair)
    return update * jax.nn.sigmoid(gate)
