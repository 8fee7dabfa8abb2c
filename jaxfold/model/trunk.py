"""The embeddings and the Evoformer: one recycling iteration's trunk.

Jumper et al. (2021) Suppl. Alg. 2 'Inference' lines 5-17: input embedding (Alg. 3-5),
recycling (Alg. 32), templates (lines 7-13, Alg. 16-17), the extra-MSA stack (Alg. 18), the
Evoformer stack (Alg. 6) and the single representation (Alg. 6 line 12).

Input: AlphaFold's processed features of one ensemble member (no leading ensemble axis):
target_feat [N_res, 22], msa_feat [N_seq, N_res, 49], residue_index, seq_mask, aatype
[N_res], msa_mask [N_seq, N_res], extra_msa / extra_has_deletion / extra_deletion_value /
extra_msa_mask [N_extra, N_res], template_* [N_templ, ...] (OpenFold's precomputed
template torsion angles optional: `template_torsion_angles`), prev_pos [N_res, 37, 3],
prev_msa_first_row [N_res, c_m], prev_pair [N_res, N_res, c_z].
Output: 'single' [N_res, c_s], 'pair' [N_res, N_res, c_z], 'msa' [N_seq, N_res, c_m],
'msa_first_row' [N_res, c_m], in float32.
"""

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.model.embedders import DgramConfig, ExtraMsaEmbedder, InputEmbedder, RecyclingEmbedder
from jaxfold.model.evoformer import EvoformerIterationConfig, evoformer_stack
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import Linear
from jaxfold.model.template_embedding import (TEMPLATE_PAIR_FEATURES, TemplateConfig,
                                              TemplateEmbedding, TemplateTorsionEmbedder)


@dataclasses.dataclass(frozen=True)
class EmbeddingsAndEvoformerConfig:
  """AlphaFold's `model.embeddings_and_evoformer` config (its full-size monomer values).

  As in AlphaFold's base config, templates are off; the model_1 / model_2 presets turn on
  `template.enabled` and `template.embed_torsion_angles`.

  `extra_msa`: the extra-MSA blocks' config; None (AlphaFold) uses `evoformer`'s. OpenFold
  sets the attention widths of each stack separately, which only differs from AlphaFold's
  shared config in models of other channel sizes (e.g. OpenFold's reduced test models).
  """
  evoformer_num_block: int = 48
  evoformer: EvoformerIterationConfig = EvoformerIterationConfig()
  extra_msa: EvoformerIterationConfig | None = None
  extra_msa_channel: int = 64
  extra_msa_stack_num_block: int = 4
  max_relative_feature: int = 32
  msa_channel: int = 256
  pair_channel: int = 128
  prev_pos: DgramConfig = DgramConfig()
  recycle_features: bool = True
  recycle_pos: bool = True
  seq_channel: int = 384
  template: TemplateConfig = TemplateConfig()


class EmbeddingsAndEvoformer(nn.Module):
  """Embeds the features and runs the extra-MSA and Evoformer stacks (Suppl. Alg. 2 lines 5-17).

  AlphaFold's module `evoformer`: the embedders' layers sit directly in it, next to
  `template_embedding`, `extra_msa_stack`, `evoformer_iteration` and `single_activations`.
  Shapes in the file docstring.
  """
  config: EmbeddingsAndEvoformerConfig = EmbeddingsAndEvoformerConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True
               ) -> dict[str, jax.Array]:
    c, gc = self.config, self.global_config
    dtype = gc.compute_dtype

    # With the previous pair recycled, the input pair is built straight into its buffer.
    msa, pair = InputEmbedder(c.msa_channel, c.pair_channel, c.max_relative_feature, gc)(
        batch['target_feat'], batch['msa_feat'], batch['residue_index'],
        pair_as_rows=c.recycle_features)
    if c.recycle_pos or c.recycle_features:
      msa, pair = RecyclingEmbedder(c.pair_channel, c.prev_pos, c.recycle_pos,
                                    c.recycle_features, gc)(
          msa, pair, batch['aatype'], batch.get('prev_pos'), batch.get('prev_msa_first_row'),
          batch.get('prev_pair'))
    seq_mask = batch['seq_mask'].astype(dtype)
    mask_2d = seq_mask[:, None] * seq_mask[None, :]

    if c.template.enabled:
      templates = {k: batch[k] for k in TEMPLATE_PAIR_FEATURES + ('template_mask',)}
      pair = TemplateEmbedding(c.template, gc, name='template_embedding')(
          pair, templates, mask_2d, deterministic, add_to_input=True)

    extra_msa = ExtraMsaEmbedder(c.extra_msa_channel, gc)(
        batch['extra_msa'], batch['extra_has_deletion'], batch['extra_deletion_value'])
    pair = evoformer_stack(
        {'msa': extra_msa, 'pair': pair},
        {'msa': batch['extra_msa_mask'].astype(dtype), 'pair': mask_2d},
        num_block=c.extra_msa_stack_num_block, is_extra_msa=True,
        config=c.extra_msa or c.evoformer,
        global_config=gc, deterministic=deterministic)['pair']

    msa_mask = batch['msa_mask'].astype(dtype)
    if c.template.enabled and c.template.embed_torsion_angles:
      # The templates join the MSA as extra rows (Suppl. Alg. 2 lines 7-8).
      template_rows, template_row_mask = TemplateTorsionEmbedder(c.msa_channel, gc)(
          {k: v for k, v in batch.items() if k.startswith('template_')})
      msa = jnp.concatenate([msa, template_rows], axis=0)
      msa_mask = jnp.concatenate([msa_mask, template_row_mask], axis=0)

    out = evoformer_stack(
        {'msa': msa, 'pair': pair}, {'msa': msa_mask, 'pair': mask_2d},
        num_block=c.evoformer_num_block, is_extra_msa=False, config=c.evoformer,
        global_config=gc, deterministic=deterministic)
    msa, pair = out['msa'], out['pair']
    single = Linear(c.seq_channel, name='single_activations')(msa[0])

    num_seq = batch['msa_feat'].shape[0]
    outputs = {
        'single': single,
        'pair': pair,
        # The template rows are not MSA sequences: the masked-MSA head must not see them.
        'msa': msa[:num_seq],
        'msa_first_row': msa[0],
    }
    return {k: v.astype(jnp.float32) for k, v in outputs.items()}
