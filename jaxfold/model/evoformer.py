"""One Evoformer block, and the stacked main Evoformer and extra-MSA stacks.

Jumper et al. (2021) Suppl. Alg. 6 'EvoformerStack' lines 2-10 (one block) and Alg. 18
'ExtraMsaStack' (the same block with global column attention). Stacked blocks keep
AlphaFold's parameter paths: `evoformer_iteration/<module>/...` with a leading axis of 48
and `extra_msa_stack/<module>/...` with a leading axis of 4.
"""

import dataclasses
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax

from jaxfold.model.axial_attention import AttentionConfig
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.layer_stack import apply_stacked
from jaxfold.model.logical_axes import MSA_AXES, PAIR_AXES, constrain
from jaxfold.model.msa_attention import (COLUMN_ATTENTION, MSAColumnAttention,
                                         MSAColumnGlobalAttention, MSARowAttentionWithPairBias)
from jaxfold.model.outer_product_mean import OuterProductMean, OuterProductMeanConfig
from jaxfold.model.residual import add_residual
from jaxfold.model.transition import Transition, TransitionConfig
from jaxfold.model.triangle_attention import ENDING_NODE, STARTING_NODE, TriangleAttention
from jaxfold.model.triangle_multiplication import (INCOMING, OUTGOING, TriangleMultiplication,
                                                   TriangleMultiplicationConfig)


@dataclasses.dataclass(frozen=True)
class EvoformerIterationConfig:
  """AlphaFold's `embeddings_and_evoformer.evoformer` config, one field per module."""
  msa_row_attention_with_pair_bias: AttentionConfig = AttentionConfig()
  msa_column_attention: AttentionConfig = COLUMN_ATTENTION
  msa_transition: TransitionConfig = TransitionConfig()
  outer_product_mean: OuterProductMeanConfig = OuterProductMeanConfig()
  triangle_multiplication_outgoing: TriangleMultiplicationConfig = OUTGOING
  triangle_multiplication_incoming: TriangleMultiplicationConfig = INCOMING
  triangle_attention_starting_node: AttentionConfig = STARTING_NODE
  triangle_attention_ending_node: AttentionConfig = ENDING_NODE
  pair_transition: TransitionConfig = TransitionConfig()


# The pair modules of a block, in AlphaFold's order (Alg. 6 lines 6-10), named as its config
# fields and submodules. The template pair stack runs the same modules in another order.
EVOFORMER_PAIR_ORDER = ('triangle_multiplication_outgoing', 'triangle_multiplication_incoming',
                        'triangle_attention_starting_node', 'triangle_attention_ending_node',
                        'pair_transition')


def update_pair(pair: jax.Array, pair_mask: jax.Array, config: object, order: Sequence[str],
                global_config: GlobalConfig, deterministic: bool) -> jax.Array:
  """Applies the named pair modules in `order`, each as a residual update with dropout.

  pair [N_res, N_res, c], pair_mask [N_res, N_res]; `config` has one field per name, a
  TriangleMultiplicationConfig, AttentionConfig or TransitionConfig. Call inside a compact
  method: the modules become submodules of the caller under those names. Without dropout
  (`deterministic`) each module adds its update into the pair itself, in place chunk by
  chunk when chunked, so no whole update exists beside the pair.
  """
  for name in order:
    module_config = getattr(config, name)
    pair = constrain(pair, PAIR_AXES[module_config.orientation])
    if isinstance(module_config, TransitionConfig):
      module, masks = Transition(module_config, global_config, name=name), ()
    elif isinstance(module_config, TriangleMultiplicationConfig):
      module = TriangleMultiplication(module_config, global_config, name=name)
      masks = (pair_mask,)
    else:
      module, masks = TriangleAttention(module_config, global_config, name=name), (pair_mask,)
    if deterministic:
      pair = module(pair, *masks, add_to_input=True)
    else:
      pair = add_residual(pair, module(pair, *masks), module_config, deterministic)
  return pair


