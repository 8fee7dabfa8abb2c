"""The train step's procedure against direct computations, on a small quadratic loss.

The step's machinery (recycling draw, per-example clipping, accumulation, Adam, EMA,
skipping non-finite steps) is independent of the network, so it is checked here with a loss
whose gradients are known in closed form; the network's own loss runs in test_train_cli.py.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxfold.train import optimizer, state as state_lib, step as step_lib
from jaxfold.train.config import OptimizerConfig, TrainConfig


def quadratic(params, example, key, num_recycle):
  """0.5 |A w - y|^2 of the example's last slice; the gradient is A^T (A w - y)."""
  del key
  a, y = example['a'][num_recycle], example['y'][num_recycle]
  residual = a @ params['w'] - y
  loss = 0.5 * jnp.sum(residual ** 2)
  return loss, {'loss': loss, 'residual': jnp.abs(residual).max(), 'vector': residual}


def _config(batch, micro=1, **optimizer_changes):
  return TrainConfig(global_batch_size=batch, micro_batch_size=micro, max_num_recycle=0,
                     optimizer=OptimizerConfig(**optimizer_changes))


def _batch(batch_size, seed=0, slices=1):
  rng = np.random.default_rng(seed)
  return {'a': rng.normal(size=(batch_size, slices, 4, 3)).astype(np.float32),
          'y': rng.normal(size=(batch_size, slices, 4)).astype(np.float32)}


def _grad(w, example, slice_index=0):
  a, y = example['a'][slice_index], example['y'][slice_index]
  return a.T @ (a @ w - y)


def _run(config, tx, batch, params=None, steps=1):
  params = params or {'w': np.array([0.5, -1.0, 2.0], np.float32)}
  state = state_lib.create(params, tx, seed=0)
  step = jax.jit(step_lib.make_train_step(config, tx, loss_fn=quadratic))
  for _ in range(steps):
    state, metrics = step(state, batch)
  return state, metrics


@pytest.mark.parametrize('per_example', [True, False])
def test_clipping_per_example_or_of_the_batch_mean(per_example):
  # SGD at rate 1 exposes the gradient the optimizer received: new w = w - g.
  config = _config(4, clip_norm=0.5, clip_per_example=per_example)
  batch = _batch(4)
  state, metrics = _run(config, optax.sgd(1.0), batch)
  w = np.array([0.5, -1.0, 2.0], np.float32)
  grads = [_grad(w, {k: v[i] for k, v in batch.items()}) for i in range(4)]
  clip = lambda g: g * min(1.0, 0.5 / np.linalg.norm(g))
  expected = np.mean([clip(g) for g in grads], 0) if per_example else clip(np.mean(grads, 0))
  assert min(np.linalg.norm(g) for g in grads) > 0.5  # every example is clipped
  np.testing.assert_allclose(w - np.asarray(state.params['w']), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics['grad_norm'], np.mean([np.linalg.norm(g) for g in grads]),
                             rtol=1e-5)


def test_accumulating_micro_batches_equals_one_large_batch():
  batch = _batch(8, seed=1)
  results = []
  for micro in (1, 2, 8):
    config = _config(8, micro, clip_norm=1.0, learning_rate=1e-2, warmup_steps=1)
    tx = optimizer.adam(config.optimizer)
    results.append(_run(config, tx, batch, steps=3))
  (reference, ref_metrics), *others = results
  for state, metrics in others:
    chex_close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    jax.tree.map(chex_close, state.params, reference.params)
    jax.tree.map(chex_close, state.opt_state, reference.opt_state)
    chex_close(metrics['loss'], ref_metrics['loss'])


