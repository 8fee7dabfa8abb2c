"""Each sharding layout on 8 CPU devices computes what one device computes.

The step's machinery runs under every layout with a loss touching every parameter of the tiny
network (cheap to compile); the DAP rules are checked to really split an Evoformer block's
residue axis; and (slow tier) checkpoints move between meshes exactly and two training steps
of the tiny config agree with one device under every layout.
"""

import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxfold.model import logical_axes
from jaxfold.model.evoformer import EvoformerIteration
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import checkpoints as checkpoints_lib
from jaxfold.train import config as config_lib, optimizer, sharding, state as state_lib
from jaxfold.train import step as step_lib

TINY = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'train' / 'tiny.py'
# (mesh, layout) on 8 devices; global batch 8 splits over every one.
LAYOUTS = [((('data', 8),), 'data'),
           ((('data', 2), ('fsdp', 4)), 'fsdp'),
           ((('data', 2), ('res', 4)), 'dap'),
           ((('data', 2), ('fsdp', 2), ('res', 2)), 'fsdp_dap')]
ONE_DEVICE = ((('data', 1),), 'data')


@pytest.fixture(scope='module')
def tiny():
  config = config_lib.override(config_lib.load(TINY), ['dropout=False', 'max_num_recycle=0',
                                                       'global_batch_size=8'])
  return config, optimizer.adam(config.optimizer)


def _mesh(axes, layout):
  count = int(np.prod([size for _, size in axes]))
  return sharding.make_mesh(axes, layout, jax.devices()[:count])


def _initial_params(config):
  """The tiny network's stacked Evoformer parameters (every kind of sharded leaf), random and
  nowhere zero; the step machinery's tests compile quickly on this subtree."""
  shapes = jax.eval_shape(lambda: state_lib.init_params(config.model, jax.random.key(0)))
  rng = np.random.default_rng(0)
  stack = shapes['alphafold_iteration']['evoformer']['evoformer_iteration']
  return {'evoformer_iteration': jax.tree.map(
      lambda x: rng.normal(0.5, 0.2, x.shape).astype(np.float32), stack)}


def _sharded_step(config, tx, axes, layout, loss_fn=None, params=None):
  """(initial state on the mesh, jitted step, batch sharding, state shardings)."""
  config = dataclasses.replace(config, mesh=axes, sharding=layout)
  mesh, rules = _mesh(axes, layout), sharding.LAYOUTS[layout]
  params = _initial_params(config) if params is None else params
  shapes = jax.eval_shape(lambda: state_lib.create(params, tx, 0))
  shardings = sharding.state_shardings(shapes, mesh, rules, tx)
  state = jax.jit(lambda p: state_lib.create(p, tx, 0), out_shardings=shardings)(params)
  step = step_lib.jit_train_step(config, tx, mesh, shardings, loss_fn)
  return state, step, sharding.batch_sharding(mesh, rules), shardings


def _every_parameter_loss(params, example, key, num_recycle):
  """A loss with a gradient on every parameter leaf, scaled per example."""
  del key
  scale = example['scale'][num_recycle]
  loss = sum(jnp.mean(jnp.sin(p) * p) for p in jax.tree.leaves(params)) * scale
  return loss, {'loss': loss}


def _relative(tree, reference):
  """max |Δ| / max |reference| over all leaves together."""
  delta = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)))
  return delta / max(float(np.abs(np.asarray(b)).max()) for b in jax.tree.leaves(reference))


def _run(config, tx, axes, layout, batch, steps=2, loss_fn=None, params=None):
  state, step, batch_sharding, _ = _sharded_step(config, tx, axes, layout, loss_fn, params)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, sharding.global_batch(batch, batch_sharding))
    losses.append(float(metrics['loss']))
  return jax.device_get(state), losses


SCALES = {'scale': np.linspace(0.5, 2.0, 8, dtype=np.float32)[:, None]}


@pytest.fixture(scope='module')
def one_device_machinery(tiny):
  return _run(*tiny, *ONE_DEVICE, SCALES, loss_fn=_every_parameter_loss)


# The combined layout in the fast tier, each single one in the slow tier.
@pytest.mark.parametrize('axes,layout', [pytest.param(*LAYOUTS[i], marks=pytest.mark.slow)
                                         for i in range(3)] + [LAYOUTS[3]],
                         ids=[layout for _, layout in LAYOUTS])
def test_the_step_machinery_agrees_with_one_device(tiny, one_device_machinery, axes, layout):
  config, tx = tiny
  reference, ref_losses = one_device_machinery
  state, losses = _run(config, tx, axes, layout, SCALES, loss_fn=_every_parameter_loss)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
  for name in ('params', 'ema_params', 'opt_state'):
    assert _relative(getattr(state, name), getattr(reference, name)) <= 1e-5, name


