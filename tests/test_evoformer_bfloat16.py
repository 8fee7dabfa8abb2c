"""One Evoformer block (Suppl. Alg. 6) with bfloat16 activations against float32.

bfloat16 is a supported mode whose drift is measured, not assumed (DESIGN.md): parameters
stay float32, activations are bfloat16. The measured drift is printed (pytest -s).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.model.evoformer import EvoformerIteration
from jaxfold.model.global_config import GlobalConfig

# max|bf16 - f32| / max|f32| per output for one block at full channel sizes. bfloat16 keeps
# 8 significand bits (relative rounding 2^-9 ~ 2e-3); a block compounds a few dozen such
# roundings.
DRIFT_BOUND = 3e-2


def test_bfloat16_block_stays_close_to_float32():
  rng = np.random.default_rng(0)
  n_seq, n_res = 6, 16
  residue = np.ones(n_res, np.float32)
  residue[-3:] = 0.0
  msa_mask = np.tile(residue, (n_seq, 1))
  msa_mask[-1] = 0.0
  activations = {'msa': jnp.asarray(rng.standard_normal((n_seq, n_res, 256)), jnp.float32),
                 'pair': jnp.asarray(rng.standard_normal((n_res, n_res, 128)), jnp.float32)}
  masks = {'msa': jnp.asarray(msa_mask), 'pair': jnp.asarray(np.outer(residue, residue))}
  f32 = EvoformerIteration(global_config=GlobalConfig(zero_init=False))
  bf16 = EvoformerIteration(global_config=GlobalConfig(zero_init=False, dtype='bfloat16'))
  params = jax.jit(f32.init)(jax.random.key(0), activations, masks)
  ref = jax.jit(f32.apply)(params, activations, masks)
  out = jax.jit(bf16.apply)(params, jax.tree.map(lambda x: x.astype(jnp.bfloat16), activations),
                            masks)
  real = n_res - 3
  for key in ('msa', 'pair'):
    assert out[key].dtype == jnp.bfloat16
    # Real residues: padded pair entries carry the outer product mean's 1/1e-3 scale.
    crop = (slice(None), slice(0, real)) if key == 'msa' else (slice(0, real), slice(0, real))
    o = np.asarray(out[key][crop], np.float64)
    r = np.asarray(ref[key][crop], np.float64)
    drift = np.abs(o - r).max() / np.abs(r).max()
    print(f'bfloat16 drift of one Evoformer block, {key}: max|Δ|/max|ref| = {drift:.3e}')
    assert np.all(np.isfinite(o)) and drift < DRIFT_BOUND, (key, drift)
