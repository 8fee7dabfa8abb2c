"""Time per example of one whole training step: jaxfold vs a Haiku step of AlphaFold's own code.

Both sides, measured in this one run at each crop size, on the same device:
  * AlphaFold: `jax.value_and_grad` of the total loss of DeepMind's `AlphaFoldIteration` with
    `compute_loss=True` (the gradient parity's `alphafold_loss_fn`: one iteration, no
    recycling), then the gradient clipped to global norm 0.1, an optax Adam update on
    AlphaFold's schedule and the parameter average (EMA 0.999), as jaxfold's step does;
  * jaxfold: `jaxfold.train.step.make_train_step` (per-example clipping, Adam, EMA and the
    skip-if-not-finite guard) with `max_num_recycle` 0, jitted as `jaxfold train` jits it.
Same preset at full size, same perturbed random weights, same 2q2k training example
(padded to the crop; MSA clusters and extra sequences from the flags), batch of one example,
float32, no dropout on either side, each Evoformer block rematerialised on both (AlphaFold's
`global_config.use_remat`, jaxfold's `TrainConfig.use_remat`), the fine-tuning loss with
every head of the preset (pTM term included, not scaled by length, as AlphaFold's total).

Each (crop, side) runs in a fresh process, so its peak RSS is its own. Printed per crop:
compile time (lowering and XLA compilation; jaxfold's includes its recycling loop, compiled
though it runs zero times), the median step time over `--steps` steps after one warm-up
step, wall-clock and CPU of all threads, XLA's planned temporaries (whether the step fits
in memory, known before running; `--steps 0` stops there), the peak RSS and the first
step's loss of each side (the same computation: equal to about 1e-5, or apart by one
aligned-error bin, see `alphafold_gradients`), with the ratios jaxfold / AlphaFold.
Needs the test extra (the live reference) and the shared data.

  python benchmarks/train_step.py [--preset model_1_ptm] [--crops 64 256]
      [--msa-clusters 128] [--extra-msa 1024] [--steps 5]
"""

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import resource
import statistics
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.data.processing import TrainingDataConfig
from jaxfold.loss import total
from jaxfold.model import config as model_config
from jaxfold.parity.alphafold_gradients import alphafold_loss_fn
from jaxfold.parity.alphafold_model import alphafold_config, shared_dir
from jaxfold.parity.alphafold_reference import config_from_reference, reference_params
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import optimizer, state as state_lib
from jaxfold.train.config import TrainConfig
from jaxfold.train.step import make_train_step

SIDES = ('AlphaFold', 'jaxfold')
SEED = 0


@dataclasses.dataclass(frozen=True)
class Setting:
  """One measurement's inputs."""
  preset: str
  crop: int
  msa_clusters: int
  extra_msa: int
  steps: int
  shared: str


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One side's numbers at one setting, seconds and GiB; the step's are None when not run.

  temp_gib: XLA's buffer plan for the step's temporaries (what the backward pass keeps and
    recomputes), known at compile time; step_cpu_s: the process's CPU time per step, all
    threads (steadier than wall time when other jobs share the cores).
  """
  num_params: int
  compile_s: float
  temp_gib: float
  peak_rss_gib: float
  step_s: float | None = None
  step_cpu_s: float | None = None
  first_loss: float | None = None


# (label, Measurement field, format) of the printed rows.
ROWS = (('compile s', 'compile_s', '.1f'), ('step s, wall (median)', 'step_s', '.2f'),
        ('step s, CPU of all threads (median)', 'step_cpu_s', '.2f'),
        ('XLA temporaries GiB', 'temp_gib', '.2f'), ('peak RSS GiB', 'peak_rss_gib', '.2f'),
        ('first-step loss', 'first_loss', '.7g'))


def _reference_step(af_model_config, opt: optimizer.OptimizerConfig, tx):
  """step((params, opt_state, ema), batch) -> (state, loss): AlphaFold's loss and gradient,
  then the same clipping, Adam update and parameter average as jaxfold's step."""
  apply = hk.transform(alphafold_loss_fn(af_model_config)).apply
  key = jax.random.key(SEED)  # deterministic: no dropout draws from it

  def step(state, batch):
    params, opt_state, ema = state
    (loss, _), grads = jax.value_and_grad(
        lambda p: apply(p, key, batch), has_aux=True)(params)
    updates, opt_state = tx.update(optimizer.clip(grads, opt.clip_norm), opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state, optimizer.ema_update(ema, params, opt.ema_decay)), loss
  return step


