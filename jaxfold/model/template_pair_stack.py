"""The pair stack applied to each template's pair features.

Jumper et al. (2021) Suppl. Alg. 16 'TemplatePairStack'. Its blocks' parameters are
stacked on a leading axis under AlphaFold's name
`template_pair_stack/__layer_stack_no_state/<module>/...`.
"""

import dataclasses

import flax.linen as nn
import jax

from jaxfold.model.axial_attention import AttentionConfig
from jaxfold.model.evoformer import update_pair
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.layer_stack import apply_stacked
from jaxfold.model.transition import TransitionConfig
from jaxfold.model.triangle_multiplication import TriangleMultiplicationConfig

# Alg. 16 lines 2-6: attention before multiplication, unlike the Evoformer block.
TEMPLATE_PAIR_ORDER = ('triangle_attention_starting_node', 'triangle_attention_ending_node',
                       'triangle_multiplication_outgoing', 'triangle_multiplication_incoming',
                       'pair_transition')


def _attention(orientation: str) -> AttentionConfig:
  return AttentionConfig(dropout_rate=0.25, num_head=4, orientation=orientation,
                         key_dim=64, value_dim=64)


@dataclasses.dataclass(frozen=True)
class TemplatePairStackConfig:
  """AlphaFold's `template.template_pair_stack` config (c_t = 64)."""
  num_block: int = 2
  triangle_attention_starting_node: AttentionConfig = _attention('per_row')
  triangle_attention_ending_node: AttentionConfig = _attention('per_column')
  triangle_multiplication_outgoing: TriangleMultiplicationConfig = TriangleMultiplicationConfig(
      num_intermediate_channel=64)
  triangle_multiplication_incoming: TriangleMultiplicationConfig = TriangleMultiplicationConfig(
      equation='kjc,kic->ijc', num_intermediate_channel=64)
  pair_transition: TransitionConfig = TransitionConfig(num_intermediate_factor=2)


class TemplatePairBlock(nn.Module):
  """One block of the template pair stack (Suppl. Alg. 16 lines 2-6).

  Inputs: pair [N_res, N_res, c_t], pair_mask [N_res, N_res]. Output: the updated pair.
  """
  config: TemplatePairStackConfig = TemplatePairStackConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array,
               deterministic: bool = True) -> jax.Array:
    return update_pair(pair, pair_mask, self.config, TEMPLATE_PAIR_ORDER, self.global_config,
                       deterministic)


class TemplatePairStack(nn.Module):
  """`config.num_block` template pair blocks with stacked parameters (Suppl. Alg. 16).

  Inputs: pair [N_res, N_res, c_t], pair_mask [N_res, N_res]. Output: the updated pair.
  """
  config: TemplatePairStackConfig = TemplatePairStackConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array, pair_mask: jax.Array,
               deterministic: bool = True) -> jax.Array:
    if not self.config.num_block:
      return pair
    # Haiku's layer_stack names its stacked scope so; the checkpoint keys carry it.
    block = TemplatePairBlock(self.config, self.global_config, name='__layer_stack_no_state')
    return apply_stacked(block, self.config.num_block, pair, pair_mask,
                         use_remat=self.global_config.use_remat, deterministic=deterministic)
