"""Stacked Evoformer blocks (scan, remat) and AlphaFold's shared residual dropout.

Reference-free: a scanned stack equals its blocks applied one by one; remat changes no value,
gradient or dropout mask; dropout masks are shared along the axis AlphaFold shares them
(per_row: axis 0, per_column: axis 1), keep 1 - rate of the update, differ between blocks,
and vanish when deterministic.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.model.evoformer import EvoformerIteration, EvoformerIterationConfig, evoformer_stack
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.residual import shared_axis
from jaxfold.model.template_pair_stack import TemplatePairStack

CONFIG = EvoformerIterationConfig()
# Non-zero output layers, so every update (and so every dropout input) is non-zero.
GC = GlobalConfig(zero_init=False)
BLOCK = EvoformerIteration(CONFIG, global_config=GC)
N_SEQ, N_RES, C_M, C_Z = 8, 16, 32, 32

# Block order of the modules with a non-zero dropout rate (AlphaFold's monomer config).
DROPPED = ['msa_row_attention_with_pair_bias', 'triangle_multiplication_outgoing',
           'triangle_multiplication_incoming', 'triangle_attention_starting_node',
           'triangle_attention_ending_node']


class _Stack(nn.Module):
  num_block: int
  global_config: GlobalConfig = GC

  @nn.compact
  def __call__(self, activations, masks, deterministic=True):
    return evoformer_stack(activations, masks, num_block=self.num_block, is_extra_msa=False,
                           global_config=self.global_config, deterministic=deterministic)


def _masks(padded: bool) -> dict:
  residue = np.ones(N_RES, np.float32)
  if padded:
    residue[-3:] = 0.0
  msa = np.tile(residue, (N_SEQ, 1))
  if padded:
    msa[-1] = 0.0
  return {'msa': jnp.asarray(msa), 'pair': jnp.asarray(np.outer(residue, residue))}


@pytest.fixture(scope='module')
def activations():
  rng = np.random.default_rng(0)
  return {'msa': jnp.asarray(rng.standard_normal((N_SEQ, N_RES, C_M)), jnp.float32),
          'pair': jnp.asarray(rng.standard_normal((N_RES, N_RES, C_Z)), jnp.float32)}


@pytest.fixture(scope='module')
def stack_params(activations):
  init = jax.jit(_Stack(2).init)
  return init(jax.random.key(0), activations, _masks(True))['params']


def _block(stack_params, i):
  return jax.tree.map(lambda p: p[i], stack_params['evoformer_iteration'])


@functools.partial(jax.jit, static_argnums=3)
def _block_with_dropout_calls(params, activations, masks, deterministic, key):
  """The block's output and the (input, output) of each of its Dropout calls."""
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, nn.Dropout) and context.method_name == '__call__':
      calls.append((args[0], out))
    return out

  with nn.intercept_methods(record):
    out = BLOCK.apply({'params': params}, activations, masks, deterministic,
                      rngs={'dropout': key})
  return out, calls


def test_scanned_stack_equals_blocks_one_by_one(activations, stack_params):
  masks = _masks(True)
  stacked = jax.jit(_Stack(2).apply)({'params': stack_params}, activations, masks)
  act = activations
  for i in range(2):
    act, _ = _block_with_dropout_calls(_block(stack_params, i), act, masks, True,
                                       jax.random.key(0))
  for key in act:
    np.testing.assert_allclose(stacked[key], act[key], rtol=1e-5, atol=1e-5)
  # Each block got its own initialisation.
  weights = stack_params['evoformer_iteration']['pair_transition']['transition1']['weights']
  assert weights.shape[0] == 2 and not np.allclose(weights[0], weights[1])


