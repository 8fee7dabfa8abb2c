"""The training loop behind `jaxfold train`: resumable to the bit, watched, validated.

A workdir holds one run:

  config.json           the whole TrainConfig (a rerun must match it, except `steps` and
                        the mesh and layout it runs on)
  checkpoints/<step>/   orbax: TrainState and the data iterator's position
  checkpoints/<step>.damaged/  a step that did not read back, set aside when the run resumed
  tensorboard/          event files (train; validation/), no TensorFlow needed
  metrics.jsonl         every logged scalar, one JSON line per step
  predictions/<chain>/  kept validation structures by step, and the truth
  loss_curves.png       drawn when the run stops
  compilation_cache/    XLA's compiled steps, so a resumed run starts quickly

Running the same command again continues from the latest checkpoint that reads back: the state
(parameters, EMA, Adam's moments, RNG, step) and the data position are restored exactly, and
every later step computes what the uninterrupted run would have, bit for bit. SIGTERM or SIGINT stop
the run after the current step with a checkpoint written. The workdir may be on Cloud Storage
(gs://BUCKET/RUN, with the `tpu` extra): on a pod every host writes its part of each
checkpoint there.
"""

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
from etils import epath

from jaxfold.common.atomic_file import atomic_write, run_path
from jaxfold.convert import alphafold_npz, formats, schema
from jaxfold.data import loader, training_set
from jaxfold.train import checkpoints as checkpoints_lib
from jaxfold.train import config as config_lib
from jaxfold.train import optimizer, sharding, state as state_lib, step as step_lib, summaries
from jaxfold.train import validation

logger = logging.getLogger(__name__)

PNG_FILE = 'loss_curves.png'
COMPILATION_CACHE_DIR = 'compilation_cache'
_MAY_CHANGE = ('steps', 'mesh', 'sharding')


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """What a call to `train` did: the step reached, whether a signal stopped it early, and the
  number of skipped (non-finite) steps so far."""
  step: int
  stopped_by: str | None
  skipped_steps: int
  workdir: str


def _check_workdir_config(workdir: epath.Path, config: config_lib.TrainConfig,
                          write: bool) -> None:
  """Checks that a rerun has the run's config (only `steps` may grow, and the run may move to
  another mesh or layout), then (if `write`: process 0) writes config.json."""
  path = workdir / checkpoints_lib.CONFIG_FILE
  new = json.loads(config_lib.to_json(config))
  if path.exists():
    old = json.loads(path.read_text())
    differ = sorted(k for k in set(old) | set(new)
                    if k not in _MAY_CHANGE and old.get(k) != new.get(k))
    if differ:
      raise config_lib.ConfigError(
          f'{workdir}: holds a run with another config ({", ".join(differ)} differ); '
          'use a new --workdir, or the config the run started with')
  if write:
    with atomic_write(path, 'w') as f:
      f.write(config_lib.to_json(config))


def _enable_compilation_cache(workdir: epath.Path) -> None:
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir', str(workdir / COMPILATION_CACHE_DIR))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def initial_params(config: config_lib.TrainConfig, init: str | os.PathLike | None,
                   shardings: Any = None) -> Any:
  """Parameters to start from, placed by `shardings` (None: the default device): random
  (seeded, created in place), or read from `init`: an AlphaFold .npz, an OpenFold .pt/.ckpt,
  a jaxfold parameter checkpoint, or a training checkpoint step directory (its EMA
  parameters), each checked against the config's network."""
  if init is None:
    return jax.jit(lambda: state_lib.init_params(config.model, jax.random.key(config.seed)),
                   out_shardings=shardings)()
  expected = schema.parameter_shapes(config.model.model)
  name = f'the config\'s network ({config.preset})'
  if not checkpoints_lib.is_training_checkpoint(init):
    tree = formats.load_params(init, expected, schema_name=name,
                               model_config=config.model.model)[0]
  else:
    tree = checkpoints_lib.read_params(init, ema=True)
    alphafold_npz.check_schema({k: v.shape for k, v in alphafold_npz.flat_keys(tree).items()},
                               expected, str(init), schema_name=name)
  return jax.device_put(tree, shardings)


class _StopSignal:
  """Records SIGTERM / SIGINT so the loop can checkpoint and return after the current step."""

  def __init__(self):
    self.received: str | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, _):
    self.received = signal.Signals(signum).name

  def __exit__(self, *_):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _host(tree: Any) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(tree).items()}


