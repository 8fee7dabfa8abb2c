"""The training configuration: typed, frozen, loaded from a Python file, overridable by path.

A config file (e.g. `configs/train/initial.py`) defines `get_config() -> TrainConfig`; stages
are then files one can diff. `override(config, ['optimizer.learning_rate=5e-4', ...])`
changes any field by its dotted path (the command line's `--set`), parsing each value as the
type of the field it replaces, so a misspelt path or a value of the wrong type fails at once.

The procedure is Jumper et al. (2021) Suppl. 1.11 and Table 4: Adam (0.9, 0.999, 1e-6), a
learning rate warmed up linearly to 1e-3 over 1000 steps and multiplied by 0.95 after 50k,
gradients clipped to global norm 0.1 per example, parameters averaged with decay 0.999,
global batches of 128, 1..4 recycling iterations drawn per step.
"""

import ast
import dataclasses
import importlib.util
import json
import os
import pathlib
import typing
from collections.abc import Sequence
from typing import Any, Literal

from jaxfold.common.errors import JaxfoldError
from jaxfold.data.processing import TrainingDataConfig
from jaxfold.data.training_set import DataSource
from jaxfold.loss.total import INITIAL_TRAINING, LossConfig
from jaxfold.model import config as model_config
from jaxfold.model.attention_core import Implementation


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Adam with AlphaFold's schedule, clipping and parameter averaging (Suppl. 1.11.3)."""
  learning_rate: float = 1e-3
  warmup_steps: int = 1000
  decay_steps: int = 50_000
  decay_factor: float = 0.95
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-6
  clip_norm: float = 0.1
  # AlphaFold clips each example's gradient, then averages; False clips the batch mean.
  clip_per_example: bool = True
  ema_decay: float = 0.999


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
  """Held-out chains scored with the averaged (EMA) parameters every `every` steps.

  keep: chains whose predicted structures are written at every validation (PDB files by
    step); empty keeps the first chain's.
  """
  data: str | None = None
  split: str = 'train'
  every: int = 1000
  num_recycle: int = 3
  max_chains: int | None = None
  max_length: int | None = None
  keep: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything one training run reads.

  preset: the AlphaFold preset `model` derives from (named in exported checkpoints).
  model: the network and its feature sizes; `model.data` sets the MSA profile masking and
    template use of the training batches, `crop` their sizes.
  max_num_recycle: recycling iterations are drawn uniformly from 0..max_num_recycle per step,
    the same for the whole global batch; only the last iteration is differentiated.
  global_batch_size: examples per optimizer step, as `micro_batch_size` examples per
    accumulation step (the examples of one micro-batch are computed together, split over
    the mesh's batch axes); None: one example per device of that split (1 on one device).
  dtype: 'bfloat16' computes activations in bfloat16; parameters, optimizer state and loss
    stay float32.
  mesh: the device mesh as (axis, size) pairs over 'data', 'fsdp' and 'res' (one size may be
    -1: the devices left over); a run may resume on another mesh.
  sharding: the layout, a rules table of `jaxfold.train.sharding.LAYOUTS` ('data', 'fsdp',
    'dap', 'fsdp_dap'); a micro-batch's examples are split over its batch axes.
  use_remat, subbatch_size, attention: the network's memory settings (`GlobalConfig`). With
    'chunked' attention the backward pass recomputes each block of attention logits instead
    of storing them, and a subbatch then bounds the rows whose blocks exist at once: what
    makes the fine-tuning crop fit (`jaxfold plan --train`).
  """
  preset: str = 'model_1'
  model: model_config.AlphaFoldConfig = model_config.preset('model_1')
  data: tuple[DataSource, ...] = (DataSource(path=''),)
  crop: TrainingDataConfig = TrainingDataConfig()
  loss: LossConfig = INITIAL_TRAINING
  optimizer: OptimizerConfig = OptimizerConfig()
  validation: ValidationConfig = ValidationConfig()
  global_batch_size: int = 128
  micro_batch_size: int | None = None
  mesh: tuple[tuple[str, int], ...] = (('data', -1),)
  sharding: str = 'data'
  max_num_recycle: int = 3
  dropout: bool = True
  dtype: Literal['float32', 'bfloat16'] = 'float32'
  use_remat: bool = True
  subbatch_size: int | None = None
  attention: Implementation = 'xla'
  seed: int = 0
  steps: int = 10_000_000
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  log_every: int = 1
  data_workers: int = 0

  def __post_init__(self):
    if self.micro_batch_size and self.global_batch_size % self.micro_batch_size:
      raise ValueError(f'global_batch_size {self.global_batch_size} is not a multiple of '
                       f'micro_batch_size {self.micro_batch_size}')
    if not self.data:
      raise ValueError('the config names no data source')
    if min(self.checkpoint_every, self.log_every, self.validation.every, self.steps) < 1:
      raise ValueError('steps, checkpoint_every, log_every and validation.every must be >= 1')


class ConfigError(JaxfoldError):
  """A config file or an override that cannot be used."""


def load(path: str | os.PathLike) -> TrainConfig:
  """Runs the config file at `path` and returns its `get_config()`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such config file')
  spec = importlib.util.spec_from_file_location(f'jaxfold_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_config', None)):
      raise ConfigError(f'{path}: defines no get_config()')
    config = module.get_config()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'{path}: {type(e).__name__}: {e}') from e
  if not isinstance(config, TrainConfig):
    raise ConfigError(f'{path}: get_config() returned {type(config).__name__}, not TrainConfig')
  return config


