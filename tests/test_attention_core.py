"""The attention core's implementations against its reference ('xla'), values and gradients.

Random queries, keys and values with a mask bias (one batch row fully masked: every logit
clipped to -1e8, so it attends uniformly) and a pair bias, at lengths that no chunk size
divides (the last chunk is padded), and with chunks larger than the input. The Attention
module is compared the same way through its parameters; parity/test_attention.py compares
both implementations with AlphaFold's own attention.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.model import attention_core
from jaxfold.model.attention import Attention
from jaxfold.model.global_config import GlobalConfig

TOLERANCE = 1e-5  # DESIGN.md's module tolerance, max|Δ| / max|ref|


@pytest.fixture(autouse=True)
def highest_precision():
  with jax.default_matmul_precision('highest'):
    yield


def inputs(seed=0, batch=3, queries=37, keys=29, heads=4, channels=16, values=8):
  rng = np.random.default_rng(seed)
  mask = (rng.random((batch, keys)) > 0.3).astype(np.float32)
  mask[0] = 0.0
  return (rng.standard_normal((batch, queries, heads, channels)).astype(np.float32),
          rng.standard_normal((batch, keys, heads, channels)).astype(np.float32),
          rng.standard_normal((batch, keys, heads, values)).astype(np.float32),
          (1e9 * (mask - 1.0))[:, None, None, :],
          rng.standard_normal((1, heads, queries, keys)).astype(np.float32))


def relative(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def core(implementation, chunk_size=256):
  return lambda q, k, v, mask, pair: attention_core.attention(
      q, k, v, [mask, pair], implementation=implementation, chunk_size=chunk_size)


@pytest.mark.parametrize('chunk_size', [8, 16, 64])
def test_chunked_equals_xla_values_and_gradients(chunk_size):
  args = inputs()
  reference = core('xla')(*args)
  out = jax.jit(core('chunked', chunk_size))(*args)
  assert relative(out, reference) <= TOLERANCE
  # The fully masked row attends uniformly: the mean of the values.
  np.testing.assert_allclose(out[0], np.broadcast_to(args[2][0].mean(0), out[0].shape),
                             rtol=1e-5, atol=1e-6)

  weights = np.random.default_rng(1).standard_normal(reference.shape).astype(np.float32)
  grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * weights), argnums=range(5)))(*args)
           for f in (core('xla'), core('chunked', chunk_size))]
  for name, ref, ours in zip(('q', 'k', 'v', 'mask bias', 'pair bias'), *grads):
    assert ours.shape == ref.shape
    assert relative(ours, ref) <= TOLERANCE, name


def test_chunked_in_bfloat16():
  q, k, v, mask, pair = (x.astype(jnp.bfloat16) for x in inputs(seed=2))
  reference = core('xla')(*(x.astype(jnp.float32) for x in (q, k, v, mask, pair)))
  out = core('chunked', 16)(q, k, v, mask, pair)
  assert out.dtype == jnp.bfloat16
  assert relative(out.astype(jnp.float32), reference) <= 1e-2


def test_unknown_implementation_is_refused():
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    core('flash')(*inputs())


def test_attention_module_gradients_equal_across_implementations():
  rng = np.random.default_rng(3)
  q_data = rng.standard_normal((5, 21, 32)).astype(np.float32)
  mask = (rng.random((5, 21)) > 0.2).astype(np.float32)
  bias = (1e9 * (mask - 1.0))[:, None, None, :]
  pair = rng.standard_normal((4, 21, 21)).astype(np.float32)
  modules = {impl: Attention(num_head=4, output_dim=32, global_config=GlobalConfig(
      zero_init=False, attention=impl, attention_chunk_size=8)) for impl in ('xla', 'chunked')}
  params = modules['xla'].init(jax.random.key(0), q_data, q_data, bias, pair)

  def loss(impl):
    return lambda p, x, nb: jnp.sum(jnp.sin(modules[impl].apply(p, x, x, bias, nb)))

  ref = jax.grad(loss('xla'), argnums=(0, 1, 2))(params, q_data, pair)
  ours = jax.jit(jax.grad(loss('chunked'), argnums=(0, 1, 2)))(params, q_data, pair)
  flat_ref = dict(jax.tree_util.tree_leaves_with_path(ref))
  flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  assert flat_ref.keys() == flat_ours.keys()
  for path, r in flat_ref.items():
    assert relative(flat_ours[path], r) <= TOLERANCE, jax.tree_util.keystr(path)


def test_cudnn_falls_back_to_xla_with_one_warning_off_a_gpu():
  """'cudnn' on this CPU: a warning naming why, then the same call through XLA's
  implementation (the biases summed, the layout as cuDNN takes it), equal to the reference."""
  args = inputs(seed=4, values=16)
  with pytest.warns(RuntimeWarning, match="attention 'cudnn': no GPU"):
    out = core('cudnn')(*args)
  assert out.shape == core('xla')(*args).shape
  assert relative(out, core('xla')(*args)) <= TOLERANCE
  weights = np.random.default_rng(5).standard_normal(out.shape).astype(np.float32)
  with pytest.warns(RuntimeWarning):
    grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * weights), argnums=range(5))(*args)
             for f in (core('xla'), core('cudnn'))]
  for name, ref, ours in zip(('q', 'k', 'v', 'mask bias', 'pair bias'), *grads):
    assert relative(ours, ref) <= TOLERANCE, name


def test_cudnn_with_unequal_head_sizes_falls_back_to_the_reference():
  args = inputs(seed=6)  # values of 8 channels, keys of 16
  with pytest.warns(RuntimeWarning, match='keys and values differ in head size'):
    out = core('cudnn')(*args)
  np.testing.assert_array_equal(out, core('xla')(*args))