def train(config: config_lib.TrainConfig, workdir: str | os.PathLike, *,
          init: str | os.PathLike | None = None, quiet: bool = False,
          progress: Callable[[str], None] = lambda message: None) -> RunSummary:
  """Trains until `config.steps` (resuming the run in `workdir` if there is one).

  Every input is read and checked before anything is written into `workdir` (the config
  against a run already there, the data sources, the validation chains, the `init` weights
  of a new run), so a start that fails on bad input leaves the workdir as it was. A newest
  checkpoint that does not read back is set aside, with a warning, for the one before it; a
  checkpoint that fails to save stops the run at the next step (`checkpoints.Checkpoints`).

  Args:
    config: the run's config (a rerun must pass the same; `steps`, the mesh and the layout
      may change).
    workdir: the run's directory (created).
    init: parameters to start a new run from (ignored when resuming).
    quiet: no progress bar.
    progress: receives one-line stage messages.

  Raises:
    JaxfoldError: bad input (the config, a data source, the `init` weights), or a run whose
      checkpoints all fail to read back.
    OSError: a checkpoint or another file of the run could not be written.
  """
  mesh = sharding.make_mesh(config.mesh, config.sharding)
  rules = sharding.LAYOUTS[config.sharding]
  sharding.micro_batch_size(config.micro_batch_size, config.global_batch_size, mesh, rules)
  if config.global_batch_size % jax.process_count():
    raise config_lib.ConfigError(f'global_batch_size {config.global_batch_size} does not split '
                                 f'over {jax.process_count()} processes')
  workdir = run_path(workdir)  # a local directory, or gs://BUCKET/... shared by all hosts
  primary = jax.process_index() == 0
  _check_workdir_config(workdir, config, write=False)
  tx = optimizer.adam(config.optimizer)
  progress(f'mesh {sharding.describe(mesh, config.sharding)}')
  shapes = jax.eval_shape(lambda: state_lib.create(
      state_lib.init_params(config.model, jax.random.key(0)), tx, config.seed))
  state_shardings = sharding.state_shardings(shapes, mesh, rules, tx)
  dataset = training_set.mixed_batches(  # a source that holds no built dataset fails here
      config.data, config.model.data, seed=config.seed, train_config=config.crop,
      num_recycle=config.max_num_recycle,
      batch_size=config.global_batch_size // jax.process_count())
  chains, keep = _validation_chains(config, progress)
  new_run = not (workdir / checkpoints_lib.CHECKPOINTS_DIR).exists()
  if new_run:  # the first step's examples read and processed: damaged data fails here
    dataset[0]  # pylint: disable=pointless-statement
  params = None
  if init is not None and new_run:
    progress(f'initialising parameters from {init}')
    params = initial_params(config, init, state_shardings.params)

  # Only now is anything written.
  workdir.mkdir(parents=True, exist_ok=True)
  _check_workdir_config(workdir, config, write=primary)
  _enable_compilation_cache(workdir)
  with contextlib.ExitStack() as stack:
    checkpoints = stack.enter_context(
        checkpoints_lib.Checkpoints(workdir, config.keep_checkpoints))
    restored = checkpoints.restore_latest(sharding.abstract(shapes, state_shardings))
    if restored is None:
      if params is None:
        progress('initialising parameters' + (f' from {init}' if init else ''))
        params = initial_params(config, init, state_shardings.params)
      state = jax.jit(lambda params: state_lib.create(params, tx, config.seed),
                      out_shardings=state_shardings)(params)
    else:
      latest, state, data_state = restored
      if init is not None:
        logger.warning('resuming %s at step %d; --init %s is not read', workdir, latest, init)
      progress(f'resuming from {checkpoints.directory / str(latest)}')

    batches = loader.make_iterator(dataset, worker_count=config.data_workers)
    if restored is not None:
      batches.set_state(data_state)
    batch_sharding = sharding.batch_sharding(mesh, rules)
    train_step = step_lib.jit_train_step(config, tx, mesh, state_shardings)
    first = int(state.step)
    writer = summaries.SummaryWriter(workdir, resume_step=first) if primary else None
    if writer:
      stack.callback(writer.close)
    bar = summaries.Progress(config.steps, resume_step=first, disable=quiet or not primary)
    stack.callback(bar.close)
    progress(f'training from step {first} to {config.steps}; the first step compiles')
    step, saved, stopped_by = first, first, None
    with _StopSignal() as stop:
      while step < config.steps and stop.received is None:
        checkpoints.check()  # a save that failed in the background stops the run here
        start = time.perf_counter()
        state, metrics = train_step(state, sharding.global_batch(next(batches), batch_sharding))
        step += 1
        if step % config.log_every == 0 or step == config.steps:
          metrics = _host(metrics)
          metrics['examples_per_second'] = (config.global_batch_size
                                            / (time.perf_counter() - start))
          if writer:
            writer.scalars(step, metrics)
          bar.update(step, metrics['loss'], metrics['examples_per_second'])
        scores = None
        if chains and (step % config.validation.every == 0 or step == config.steps):
          result = validation.evaluate(state.ema_params, config.model.model, chains,
                                       config.loss, num_recycle=config.validation.num_recycle,
                                       global_config=step_lib.global_config(config), mesh=mesh)
          scores = result.mean
          if primary:
            validation.write_predictions(result, workdir, step, keep)
            writer.scalars(step, scores, split='validation')
        if scores or step % config.checkpoint_every == 0 or step == config.steps:
          checkpoints.save(step, state, batches.get_state(), scores)
          saved = step
          if writer:
            writer.flush()
      stopped_by = stop.received
      if step != saved:
        checkpoints.save(step, state, batches.get_state())
      checkpoints.wait()
  if writer and (step > first or (workdir / 'metrics.jsonl').exists()):
    summaries.plot_loss_curves(workdir / 'metrics.jsonl', workdir / PNG_FILE)
  if stopped_by:
    progress(f'stopped by {stopped_by} at step {step}; checkpoint saved; run the same command '
             'to resume')
  return RunSummary(step=step, stopped_by=stopped_by, skipped_steps=int(state.skipped_steps),
                    workdir=str(workdir))


def _validation_chains(config: config_lib.TrainConfig,
                       progress: Callable[[str], None]) -> tuple[list, list[str]]:
  """The validation chains (none without `validation.data`) and the names of those whose
  predicted structures are kept."""
  if not config.validation.data:
    return [], []
  v = config.validation
  progress(f'reading validation chains from {v.data}')
  chains = validation.load_validation_set(v.data, v.split, config.model,
                                          num_recycle=v.num_recycle, seed=config.seed,
                                          max_chains=v.max_chains, max_length=v.max_length)
  return chains, list(v.keep) or [chains[0].name]
