"""Training checkpoints: orbax, asynchronous, the last K and the best by validation lDDT-Cα.

Layout: <workdir>/checkpoints/<step>/ holds 'state' (the whole TrainState: parameters, EMA,
Adam's state, step, RNG, skip count) and 'data' (the data iterator's position, JSON). The
run's config is <workdir>/config.json, so a step directory alone can be exported
(`read_params`) without the config file the run started from.

What goes wrong is told once, in one line. A save that fails in the background (a full disk,
a folder that cannot be written) is raised by the next `check` or `save` as an OSError naming
the step and the cause, and its temporary folder is removed. A step that does not read back
(a truncated or missing file, garbled metadata) is moved aside to <step>.damaged with a
warning, and the run resumes from the newest step that does (`restore_latest`). The
temporary folders of a save that was killed are removed, with a warning, when the next run
opens the directory.
"""

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from jaxfold.common.atomic_file import run_path
from jaxfold.common.errors import JaxfoldError
from jaxfold.convert.checkpoint import one_line, quiet_orbax
from jaxfold.train import config as config_lib

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
BEST_METRIC = 'lddt_ca'
DAMAGED_SUFFIX = '.damaged'
# What orbax adds to a step's name while writing it (<step>.orbax-checkpoint-tmp[-<time>]).
TEMPORARY_MARK = '.orbax-checkpoint-tmp'


class Checkpoints:
  """The run's checkpoint directory (an orbax CheckpointManager); `close` it when done (or use
  it as a context manager)."""

  def __init__(self, workdir: str | os.PathLike, keep: int):
    quiet_orbax()
    self.directory = run_path(workdir) / CHECKPOINTS_DIR
    if jax.process_index() == 0:
      _remove_temporary_folders(self.directory)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                      keep_checkpoints_without_metrics=False)])
    self._manager = ocp.CheckpointManager(
        self.directory, item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(
            enable_async_checkpointing=True, preservation_policy=policy,
            # Folders made in the background leave orbax's writer threads waiting for them
            # when one cannot be made (20 minutes, keeping the process from exiting): made
            # before `save` returns, a folder that cannot be made fails the save at once.
            async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))
    self._saving: int | None = None  # the step a background save may still be writing

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None) -> None:
    """Starts writing `state` at `step` in the background (a finished write appears whole),
    once the previous save has finished.

    Raises:
      OSError: the previous save, or this one's start, failed (`wait`).
    """
    self.wait()
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))),
                         metrics=dict(metrics) if metrics else None, force=True)
    except Exception as error:  # orbax and tensorstore raise many types for one failed write
      raise self._not_saved(step, error) from error
    self._saving = step

  def check(self) -> None:
    """Raises the failure of a background save that has ended; returns at once otherwise
    (cheap: call it every step).

    Raises:
      OSError: the save failed (`wait`).
    """
    if self._saving is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Waits for the background save, if one is running.

    Raises:
      OSError: the save failed: the message names the step's folder and the cause; the
        step's temporary folder is removed.
    """
    step, self._saving = self._saving, None
    try:
      self._manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-exception-caught
      raise self._not_saved(step, error) from error

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """(state, data_state) saved at `step`, shaped like `target` (exact dtypes and values)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    if restored['data'] is None:  # orbax answers None for an item folder that is missing
      raise JaxfoldError(f'{self.directory / str(step)}: no data/ (the data position)')
    return restored['state'], restored['data']

  def restore_latest(self, target: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data_state) of the newest step that reads back; None if there is no step.

    Each newer step that does not read is reported (logging.warning: its folder, the cause,
    the step resumed instead) and moved aside to <step>.damaged, so that the resumed run
    saves that step again. On several processes a step counts as read only where every
    process read it.

    Raises:
      JaxfoldError: no step reads back (the folders are left as they are).
    """
    damaged = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, data_state = self.restore(step, target)
        cause = None
      except Exception as error:  # pylint: disable=broad-exception-caught
        cause = one_line(error)
      if not _on_every_process(cause is None):
        cause = cause or 'another process could not read it'
      if cause is None:
        self._move_aside(damaged, resumed=step)
        return step, state, data_state
      damaged.append((step, cause))
    if damaged:
      newest, cause = damaged[0]
      raise JaxfoldError(
          f'{self.directory}: no checkpoint reads back (steps '
          f'{", ".join(str(step) for step, _ in damaged)}); step {newest}: {cause}; move the '
          'checkpoints away (or use another --workdir) to train from the start')
    return None

  def close(self) -> None:
    """Waits for the background save (raising its failure, as `wait`), then stops orbax's
    threads."""
    try:
      self.wait()
    finally:
      self._manager.close()

  def __enter__(self) -> 'Checkpoints':
    return self

  def __exit__(self, kind: type[BaseException] | None, *_) -> None:
    if kind is None:
      self.close()
      return
    try:  # already failing: the save still running is finished, but no error hides that one
      self.close()
    except OSError as error:
      logger.warning('%s', error)

  def _move_aside(self, damaged: list[tuple[int, str]], resumed: int) -> None:
    """Renames each damaged step's folder to <step>.damaged (replacing an older one)."""
    if not damaged:
      return
    for step, cause in damaged:
      folder = self.directory / str(step)
      aside = folder.with_name(folder.name + DAMAGED_SUFFIX)
      if jax.process_index() == 0:
        if aside.exists():
          aside.rmtree()
        folder.rename(aside)
      logger.warning('%s: cannot be read back (%s); moved to %s, resuming from step %d', folder,
                     cause, aside.name, resumed)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('jaxfold: damaged checkpoints moved aside')
    self._manager.reload()

  def _not_saved(self, step: int | None, error: Exception) -> OSError:
    """The error to raise for a failed save of `step`, its temporary folder removed."""
    if step is None:  # not one of ours: orbax raised while no save of ours was running
      return OSError(f'{self.directory}: a checkpoint was not saved: {one_line(error)}')
    if jax.process_index() == 0:
      _remove_temporary_folders(self.directory, f'{step}{TEMPORARY_MARK}', quiet=True)
    return OSError(f'{self.directory / str(step)}: the checkpoint of step {step} was not saved: '
                   f'{one_line(error)}')


