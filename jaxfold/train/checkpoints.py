"""Training checkpoints: orbax, asynchronous, the last K and the best by validation lDDT-Cα.

Layout: <workdir>/checkpoints/<step>/ holds 'state' (the whole TrainState: parameters, EMA,
Adam's state, step, RNG, skip count) and 'data' (the data iterator's position, JSON). The
run's config is <workdir>/config.json, so a step directory alone can be exported
(`read_params`) without the config file the run started from.
"""

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxfold.common.atomic_file import run_path
from jaxfold.train import config as config_lib

CHECKPOINTS_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
BEST_METRIC = 'lddt_ca'


class Checkpoints:
  """The run's checkpoint directory (an orbax CheckpointManager)."""

  def __init__(self, workdir: str | os.PathLike, keep: int):
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                      keep_checkpoints_without_metrics=False)])
    self._manager = ocp.CheckpointManager(
        run_path(workdir) / CHECKPOINTS_DIR, item_names=('state', 'data'),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True,
                                             preservation_policy=policy))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping[str, Any],
           metrics: Mapping[str, float] | None = None) -> None:
    """Starts writing `state` at `step` in the background (a finished write appears whole)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(dict(data_state))),
                       metrics=dict(metrics) if metrics else None, force=True)

  def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    """(state, data_state) saved at `step`, shaped like `target` (exact dtypes and values)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    return restored['state'], restored['data']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


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
  path = run_path(path)
  if not is_training_checkpoint(path):
    raise ValueError(f'{path}: not a training checkpoint (<workdir>/checkpoints/<step>/state '
                     f'with <workdir>/{CONFIG_FILE})')
  try:
    # Without a target orbax would rebuild the writer's shardings, on devices that may not
    # exist here (a pod checkpoint read on a laptop).
    one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
        ocp.StandardCheckpointHandler().metadata(path / 'state').tree)
    state = ocp.StandardCheckpointer().restore(path / 'state', target)
  except Exception as e:  # orbax raises many types for a damaged directory
    raise ValueError(f'{path}: cannot read the checkpoint: {str(e).splitlines()[0]}') from e
  return jax.tree.map(np.asarray, state)


def read_params(path: str | os.PathLike, *, ema: bool = True) -> dict:
  """The averaged (ema=True) or the trained parameters of a training checkpoint, as numpy."""
  return read_state(path)['ema_params' if ema else 'params']