def test_remat_changes_neither_values_nor_gradients():
  # The template pair stack goes through the same stacking helper and is cheaper to compile.
  rng = np.random.default_rng(1)
  pair = jnp.asarray(rng.standard_normal((N_RES, N_RES, 16)), jnp.float32)
  pair_mask = _masks(True)['pair']
  params = jax.jit(TemplatePairStack(global_config=GC).init)(jax.random.key(0), pair, pair_mask)

  @functools.partial(jax.jit, static_argnums=1)
  @functools.partial(jax.value_and_grad)
  def loss(params, use_remat):
    stack = TemplatePairStack(global_config=GlobalConfig(zero_init=False, use_remat=use_remat))
    # With dropout on: remat must also replay the same dropout masks.
    out = stack.apply(params, pair, pair_mask, False, rngs={'dropout': jax.random.key(7)})
    return jnp.sum(out ** 2)

  def forward_jaxpr(use_remat):
    stack = TemplatePairStack(global_config=GlobalConfig(zero_init=False, use_remat=use_remat))
    return str(jax.make_jaxpr(stack.apply)(params, pair, pair_mask))

  assert 'remat' in forward_jaxpr(True) and 'remat' not in forward_jaxpr(False)
  plain_value, plain_grad = loss(params, False)
  remat_value, remat_grad = loss(params, True)
  np.testing.assert_allclose(remat_value, plain_value, rtol=1e-5)
  # Recomputation may reorder float32 sums: compare against the largest gradient entry, as
  # many entries are ~0 (e.g. offsets feeding a LayerNorm).
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(plain_grad))
  for g_remat, g_plain in zip(jax.tree.leaves(remat_grad), jax.tree.leaves(plain_grad)):
    np.testing.assert_allclose(g_remat, g_plain, rtol=0, atol=1e-5 * scale)


def test_dropout_masks_are_shared_as_alphafold_shares_them(activations, stack_params):
  _, calls = _block_with_dropout_calls(_block(stack_params, 0), activations, _masks(False),
                                       False, jax.random.key(1))
  assert len(calls) == len(DROPPED)
  assert [shared_axis(getattr(CONFIG, n)) for n in DROPPED] == [0, 0, 0, 0, 1]
  for name, (update, dropped) in zip(DROPPED, calls):
    update, dropped = np.asarray(update), np.asarray(dropped)
    config = getattr(CONFIG, name)
    keep = 1.0 - config.dropout_rate
    assert np.all(update != 0), name
    ratio = dropped / update
    kept = ratio > 0.5 / keep
    # Every entry is dropped (0) or kept and scaled by 1/keep...
    np.testing.assert_allclose(ratio[kept], 1.0 / keep, rtol=1e-5, err_msg=name)
    np.testing.assert_array_equal(ratio[~kept], 0.0, err_msg=name)
    # ...with one mask for the whole shared axis (per_row: 0, per_column: 1)...
    axis = {'per_row': 0, 'per_column': 1}[config.orientation]
    assert np.all(kept == np.take(kept, [0], axis=axis)), name
    # ...whose other entries are independent, a fraction `keep` of them kept.
    independent = np.take(kept, 0, axis=axis)
    std = np.sqrt(keep * (1 - keep) / independent.size)
    assert abs(independent.mean() - keep) < 5 * std, (name, independent.mean(), keep)


def test_deterministic_means_no_dropout(activations, stack_params):
  params, masks = _block(stack_params, 0), _masks(True)
  out, calls = _block_with_dropout_calls(params, activations, masks, True, jax.random.key(1))
  assert not calls
  # No randomness is drawn: another key gives the same output.
  other, _ = _block_with_dropout_calls(params, activations, masks, True, jax.random.key(2))
  dropped, _ = _block_with_dropout_calls(params, activations, masks, False, jax.random.key(1))
  for key in out:
    np.testing.assert_array_equal(out[key], other[key])
    assert not np.allclose(dropped[key], out[key])


def test_stacked_blocks_draw_different_masks(activations, stack_params):
  def run(params):
    return _Stack(2).apply({'params': params}, activations, _masks(False), False,
                           rngs={'dropout': jax.random.key(3)},
                           capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dropout),
                           mutable=['intermediates'])

  _, state = jax.jit(run)(stack_params)
  captured = state['intermediates']['evoformer_iteration']
  assert sorted(captured) == [f'Dropout_{i}' for i in range(len(DROPPED))]
  kept = np.asarray(captured['Dropout_1']['__call__'][0]) != 0  # triangle_multiplication_outgoing
  assert kept.shape[0] == 2 and not np.array_equal(kept[0], kept[1])
