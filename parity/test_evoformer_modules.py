"""Evoformer modules (Suppl. Alg. 7-15, 19) against AlphaFold's own classes, full channel sizes.

Inputs have padded residues and padded MSA rows; every module runs unchunked and chunked
(3 rows at a time, the last chunk overlapping its neighbour; chunking must not change the
result), and the pair modules also add their update into their input in place (the last
chunk then shorter), as inference does. Also: jaxfold's config defaults are AlphaFold's
monomer values.
"""

import dataclasses
import functools

import numpy as np
import pytest
from alphafold.model import modules as af

from jaxfold.model.axial_attention import AttentionConfig
from jaxfold.model.evoformer import EvoformerIterationConfig
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.msa_attention import (MSAColumnAttention, MSAColumnGlobalAttention,
                                         MSARowAttentionWithPairBias)
from jaxfold.model.outer_product_mean import OuterProductMean, OuterProductMeanConfig
from jaxfold.model.template_pair_stack import TemplatePairStackConfig
from jaxfold.model.transition import Transition, TransitionConfig
from jaxfold.model.triangle_attention import TriangleAttention
from jaxfold.model.triangle_multiplication import (TriangleMultiplication,
                                                   TriangleMultiplicationConfig)
from jaxfold.parity.alphafold_reference import (config_from_reference, flax_params,
                                                reference_config, run_reference)

CFG = reference_config(one_chunk=True).model
# jaxfold runs both unchunked and chunked against it.
GC = CFG.global_config
EVO = CFG.embeddings_and_evoformer.evoformer
TPS = CFG.embeddings_and_evoformer.template.template_pair_stack
N_SEQ, N_RES, N_PAD = 7, 20, 3
SUBBATCH = [None, 4]
# Unchunked, and the inference chunking, 3 rows at a time (N_RES is not a multiple of 3).
CHUNKINGS = [GlobalConfig(), GlobalConfig(subbatch_size=3, pair_chunk_size=3)]


def evoformer_inputs(rng: np.random.Generator, c_m: int = 256, c_z: int = 128,
                     n_seq: int = N_SEQ) -> dict[str, np.ndarray]:
  """MSA [n_seq, N_RES, c_m] and pair [N_RES, N_RES, c_z] with AlphaFold-style masks.

  The last N_PAD residues and the last MSA row are padding; a few other MSA entries are
  masked out as well.
  """
  residue = np.ones(N_RES, np.float32)
  residue[-N_PAD:] = 0.0
  msa_mask = np.tile(residue, (n_seq, 1))
  msa_mask[-1] = 0.0
  msa_mask[1:-1] *= rng.random((n_seq - 2, N_RES)) > 0.1
  return dict(
      msa=rng.standard_normal((n_seq, N_RES, c_m)).astype(np.float32),
      msa_mask=msa_mask,
      pair=rng.standard_normal((N_RES, N_RES, c_z)).astype(np.float32),
      pair_mask=np.outer(residue, residue).astype(np.float32),
  )


def _check(parity, name, module, ref_fn, inputs, residual=None):
  """Runs AlphaFold once, then `module` unchunked and chunked on its weights.

  With `residual` (the module's input), also the module adding its update into it in place
  (`add_to_input`), against the residual plus AlphaFold's update.
  """
  params, ref = run_reference(ref_fn, inputs)
  for gc in CHUNKINGS:
    apply = functools.partial(module.clone(global_config=gc).apply,
                              {'params': flax_params(params)}, *inputs.values())
    label = f'{name}(subbatch={gc.subbatch_size}, pair_chunk={gc.pair_chunk_size})'
    parity.check(label, apply(), ref)
    if residual is not None:
      parity.check(label + ' added in place', apply(add_to_input=True), residual + ref)


def test_configs_are_alphafolds():
  assert EvoformerIterationConfig() == config_from_reference(EvoformerIterationConfig, EVO)
  assert TemplatePairStackConfig() == config_from_reference(TemplatePairStackConfig, TPS)
  # Every AlphaFold key has a field, except the fused-projection switch (jaxfold: unfused).
  for node, cls in [(EVO, EvoformerIterationConfig), (TPS, TemplatePairStackConfig)]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in node.items():
      assert key in fields, key
      if hasattr(value, 'items'):
        sub = {f.name for f in dataclasses.fields(getattr(cls(), key))}
        assert set(value) - sub <= {'fuse_projection_weights'}, (key, set(value) - sub)


def test_msa_row_attention_with_pair_bias(parity):
  x = evoformer_inputs(np.random.default_rng(0))
  inputs = dict(msa_act=x['msa'], msa_mask=x['msa_mask'], pair_act=x['pair'])
  config = EVO.msa_row_attention_with_pair_bias
  ours = MSARowAttentionWithPairBias(config_from_reference(AttentionConfig, config))
  _check(parity, 'msa_row_attention_with_pair_bias', ours,
         lambda **kw: af.MSARowAttentionWithPairBias(config, GC)(**kw, is_training=False),
         inputs)


