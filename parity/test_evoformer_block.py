"""Evoformer blocks and stacks against AlphaFold's: Suppl. Alg. 6 (one block and a stack of
them), Alg. 18 (the extra-MSA block) and Alg. 16 (the template pair stack), deterministic,
full channel sizes, padded residues and MSA rows.
"""

import flax.linen as nn
import haiku as hk
import jax
import numpy as np
import pytest
from alphafold.model import layer_stack, prng
from alphafold.model import modules as af

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.model.evoformer import EvoformerIteration, EvoformerIterationConfig, evoformer_stack
from jaxfold.model.template_pair_stack import TemplatePairStack, TemplatePairStackConfig
from jaxfold.parity.alphafold_reference import (config_from_reference, flax_params,
                                                reference_config, run_reference)

CFG = reference_config(one_chunk=True).model
GC = CFG.global_config
EVO = CFG.embeddings_and_evoformer.evoformer
TPS = CFG.embeddings_and_evoformer.template.template_pair_stack
N_SEQ, N_RES, N_PAD = 6, 16, 3


def _check(parity, name, out, ref):
  """All outputs, then the real residues alone: the outer product mean's padded pair entries
  (divided by its 1e-3 epsilon) dominate max|ref| of the whole pair."""
  parity.check(name, out, ref)
  real = N_RES - N_PAD
  crop = {'msa': lambda x: x[:, :real], 'pair': lambda x: x[:real, :real]}
  parity.check(name + ' real residues', {k: crop[k](out[k]) for k in out},
               {k: crop[k](ref[k]) for k in ref})


def _inputs(rng: np.random.Generator, c_m: int) -> tuple[dict, dict]:
  """activations {'msa', 'pair'} and masks: last N_PAD residues and last MSA row padding."""
  residue = np.ones(N_RES, np.float32)
  residue[-N_PAD:] = 0.0
  msa_mask = np.tile(residue, (N_SEQ, 1))
  msa_mask[-1] = 0.0
  msa_mask[1:-1] *= rng.random((N_SEQ - 2, N_RES)) > 0.1
  activations = {'msa': rng.standard_normal((N_SEQ, N_RES, c_m)).astype(np.float32),
                 'pair': rng.standard_normal((N_RES, N_RES, 128)).astype(np.float32)}
  return activations, {'msa': msa_mask, 'pair': np.outer(residue, residue)}


@pytest.mark.parametrize('is_extra_msa', [False, True])
def test_evoformer_iteration(parity, is_extra_msa):
  activations, masks = _inputs(np.random.default_rng(0), 64 if is_extra_msa else 256)

  def reference(activations, masks):
    return af.EvoformerIteration(EVO, GC, is_extra_msa)(activations, masks, is_training=False)

  params, ref = run_reference(reference, {'activations': activations, 'masks': masks}, jit=True)
  ours = EvoformerIteration(config_from_reference(EvoformerIterationConfig, EVO), is_extra_msa)
  out = jax.jit(ours.apply)({'params': flax_params(params)}, activations, masks)
  _check(parity, f'evoformer_iteration(is_extra_msa={is_extra_msa})', out, ref)


def test_template_pair_stack(parity):
  rng = np.random.default_rng(1)
  _, masks = _inputs(rng, 64)
  inputs = {'pair_act': rng.standard_normal((N_RES, N_RES, 64)).astype(np.float32),
            'pair_mask': masks['pair']}
  params, ref = run_reference(
      lambda **kw: af.TemplatePairStack(TPS, GC)(**kw, is_training=False), inputs, jit=True)
  assert all(path.startswith('template_pair_stack/__layer_stack_no_state/') for path in params)
  ours = TemplatePairStack(config_from_reference(TemplatePairStackConfig, TPS))
  out = jax.jit(ours.apply)({'params': flax_params(params)}, *inputs.values())
  _check(parity, 'template_pair_stack', {'pair': out}, {'pair': ref})


class _Stack(nn.Module):
  """The main stack as AlphaFold's EmbeddingsAndEvoformer holds it: 'evoformer_iteration'."""
  num_block: int

  @nn.compact
  def __call__(self, activations, masks):
    return evoformer_stack(activations, masks, num_block=self.num_block, is_extra_msa=False,
                           config=config_from_reference(EvoformerIterationConfig, EVO))


def test_stacked_evoformer(parity):
  """Two blocks stacked as AlphaFold's EmbeddingsAndEvoformer stacks them (layer_stack)."""
  num_block = 2
  activations, masks = _inputs(np.random.default_rng(2), 256)

  def reference(activations, masks):
    block = af.EvoformerIteration(EVO, GC, is_extra_msa=False, name='evoformer_iteration')

    def body(x):
      act, key = x
      key, subkey = key.split()
      return block(act, masks, is_training=False, safe_key=subkey), key

    out, _ = layer_stack.layer_stack(num_block)(body)(
        (activations, prng.SafeKey(hk.next_rng_key())))
    return out

  params, ref = run_reference(reference, {'activations': activations, 'masks': masks}, jit=True)
  tree = from_haiku(params)
  assert list(tree) == ['evoformer_iteration']
  out = jax.jit(_Stack(num_block).apply)({'params': tree}, activations, masks)
  _check(parity, f'evoformer_iteration x{num_block}', out, ref)