def override(config: TrainConfig, assignments: Sequence[str]) -> TrainConfig:
  """`config` with `key=value` assignments applied in order (`--set`).

  Keys are dotted field paths (`optimizer.learning_rate`, `model.model.num_recycle`,
  `data.0.path` for the first data source); values are Python literals or bare strings,
  checked against the field's type.
  """
  for assignment in assignments:
    key, sep, text = assignment.partition('=')
    if not sep or not key:
      raise ConfigError(f'--set {assignment!r}: expected key=value')
    try:
      config = _set(config, key.split('.'), text, key)
    except (AttributeError, IndexError, TypeError, ValueError) as e:
      raise ConfigError(f'--set {assignment}: {e}') from e
  return config


def _set(node: Any, path: list[str], text: str, key: str) -> Any:
  head, rest = path[0], path[1:]
  if isinstance(node, tuple):
    index = int(head)
    items = list(node)
    items[index] = _set(items[index], rest, text, key) if rest else _parse(text, type(items[index]))
    return tuple(items)
  if not dataclasses.is_dataclass(node):
    raise AttributeError(f'{key}: {type(node).__name__} has no fields')
  fields = {f.name: f for f in dataclasses.fields(node)}
  if head not in fields:
    raise AttributeError(f'{type(node).__name__} has no field {head!r}')
  current = getattr(node, head)
  if rest:
    value = _set(current, rest, text, key)
  else:
    value = _parse(text, typing.get_type_hints(type(node))[head])
  return dataclasses.replace(node, **{head: value})


def _parse(text: str, annotation: Any) -> Any:
  """`text` as a value of the annotated type (int, float, bool, str, None, tuples, literals)."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if text.lower() in ('true', 'false'):
    value = text.lower() == 'true'
  options = typing.get_args(annotation) if model_config.is_union(annotation) else (annotation,)
  for option in options:
    if option is type(None) and value is None:
      return None
    if typing.get_origin(option) is Literal:
      if value in typing.get_args(option):
        return value
      continue
    if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    if option is str:
      if isinstance(value, str) or not text.strip():
        return text
      continue
    origin = typing.get_origin(option) or option
    if origin is tuple and isinstance(value, (tuple, list, str)):
      value = (value,) if isinstance(value, str) else value
      return tuple(value)
    if isinstance(origin, type) and isinstance(value, origin) and not (
        origin is int and isinstance(value, bool)):
      return value
  raise TypeError(f'{text!r} is not a {annotation}')


def to_json(config: TrainConfig) -> str:
  """The whole config as JSON (kept in the workdir beside the run)."""
  return json.dumps(dataclasses.asdict(config), indent=1, default=str)


def from_json(text: str) -> TrainConfig:
  """The config `to_json` wrote."""
  return model_config.from_dict(TrainConfig, json.loads(text))
