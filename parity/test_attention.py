"""Attention cores (Suppl. Alg. 7 lines 2-7, Alg. 19 lines 2-7) against AlphaFold's."""


import numpy as np
import pytest
from alphafold.model import modules as af

from jaxfold.model.attention import Attention, GlobalAttention
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_reference import flax_params, reference_config, run_reference

GC = reference_config().model.global_config


def _inputs(rng, batch=6, queries=20, keys=20, channels=256, heads=8):
  mask = (rng.random((batch, keys)) > 0.2).astype(np.float32)
  mask[:, 0] = 1.0
  return dict(
      q_data=rng.standard_normal((batch, queries, channels)).astype(np.float32),
      m_data=rng.standard_normal((batch, keys, channels)).astype(np.float32),
      bias=(1e9 * (mask - 1.0))[:, None, None, :].astype(np.float32),
      nonbatched_bias=rng.standard_normal((heads, queries, keys)).astype(np.float32),
  )


@pytest.mark.parametrize('gating', [True, False])
@pytest.mark.parametrize('subbatch_size', [None, 4])
@pytest.mark.parametrize('implementation', ['xla', 'chunked', 'cudnn'])
def test_attention(parity, gating, subbatch_size, implementation):
  """Chunked: 20 queries and keys in chunks of 8, the last one padded. cuDNN's call (off a
  GPU, or in float32: XLA's implementation of it) takes keys and values of one head size."""
  inputs = _inputs(np.random.default_rng(0))
  value_dim = 128 if implementation == 'cudnn' else 256
  cfg = {'num_head': 8, 'gating': gating, 'key_dim': 128, 'value_dim': value_dim}

  def reference(**kw):
    import ml_collections
    return af.Attention(ml_collections.ConfigDict(cfg), GC, output_dim=192)(**kw)

  params, ref = run_reference(reference, inputs)
  ours = Attention(num_head=8, output_dim=192, key_dim=128, value_dim=value_dim, gating=gating,
                   global_config=GlobalConfig(subbatch_size=subbatch_size,
                                              attention=implementation, attention_chunk_size=8))
  out = ours.apply({'params': flax_params(params)}, **inputs)
  parity.check(f'attention(gating={gating}, subbatch={subbatch_size}, {implementation})', out,
               ref)


@pytest.mark.parametrize('gating', [True, False])
def test_global_attention(parity, gating):
  rng = np.random.default_rng(1)
  inputs = _inputs(rng, channels=64)
  mask = (rng.random((6, 20, 1)) > 0.3).astype(np.float32)
  inputs = dict(q_data=inputs['q_data'], m_data=inputs['q_data'], q_mask=mask)
  cfg = {'num_head': 8, 'gating': gating}

  def reference(**kw):
    import ml_collections
    return af.GlobalAttention(ml_collections.ConfigDict(cfg), GC, output_dim=64)(**kw)

  params, ref = run_reference(reference, inputs)
  ours = GlobalAttention(num_head=8, output_dim=64, gating=gating)
  out = ours.apply({'params': flax_params(params)}, **inputs)
  parity.check(f'global_attention(gating={gating})', out, ref)