class EvoformerIteration(nn.Module):
  """One Evoformer block (Suppl. Alg. 6 lines 2-10; Alg. 18 lines 2-10 with `is_extra_msa`).

  activations: {'msa': [N_seq, N_res, c_m], 'pair': [N_res, N_res, c_z]}; masks: {'msa':
  [N_seq, N_res], 'pair': [N_res, N_res]}. Returns the updated activations, same shapes.
  Every update is added through dropout unless `deterministic`.
  """
  config: EvoformerIterationConfig = EvoformerIterationConfig()
  is_extra_msa: bool = False
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, activations: Mapping[str, jax.Array], masks: Mapping[str, jax.Array],
               deterministic: bool = True) -> dict[str, jax.Array]:
    c, gc = self.config, self.global_config
    msa, pair = activations['msa'], activations['pair']
    msa_mask, pair_mask = masks['msa'], masks['pair']

    def residual(act, update, config):
      return add_residual(act, update, config, deterministic)

    def by_column(msa):  # each device then computes whole rows of the outer product
      return constrain(msa, MSA_AXES['per_column'])

    outer_product_mean = OuterProductMean(pair.shape[-1], c.outer_product_mean, gc,
                                          name='outer_product_mean')

    def add_outer_product_mean(pair, msa):
      if deterministic:  # added into the pair in place
        return outer_product_mean(by_column(msa), msa_mask, add_to=pair)
      return residual(pair, outer_product_mean(by_column(msa), msa_mask), c.outer_product_mean)

    if c.outer_product_mean.first:
      pair = add_outer_product_mean(pair, msa)

    row = MSARowAttentionWithPairBias(c.msa_row_attention_with_pair_bias, gc,
                                      name='msa_row_attention_with_pair_bias')
    msa = constrain(msa, MSA_AXES[c.msa_row_attention_with_pair_bias.orientation])
    msa = residual(msa, row(msa, msa_mask, pair), c.msa_row_attention_with_pair_bias)
    if self.is_extra_msa:
      column = MSAColumnGlobalAttention(c.msa_column_attention, gc,
                                        name='msa_column_global_attention')
    else:
      column = MSAColumnAttention(c.msa_column_attention, gc, name='msa_column_attention')
    msa = constrain(msa, MSA_AXES[c.msa_column_attention.orientation])
    msa = residual(msa, column(msa, msa_mask), c.msa_column_attention)
    msa = constrain(msa, MSA_AXES[c.msa_transition.orientation])
    msa = residual(msa, Transition(c.msa_transition, gc, name='msa_transition')(msa),
                   c.msa_transition)

    if not c.outer_product_mean.first:
      pair = add_outer_product_mean(pair, msa)

    pair = update_pair(pair, pair_mask, c, EVOFORMER_PAIR_ORDER, gc, deterministic)
    return {'msa': msa, 'pair': pair}


def evoformer_stack(activations: Mapping[str, jax.Array], masks: Mapping[str, jax.Array], *,
                    num_block: int, is_extra_msa: bool,
                    config: EvoformerIterationConfig = EvoformerIterationConfig(),
                    global_config: GlobalConfig = GlobalConfig(),
                    deterministic: bool = True) -> dict[str, jax.Array]:
  """`num_block` Evoformer blocks with stacked parameters; call inside a compact method.

  The parameters land under the caller, named as AlphaFold's: 'extra_msa_stack' for the
  extra-MSA stack (Alg. 18, AlphaFold: 4 blocks) and 'evoformer_iteration' for the main
  one (Alg. 6, AlphaFold: 48 blocks). Shapes as in `EvoformerIteration`.
  """
  name = 'extra_msa_stack' if is_extra_msa else 'evoformer_iteration'
  block = EvoformerIteration(config, is_extra_msa, global_config, name=name)
  return apply_stacked(block, num_block, dict(activations), masks,
                       use_remat=global_config.use_remat, deterministic=deterministic)