def _remove_temporary_folders(directory: epath.Path, prefix: str = '',
                              quiet: bool = False) -> None:
  """Removes the temporary folders of unfinished saves in `directory` whose names start with
  `prefix` (a warning names them, unless `quiet`)."""
  if not directory.is_dir():
    return
  left = sorted(path for path in directory.iterdir()
                if path.name.startswith(prefix) and TEMPORARY_MARK in path.name)
  for path in left:
    path.rmtree(missing_ok=True)
  if left and not quiet:
    logger.warning('%s: removed what unfinished saves left (%s)', directory,
                   ', '.join(path.name for path in left))


def _on_every_process(ok: bool) -> bool:
  """Whether `ok` holds on every process (so that all of them restore the same step)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array(ok))))


def is_training_checkpoint(path: str | os.PathLike) -> bool:
  """Whether `path` is a step directory of a training run (<workdir>/checkpoints/<step>)."""
  path = run_path(path)
  return ((path / 'state').is_dir() and path.parent.name == CHECKPOINTS_DIR
          and (path.parent.parent / CONFIG_FILE).is_file())


def run_config(path: str | os.PathLike) -> config_lib.TrainConfig:
  """The config of the run a step directory belongs to."""
  return config_lib.from_json((run_path(path).parent.parent / CONFIG_FILE).read_text())


def read_state(path: str | os.PathLike) -> dict[str, Any]:
  """The whole TrainState of a training checkpoint step directory, as numpy, whatever mesh or
  number of processes wrote it (each array is gathered onto this process's first device)."""
  quiet_orbax()
  path = run_path(path)
  if not is_training_checkpoint(path):
    raise JaxfoldError(f'{path}: not a training checkpoint (<workdir>/checkpoints/<step>/state '
                       f'with <workdir>/{CONFIG_FILE})')
  try:
    # Without a target orbax would rebuild the writer's shardings, on devices that may not
    # exist here (a pod checkpoint read on a laptop).
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
        ocp.StandardCheckpointHandler().metadata(path / 'state').tree)
    with ocp.StandardCheckpointer() as checkpointer:
      state = checkpointer.restore(path / 'state', target)
  except Exception as e:  # orbax raises many types for a damaged directory
    raise JaxfoldError(f'{path}: cannot read the checkpoint: {one_line(e)}') from e
  return jax.tree.map(np.asarray, state)


def read_params(path: str | os.PathLike, *, ema: bool = True) -> dict:
  """The averaged (ema=True) or the trained parameters of a training checkpoint, as numpy."""
  return read_state(path)['ema_params' if ema else 'params']