def test_msa_column_attention(parity):
  x = evoformer_inputs(np.random.default_rng(1))
  inputs = dict(msa_act=x['msa'], msa_mask=x['msa_mask'])
  config = EVO.msa_column_attention
  ours = MSAColumnAttention(config_from_reference(AttentionConfig, config))
  _check(parity, 'msa_column_attention', ours,
         lambda **kw: af.MSAColumnAttention(config, GC)(**kw, is_training=False),
         inputs)


def test_msa_column_global_attention(parity):
  x = evoformer_inputs(np.random.default_rng(2), c_m=64)
  inputs = dict(msa_act=x['msa'], msa_mask=x['msa_mask'])
  config = EVO.msa_column_attention
  ours = MSAColumnGlobalAttention(config_from_reference(AttentionConfig, config))
  _check(parity, 'msa_column_global_attention', ours,
         lambda **kw: af.MSAColumnGlobalAttention(config, GC)(**kw, is_training=False),
         inputs)


@pytest.mark.parametrize('which', ['msa_transition', 'pair_transition', 'template_pair_transition'])
def test_transition(parity, which):
  x = evoformer_inputs(np.random.default_rng(3))
  config = TPS.pair_transition if which == 'template_pair_transition' else EVO[which]
  act, mask = {'msa_transition': (x['msa'], x['msa_mask']),
               'pair_transition': (x['pair'], x['pair_mask']),
               'template_pair_transition': (x['pair'][..., :64], x['pair_mask'])}[which]
  _check(parity, which, Transition(config_from_reference(TransitionConfig, config)),
         lambda act: af.Transition(config, GC)(act, mask, is_training=False), {'act': act},
         residual=act)


@pytest.mark.parametrize('c_m', [256, 64])
def test_outer_product_mean(parity, c_m):
  x = evoformer_inputs(np.random.default_rng(4), c_m=c_m)
  inputs = dict(act=x['msa'], mask=x['msa_mask'])
  config = EVO.outer_product_mean
  params, ref = run_reference(
      lambda **kw: af.OuterProductMean(config, GC, 128)(**kw, is_training=False), inputs)
  # The residue chunk follows the config's chunk_size; 3 makes the chunked path run here.
  ours_config = dataclasses.replace(config_from_reference(OuterProductMeanConfig, config),
                                    chunk_size=3)
  pair = x['pair']
  real = N_RES - N_PAD
  for subbatch_size in SUBBATCH:
    ours = OuterProductMean(128, ours_config, GlobalConfig(subbatch_size=subbatch_size))
    out = ours.apply({'params': flax_params(params)}, *inputs.values())
    name = f'outer_product_mean(c_m={c_m}, subbatch={subbatch_size})'
    parity.check(name, out, ref)
    # Padded residues divide by 1e-3 and dominate max|ref|: the real ones on their own.
    parity.check(name + ' real residues', out[:real, :real], ref[:real, :real])
    added = ours.apply({'params': flax_params(params)}, *inputs.values(), add_to=pair)
    parity.check(name + ' added in place, real residues', added[:real, :real],
                 pair[:real, :real] + ref[:real, :real])


@pytest.mark.parametrize('stack', ['evoformer', 'template_pair_stack'])
@pytest.mark.parametrize('which', ['triangle_multiplication_outgoing',
                                   'triangle_multiplication_incoming'])
def test_triangle_multiplication(parity, which, stack):
  x = evoformer_inputs(np.random.default_rng(5), c_z=128 if stack == 'evoformer' else 64)
  inputs = dict(left_act=x['pair'], left_mask=x['pair_mask'])
  config = (EVO if stack == 'evoformer' else TPS)[which]
  ours = TriangleMultiplication(config_from_reference(TriangleMultiplicationConfig, config))
  _check(parity, f'{stack}/{which}', ours,
         lambda **kw: af.TriangleMultiplication(config, GC, name=which)(**kw, is_training=False),
         inputs, residual=x['pair'])


@pytest.mark.parametrize('stack', ['evoformer', 'template_pair_stack'])
@pytest.mark.parametrize('which', ['triangle_attention_starting_node',
                                   'triangle_attention_ending_node'])
def test_triangle_attention(parity, which, stack):
  x = evoformer_inputs(np.random.default_rng(6), c_z=128 if stack == 'evoformer' else 64)
  inputs = dict(pair_act=x['pair'], pair_mask=x['pair_mask'])
  config = (EVO if stack == 'evoformer' else TPS)[which]
  ours = TriangleAttention(config_from_reference(AttentionConfig, config))
  _check(parity, f'{stack}/{which}', ours,
         lambda **kw: af.TriangleAttention(config, GC, name=which)(**kw, is_training=False),
         inputs, residual=x['pair'])