def test_learning_rate_warms_up_then_steps_down():
  config = OptimizerConfig(learning_rate=1e-3, warmup_steps=1000, decay_steps=50_000,
                           decay_factor=0.95)
  schedule = optimizer.learning_rate(config)
  for count, expected in [(0, 1e-6), (499, 5e-4), (999, 1e-3), (1000, 1e-3), (49_999, 1e-3),
                          (50_000, 0.95e-3), (200_000, 0.95e-3)]:
    np.testing.assert_allclose(schedule(count), expected, rtol=1e-6)
  no_warmup = optimizer.learning_rate(dataclasses.replace(config, warmup_steps=0))
  np.testing.assert_allclose(no_warmup(0), 1e-3, rtol=1e-6)


def test_adam_and_ema_match_a_direct_computation():
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=4, clip_norm=1e6, ema_decay=0.9)
  config = dataclasses.replace(_config(2), optimizer=opt)
  batch = _batch(2, seed=2)
  state, metrics = _run(config, optimizer.adam(opt), batch, steps=3)
  # Adam (Kingma & Ba) with bias correction, and the average of the parameters, by hand.
  w = np.array([0.5, -1.0, 2.0], np.float64)
  ema, m, v = w.copy(), np.zeros(3), np.zeros(3)
  for t in range(1, 4):
    g = np.mean([_grad(w, {k: x[i] for k, x in batch.items()}) for i in range(2)], 0)
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    rate = 1e-2 * min(1.0, t / 4)
    w = w - rate * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-6)
    ema = 0.9 * ema + 0.1 * w
  np.testing.assert_allclose(state.params['w'], w, rtol=1e-5)
  np.testing.assert_allclose(state.ema_params['w'], ema, rtol=1e-5)
  np.testing.assert_allclose(metrics['learning_rate'], 1e-2 * 3 / 4, rtol=1e-6)
  assert int(state.step) == 3 and int(state.skipped_steps) == 0


def test_a_non_finite_step_is_skipped_and_counted():
  config = _config(2)
  tx = optimizer.adam(config.optimizer)
  good, bad = _batch(2, seed=3), _batch(2, seed=3)
  bad['a'][1, 0, 0, 0] = np.nan
  state = state_lib.create({'w': np.ones(3, np.float32)}, tx, seed=0)
  step = jax.jit(step_lib.make_train_step(config, tx, loss_fn=quadratic))
  after_bad, metrics = step(state, bad)
  assert int(metrics['skipped']) == 1 and int(after_bad.skipped_steps) == 1
  assert int(after_bad.step) == 1  # the data stream moves on
  for name in ('params', 'ema_params', 'opt_state'):
    jax.tree.map(np.testing.assert_array_equal, getattr(after_bad, name), getattr(state, name))
  after_good, metrics = step(after_bad, good)
  assert int(metrics['skipped']) == 0 and int(after_good.skipped_steps) == 1
  assert not np.array_equal(after_good.params['w'], state.params['w'])
  # Adam counts applied updates only, so the schedule does not advance on a skipped step.
  assert int(after_good.opt_state[0].count) == 1


def test_recycling_draw_is_uniform_and_picks_the_labels_of_the_last_iteration():
  config = dataclasses.replace(_config(2), max_num_recycle=2)
  tx = optax.sgd(0.0)
  batch = _batch(2, seed=4, slices=3)
  state = state_lib.create({'w': np.ones(3, np.float32)}, tx, seed=0)
  step = jax.jit(step_lib.make_train_step(config, tx, loss_fn=quadratic))
  drawn = []
  for _ in range(60):
    state, metrics = step(state, batch)
    r = int(metrics['num_recycle'])
    drawn.append(r)
    expected = np.mean([0.5 * np.sum((batch['a'][i, r] @ np.ones(3) - batch['y'][i, r]) ** 2)
                        for i in range(2)])
    np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
  counts = np.bincount(drawn, minlength=3)
  assert counts.sum() == 60 and counts.min() >= 10, counts


def test_scalars_of_the_breakdown_become_metrics():
  _, metrics = _run(_config(2), optax.sgd(0.0), _batch(2))
  assert {'loss', 'residual', 'grad_norm', 'learning_rate', 'num_recycle', 'skipped',
          'skipped_steps'} <= set(metrics)
  assert 'vector' not in metrics  # only scalars are logged