def _measure(side: str, setting: Setting) -> Measurement:
  """Compiles and times one side's training step (run in a fresh process)."""
  af_cfg = alphafold_config(setting.preset, num_recycle=0)
  af_cfg.model.global_config.use_remat = True  # and deterministic, set by reference_config
  train = TrainingDataConfig(crop_size=setting.crop, max_msa_clusters=setting.msa_clusters,
                             max_extra_msa=setting.extra_msa)
  batch = training_batch(setting.shared, setting.preset, crop_size=setting.crop,
                         max_msa_clusters=setting.msa_clusters,
                         max_extra_msa=setting.extra_msa, num_recycle=0, seed=SEED)
  af_params = reference_params(alphafold_loss_fn(af_cfg.model), {'batch': batch}, SEED,
                               from_shapes=True)
  loss_config = dataclasses.replace(
      total.FINE_TUNING, scale_by_length=False,
      weights=dataclasses.replace(
          total.FINE_TUNING.weights,
          aligned_error=af_cfg.model.heads.predicted_aligned_error.weight))
  config = TrainConfig(
      preset=setting.preset, model=config_from_reference(model_config.AlphaFoldConfig, af_cfg),
      crop=train, loss=loss_config, global_batch_size=1, micro_batch_size=1,
      max_num_recycle=0, dropout=False, use_remat=True, seed=SEED)
  tx = optimizer.adam(config.optimizer)

  if side == 'AlphaFold':
    params = jax.tree.map(jnp.asarray, af_params)
    state = (params, tx.init(params), jax.tree.map(jnp.copy, params))
    step_fn, loss_of = _reference_step(af_cfg.model, config.optimizer, tx), lambda out: out
  else:
    params = from_haiku(af_params, root='alphafold')
    state = state_lib.create(params, tx, SEED)
    batch = {k: v[None] for k, v in batch.items()}  # [global batch, slices, ...]
    step_fn, loss_of = make_train_step(config, tx), lambda metrics: metrics['loss']
  batch = jax.tree.map(jnp.asarray, batch)
  num_params = sum(np.size(p) for p in jax.tree.leaves(params))

  clock = time.perf_counter()
  step = jax.jit(step_fn, donate_argnums=0).lower(state, batch).compile()
  compile_s = time.perf_counter() - clock
  temp_gib = step.memory_analysis().temp_size_in_bytes / 2**30
  timed = {}
  if setting.steps:
    state, out = step(state, batch)  # warm-up
    timed['first_loss'] = float(loss_of(out))
    wall, cpu = [], []
    for _ in range(setting.steps):
      clock, cpu_clock = time.perf_counter(), time.process_time()
      state, out = jax.block_until_ready(step(state, batch))
      wall.append(time.perf_counter() - clock)
      cpu.append(time.process_time() - cpu_clock)
    timed.update(step_s=statistics.median(wall), step_cpu_s=statistics.median(cpu))
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
  return Measurement(num_params, compile_s, temp_gib, peak, **timed)


def _in_fresh_process(side: str, setting: Setting) -> Measurement:
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(_measure, side, setting).result()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--preset', default='model_1_ptm', choices=model_config.PRESETS)
  parser.add_argument('--crops', type=int, nargs='+', default=[64, 256])
  parser.add_argument('--msa-clusters', type=int, default=128)
  parser.add_argument('--extra-msa', type=int, default=1024)
  parser.add_argument('--steps', type=int, default=5,
                      help='timed steps after one warm-up; 0 only compiles')
  parser.add_argument('--shared', default=None, help='shared data folder (default: ../shared)')
  args = parser.parse_args()
  shared = str(args.shared or shared_dir())

  timing = (f'median of {args.steps} steps after 1 warm-up' if args.steps
            else 'compiled only, not run')
  print(f'Training step, {args.preset} full size, float32, batch of 1 (time per step = time per '
        f'example), no recycling, no dropout, remat on, fine-tuning loss; '
        f'{args.msa_clusters} MSA clusters, {args.extra_msa} extra sequences; '
        f'device={jax.devices()[0].device_kind}, {len(os.sched_getaffinity(0))} cores, load '
        f'average {os.getloadavg()[0]:.2f} at start; {timing}', flush=True)
  for crop in args.crops:
    setting = Setting(args.preset, crop, args.msa_clusters, args.extra_msa, args.steps, shared)
    ref, ours = (_in_fresh_process(side, setting) for side in SIDES)
    if ref.num_params != ours.num_params:
      raise RuntimeError(f'parameter counts differ: AlphaFold {ref.num_params}, '
                         f'jaxfold {ours.num_params}')
    title = f'crop {crop}, {ref.num_params:,} parameters'
    print(f'\n{title:<38s}{"AlphaFold":>12s} {"jaxfold":>12s}  jaxfold/AlphaFold')
    for label, field, fmt in ROWS:
      a, b = getattr(ref, field), getattr(ours, field)
      if a is None:
        continue
      compare = (f'rel. diff {abs(b - a) / abs(a):.1e}' if field == 'first_loss'
                 else f'{b / a:.2f}')
      print(f'  {label:<36s}{a:12{fmt}} {b:12{fmt}}  {compare}', flush=True)
  print(f'\nload average at end {os.getloadavg()[0]:.2f}')


if __name__ == '__main__':
  main()
