"""Template pair embedding (Suppl. Alg. 2 lines 9-12, Alg. 16-17) against AlphaFold's classes.

Full model_1_ptm template sizes (c_z 128, c_t 64, 2 pair blocks) on 16 residues (2 of
them padding) and two real templates from AlphaFold's features of the query73 protein,
with gaps in their coverage; the second template is masked out by template_mask. One set
of perturbed AlphaFold weights serves every test (SingleTemplateEmbedding's are the
subtree of TemplateEmbedding's).
"""

import jax
import numpy as np
import pytest
from alphafold.model import modules as af

from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.template_embedding import (TEMPLATE_PAIR_FEATURES, SingleTemplateEmbedding,
                                              TemplateConfig, TemplateEmbedding)
from jaxfold.parity.alphafold_reference import (apply_reference, config_from_reference,
                                                flax_params, reference_config, reference_params)
from trunk_reference import processed_batch

CFG = reference_config('model_1_ptm').model
GC = CFG.global_config


def _template_config(use_template_unit_vector: bool = False):
  cfg = CFG.embeddings_and_evoformer.template.copy_and_resolve_references()
  cfg.use_template_unit_vector = use_template_unit_vector
  return cfg, config_from_reference(TemplateConfig, cfg)


def _inputs(shared, template_mask=(1.0, 0.0)):
  batch = processed_batch(shared, template_mask=template_mask)
  rng = np.random.default_rng(1)
  query = (rng.standard_normal((16, 16, 128)) * rng.uniform(0.5, 3.0, 128)).astype(np.float32)
  mask_2d = batch['seq_mask'][:, None] * batch['seq_mask'][None, :]
  templates = {k: batch[k] for k in TEMPLATE_PAIR_FEATURES + ('template_mask',)}
  return dict(query=query, templates=templates, mask_2d=mask_2d)


def _reference_template_embedding(query, templates, mask_2d):
  return af.TemplateEmbedding(_template_config()[0], GC)(query, templates, mask_2d,
                                                         is_training=False)


@pytest.fixture(scope='module')
def params(shared_dir):
  """Perturbed haiku parameters of AlphaFold's TemplateEmbedding ('template_embedding/...')."""
  return reference_params(_reference_template_embedding, _inputs(shared_dir), from_shapes=True)


@pytest.mark.parametrize('use_template_unit_vector', [False, True])
def test_single_template_embedding(parity, params, shared_dir, use_template_unit_vector):
  inputs = _inputs(shared_dir)
  template = {k: inputs['templates'][k][0] for k in TEMPLATE_PAIR_FEATURES}
  af_cfg, cfg = _template_config(use_template_unit_vector)
  prefix = 'template_embedding/'
  single_params = {k[len(prefix):]: v for k, v in params.items()
                   if k.startswith(prefix + 'single_template_embedding/')}

  def reference(query, template, mask_2d):
    return af.SingleTemplateEmbedding(af_cfg, GC)(query, template, mask_2d, is_training=False)

  ref = apply_reference(reference, single_params, dict(
      query=inputs['query'], template=template, mask_2d=inputs['mask_2d']))
  for pair_chunk_size in (None, 5):  # 5: features, embedding and stack 5 rows at a time
    ours = SingleTemplateEmbedding(cfg, GlobalConfig(pair_chunk_size=pair_chunk_size))
    out = jax.jit(ours.apply)({'params': flax_params(single_params)}, template,
                              inputs['mask_2d'])
    parity.check(f'single_template_embedding(unit_vector={use_template_unit_vector}, '
                 f'pair_chunk={pair_chunk_size})', out, ref)


def _ours(params, inputs, subbatch_size=None, pair_chunk_size=None):
  ours = TemplateEmbedding(_template_config()[1], GlobalConfig(
      subbatch_size=subbatch_size, pair_chunk_size=pair_chunk_size))
  return jax.jit(ours.apply)({'params': flax_params(params)}, inputs['query'],
                             inputs['templates'], inputs['mask_2d'])


@pytest.mark.parametrize('template_mask', [(1.0, 0.0), (1.0, 1.0)])
def test_template_embedding(parity, params, shared_dir, template_mask):
  """In one piece, and streamed (templates one at a time, never stacked, the softmax over them
  online; 16 residues in pair chunks of 7, the last overlapping)."""
  inputs = _inputs(shared_dir, template_mask)
  ref = apply_reference(_reference_template_embedding, params, inputs)
  parity.check(f'template_embedding(template_mask={template_mask})', _ours(params, inputs), ref)
  parity.check(f'template_embedding(template_mask={template_mask}, streamed)',
               _ours(params, inputs, 4, 7), ref)


def test_template_embedding_chunked(parity, params, shared_dir):
  """One template at a time, the attention in chunks of 128 queries and the pair a few rows
  at a time (the last chunk overlapping): the same result."""
  inputs = _inputs(shared_dir)
  unchunked = _ours(params, inputs)
  parity.check('template_embedding(subbatch=4) vs unchunked', _ours(params, inputs, 4),
               unchunked)
  parity.check('template_embedding(subbatch=4, pair_chunk=7) vs unchunked',
               _ours(params, inputs, 4, 7), unchunked)


def test_no_template_gives_zero(params, shared_dir):
  out = _ours(params, _inputs(shared_dir, template_mask=(0.0, 0.0)))
  np.testing.assert_array_equal(out, np.zeros_like(out))
