"""The training step in bfloat16 against float32: same parameters, same batch, two steps.

With `dtype='bfloat16'` the network computes in bfloat16 while parameters, Adam's moments,
the parameter average and the loss stay float32. Both steps start from the same freshly
initialised parameters of the tiny config (no dropout, no recycling) on a global batch of two
crops of 2q2k chain A. The measured drift is printed (pytest -s); each bound is 3-5 times
the value measured on CPU (jax 0.10.2), stated beside it.

Caveat: AlphaFold's zero-initialised output layers make every Evoformer update and most head
logits zero at initialisation, so the first loss sees bfloat16 mostly through the embeddings
and the structure module's input; the gradients (and the second step's loss, after one
update) see the whole network.
"""

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import config as config_lib, optimizer, state as state_lib, step as step_lib

pytestmark = pytest.mark.slow

TINY = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train' / 'tiny.py'
DTYPES = ('float32', 'bfloat16')
STEPS = 2

# |loss bf16 - loss f32| / |loss f32|, each step; measured 7.3e-5 and 1.2e-4.
LOSS_BOUND = 5e-4
# Every scalar term of the loss breakdown; largest measured difference 3.3e-3 relative
# (angle_norm, second step), the structural terms near 1e-5, the zero-initialised heads' 0.
TERM_RTOL, TERM_ATOL = 1.5e-2, 1e-4
# |grad_norm bf16 - f32| / f32 (mean over examples, before clipping); measured 4.8e-3 and
# 1.5e-4.
GRAD_NORM_BOUND = 2e-2
# Cosine of the flattened parameter updates, each step from the dtype's own previous state;
# measured 0.981 and 0.991. Adam's first update is about -lr * sign(gradient), so every tiny
# gradient entry counts as much as a large one: the strictest view of the direction.
UPDATE_COSINE_MIN = 0.93
# Cosine of the gradient Adam received in the first step (its first moment, 0.1 times the
# clipped batch-mean gradient); measured 0.9997.
GRADIENT_COSINE_MIN = 0.9985


def _two_crops(shared, config):
  """A global batch of two crops of 2q2k chain A: [2, 1 slice, ...]."""
  crop = config.crop
  examples = [training_batch(shared, config.preset, crop_size=crop.crop_size,
                             max_msa_clusters=crop.max_msa_clusters,
                             max_extra_msa=crop.max_extra_msa, num_recycle=0, seed=seed)
              for seed in (0, 1)]
  return {k: jnp.asarray(np.stack([e[k] for e in examples])) for k in examples[0]}


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _cosine(a, b):
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope='module')
def runs(shared_dir):
  """{dtype: (states [initial, after step 1, ...], metrics per step, lowered HLO text)}."""
  base = config_lib.override(config_lib.load(TINY), ['dropout=False', 'max_num_recycle=0'])
  batch = _two_crops(shared_dir, base)
  params = state_lib.init_params(base.model, jax.random.key(0))
  results = {}
  for dtype in DTYPES:
    config = config_lib.override(base, [f'dtype={dtype}'])
    tx = optimizer.adam(config.optimizer)
    states = [state_lib.create(params, tx, config.seed)]
    clock = time.perf_counter()
    lowered = jax.jit(step_lib.make_train_step(config, tx)).lower(states[0], batch)
    step = lowered.compile()
    compile_s = time.perf_counter() - clock
    metrics, times = [], []
    for _ in range(STEPS):
      clock = time.perf_counter()
      state, step_metrics = jax.block_until_ready(step(states[-1], batch))
      times.append(time.perf_counter() - clock)
      states.append(state)
      metrics.append(jax.tree.map(float, step_metrics))
    print(f'{dtype}: compile {compile_s:.0f} s, steps ' + ', '.join(f'{t:.2f}' for t in times)
          + ' s; loss ' + ', '.join(f'{m["loss"]:.6f}' for m in metrics)
          + '; grad_norm ' + ', '.join(f'{m["grad_norm"]:.2f}' for m in metrics))
    results[dtype] = states, metrics, lowered.as_text()
  return results


def test_the_network_computes_in_bfloat16_and_the_state_stays_float32(runs):
  assert 'bf16' not in runs['float32'][2]
  assert 'bf16' in runs['bfloat16'][2]
  states, _, _ = runs['bfloat16']
  for name in ('params', 'ema_params', 'opt_state'):
    leaves = jax.tree_util.tree_leaves_with_path(getattr(states[-1], name))
    wrong = [jax.tree_util.keystr(path) for path, x in leaves
             if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32]
    assert not wrong, f'{name}: not float32 after a bfloat16 step: {wrong[:5]}'


def test_every_step_is_finite_and_applied(runs):
  for dtype in DTYPES:
    states, metrics, _ = runs[dtype]
    for m in metrics:
      assert np.isfinite(m['loss']) and np.isfinite(m['grad_norm']), (dtype, m)
      assert m['skipped'] == 0, (dtype, m)
    assert int(states[-1].skipped_steps) == 0 and int(states[-1].step) == STEPS


def test_loss_and_its_terms_stay_close_to_float32(runs):
  f32, bf16 = runs['float32'][1], runs['bfloat16'][1]
  for step, (a, b) in enumerate(zip(f32, bf16)):
    loss_diff = abs(b['loss'] - a['loss']) / abs(a['loss'])
    norm_diff = abs(b['grad_norm'] - a['grad_norm']) / a['grad_norm']
    print(f'step {step}: relative difference of the loss {loss_diff:.2e}, '
          f'of the gradient norm {norm_diff:.2e}')
    assert loss_diff < LOSS_BOUND, (step, a['loss'], b['loss'])
    assert norm_diff < GRAD_NORM_BOUND, (step, a['grad_norm'], b['grad_norm'])
    terms = sorted(set(a) - {'loss', 'grad_norm', 'learning_rate', 'num_recycle', 'skipped',
                             'skipped_steps'})
    for term in terms:
      print(f'  {term}: f32 {a[term]:.6g}, bf16 {b[term]:.6g}')
    np.testing.assert_allclose([b[t] for t in terms], [a[t] for t in terms], rtol=TERM_RTOL,
                               atol=TERM_ATOL, err_msg=f'step {step}: {terms}')


def test_updates_point_the_same_way_as_float32(runs):
  f32, bf16 = runs['float32'][0], runs['bfloat16'][0]
  for step in range(STEPS):
    updates = [_flat(states[step + 1].params) - _flat(states[step].params)
               for states in (f32, bf16)]
    cosine = _cosine(*updates)
    print(f'step {step}: cosine of the parameter updates {cosine:.4f}')
    assert cosine > UPDATE_COSINE_MIN, (step, cosine)
  gradient = _cosine(*(_flat(states[1].opt_state[0].mu) for states in (f32, bf16)))
  print(f'cosine of the first step\'s clipped mean gradients {gradient:.4f}')
  assert gradient > GRADIENT_COSINE_MIN