def test_fsdp_shards_parameters_and_adam_state(tiny):
  config, tx = tiny
  state, _, _, shardings = _sharded_step(config, tx, *LAYOUTS[1], _every_parameter_loss)
  row_w = state.params['evoformer_iteration']['msa_row_attention_with_pair_bias'][
      'attention']['query_w']
  assert row_w.shape == (2, 32, 8, 4)  # layers, channel_in, heads, head_dim
  assert row_w.sharding.spec == PartitionSpec(None, 'fsdp', None, None)
  assert {s.data.shape for s in row_w.addressable_shards} == {(2, 8, 8, 4)}
  mu = state.opt_state[0].mu['evoformer_iteration']['msa_row_attention_with_pair_bias'][
      'attention']['query_w']
  assert mu.sharding.spec == row_w.sharding.spec
  split = [s for s in jax.tree.leaves(shardings.params) if 'fsdp' in s.spec]
  assert len(split) > len(jax.tree.leaves(shardings.params)) // 3


def test_dap_splits_the_residue_axis_of_an_evoformer_block(tiny):
  config, _ = tiny
  block = EvoformerIteration(config.model.model.embeddings_and_evoformer.evoformer)
  rng = np.random.default_rng(0)
  n_seq, n_res = 16, 32
  activations = {'msa': rng.normal(size=(n_seq, n_res, 32)).astype(np.float32),
                 'pair': rng.normal(size=(n_res, n_res, 16)).astype(np.float32)}
  masks = {'msa': np.ones((n_seq, n_res), np.float32), 'pair': np.ones((n_res, n_res), np.float32)}
  params = block.init(jax.random.key(0), activations, masks)
  params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(p.dtype), params)
  expected = jax.jit(block.apply)(params, activations, masks)

  mesh = _mesh((('res', 8),), 'dap')

  def apply(params, activations, masks):
    with logical_axes.use_rules(mesh, sharding.LAYOUTS['dap']):
      return block.apply(params, activations, masks)
  compiled = jax.jit(apply).lower(params, activations, masks).compile()
  hlo = compiled.as_text()
  # A pair activation split by rows or by columns over 8 devices: [4, 32, c] or [32, 4, c].
  assert re.search(r'f32\[(4,32|32,4),16\]', hlo), 'no per-device slice of the pair'
  assert re.search(r'f32\[(2,32|16,4),32\]', hlo), 'no per-device slice of the MSA'
  assert 'all-to-all' in hlo  # row-wise to column-wise, as FastFold does by hand
  got = compiled(params, activations, masks)
  for key in ('msa', 'pair'):
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~70 s; the two-process test restores a checkpoint onto another mesh too
def test_a_checkpoint_restores_onto_another_mesh_exactly(tiny, tmp_path):
  config, tx = tiny
  trained, _ = _run(config, tx, *LAYOUTS[0], SCALES, steps=1, loss_fn=_every_parameter_loss)
  shapes = jax.eval_shape(lambda: trained)
  # Continued on the FSDP mesh from a checkpoint written on a data-parallel mesh, and from one
  # written on the FSDP mesh itself.
  _, step, batch_sharding, target = _sharded_step(config, tx, *LAYOUTS[1],
                                                  _every_parameter_loss)
  continued = {}
  for axes, layout in (LAYOUTS[0], LAYOUTS[1]):
    written_from = sharding.state_shardings(shapes, _mesh(axes, layout),
                                            sharding.LAYOUTS[layout], tx)
    manager = checkpoints_lib.Checkpoints(tmp_path / layout, keep=1)
    manager.save(1, jax.device_put(trained, written_from), {'step': 1})
    manager.wait()
    restored, _ = manager.restore(1, sharding.abstract(shapes, target))
    manager.close()
    for got, want, where in zip(jax.tree.leaves(restored), jax.tree.leaves(trained),
                                jax.tree.leaves(target)):
      assert got.sharding == where
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    state, _ = step(restored, sharding.global_batch(SCALES, batch_sharding))
    continued[layout] = jax.device_get(state)
  for a, b in zip(jax.tree.leaves(continued['data']), jax.tree.leaves(continued['fsdp'])):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def tiny_batch(shared_dir):
  examples = [training_batch(shared_dir, 'model_3_ptm', crop_size=32, max_msa_clusters=16,
                             max_extra_msa=32, seed=seed) for seed in range(8)]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


@pytest.fixture(scope='module')
def network_params(tiny):
  return jax.device_get(state_lib.init_params(tiny[0].model, jax.random.key(0)))


@pytest.fixture(scope='module')
def one_device_run(tiny, tiny_batch, network_params):
  return _run(*tiny, *ONE_DEVICE, tiny_batch, params=network_params)


@pytest.mark.slow
@pytest.mark.parametrize('axes,layout', LAYOUTS, ids=[layout for _, layout in LAYOUTS])
def test_two_tiny_training_steps_agree_with_one_device(tiny, tiny_batch, network_params,
                                                        one_device_run, axes, layout):
  reference, ref_losses = one_device_run
  state, losses = _run(*tiny, axes, layout, tiny_batch, params=network_params)
  print(layout, 'losses', losses, 'one device', ref_losses)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  # The gradients (Adam's first moment) agree to float32 rounding. The parameters agree less
  # closely: Adam's first updates are near lr * sign(g), so gradient entries within rounding
  # noise of zero (zero-gradient leaves, zero-initialised heads) move by up to lr either way.
  # Measured under DAP (data=2, res=4): 2.3e-5 of max |param| after two steps.
  assert _relative(state.opt_state[0].mu, reference.opt_state[0].mu) <= 1e-5
  for name in ('params', 'ema_params'):
    assert _relative(getattr(state, name), getattr(reference, name)) <= 1e-4, name
