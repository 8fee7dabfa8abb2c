"""Two-layer MLP transition of the MSA or pair representation.

Jumper et al. (2021) Suppl. Alg. 9 'MSATransition' and Alg. 15 'PairTransition'.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
import jax

from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear, chunked


@dataclasses.dataclass(frozen=True)
class TransitionConfig:
  """AlphaFold's `msa_transition` / `pair_transition` config (defaults: Evoformer's)."""
  dropout_rate: float = 0.0
  num_intermediate_factor: int = 4
  orientation: Literal['per_row', 'per_column'] = 'per_row'
  shared_dropout: bool = True


class Transition(nn.Module):
  """LayerNorm, Linear to factor*C, ReLU, Linear back to C (Suppl. Alg. 9 / 15).

  Input act [N_seq, N_res, c_m] or [N_res, N_res, c_z]; output the update, same shape, or
  act + update with `add_to_input` (in place, chunk by chunk). Chunked over axis 0, layer
  norm included, when `global_config.subbatch_size` is set.
  """
  config: TransitionConfig = TransitionConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, act: jax.Array, add_to_input: bool = False) -> jax.Array:
    channels = act.shape[-1]
    norm = LayerNorm(name='input_layer_norm')
    hidden = Linear(int(channels * self.config.num_intermediate_factor), initializer='relu',
                    name='transition1')
    out = Linear(channels, initializer=self.global_config.final_init, name='transition2')

    def mlp(_, x: jax.Array) -> jax.Array:
      return out(jax.nn.relu(hidden(norm(x))))

    if add_to_input:
      return chunked(self, lambda mdl, x: x + mlp(mdl, x), self.global_config.subbatch_size,
                     [act], in_place=True)
    return chunked(self, mlp, self.global_config.subbatch_size, [act])
