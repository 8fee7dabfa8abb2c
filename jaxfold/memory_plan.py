"""Will N residues fit? The compiled memory plan of a prediction, and settings for a budget.

XLA plans every buffer of a compiled program before running it: lowering the prediction on
abstract inputs (`jax.jit(f).lower(shapes).compile().memory_analysis()`) gives its argument,
output, temporary and aliased bytes without allocating anything, on any machine. The plan is
that of this backend's compiler (the CPU's here; a GPU's or TPU's fuses and pads differently),
of the whole prediction as `jaxfold predict` compiles it: the preset's parameters, a batch of
its recycling slices, the recycling loop, and the outputs predict writes; with `Shapes.mesh`
(`predict --mesh res=8`), one device's part of it split by residues.

The settings are named levels of chunking (`SETTINGS`), from the fewest loop iterations to the
most. Fewer, larger pieces keep an accelerator busiest, so `choose` takes the first level
whose plan fits the budget; `longest` finds the longest sequence the leanest level fits.

With `Shapes.train` the program is one step of `jaxfold train` instead (`TRAIN_SETTINGS`): a
crop of `length` residues, its forward and backward pass through the drawn recycling
iterations, the fine-tuning loss, gradient clipping, Adam and the parameter average, on one
device (or one device's part of a step sharded over `Shapes.mesh`). Its batch is a training
example the training pipeline makes from a synthetic chain of that length, so every feature
and label has the shape a real one has.
"""

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxfold import inference
from jaxfold.common import residue_constants as rc
from jaxfold.data import ground_truth, msa_features, parsers, processing, templates
from jaxfold.data.processing import TrainingDataConfig
from jaxfold.loss.total import FINE_TUNING
from jaxfold.model import config as config_lib
from jaxfold.model.alphafold import AlphaFold, feature_shapes
from jaxfold.model.global_config import GlobalConfig
from jaxfold.train import optimizer, sharding, state as state_lib, step as step_lib
from jaxfold.train.config import TrainConfig

# Named settings, least chunked first (GlobalConfig fields).
SETTINGS: dict[str, dict[str, Any]] = {
    # Every layer in one piece: the most memory, the fewest loop iterations.
    'one_piece': {},
    # AlphaFold's own low-memory inference: attention, transitions and the outer product mean
    # 4 rows at a time.
    'alphafold': {'subbatch_size': 4},
    # And the pair's projections, triangle multiplication and template attention 64 pair rows
    # at a time, each update added into the pair in place: besides the pair, no whole
    # N x N x c intermediate but a triangle multiplication's right projection.
    'lean': {'subbatch_size': 4, 'pair_chunk_size': 64},
    # And the attention logits in 256 x 256 blocks (online softmax).
    'leanest': {'subbatch_size': 4, 'pair_chunk_size': 64, 'attention': 'chunked',
                'attention_chunk_size': 256},
}
DEFAULT_SETTINGS = 'lean'

# Named settings of the training step (TrainConfig fields), least chunked first; every
# Evoformer, extra-MSA and template block is rematerialised in the backward pass.
TRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    # AlphaFold's: each attention's logits whole, kept for the backward pass.
    'alphafold': {},
    # Attention in 256 x 256 blocks whose backward pass recomputes each block (online
    # softmax), 64 rows (sequences, residues) at a time: no attention's logits exist whole in
    # either pass, which is what 5,120 extra sequences at crop 384 need.
    'lean': {'attention': 'chunked', 'subbatch_size': 64},
}
# `longest` reports lengths to this many residues.
LENGTH_STEP = 32

_UNITS = {'': 1, 'b': 1, 'k': 2**10, 'm': 2**20, 'g': 2**30, 't': 2**40,
          'kib': 2**10, 'mib': 2**20, 'gib': 2**30, 'tib': 2**40,
          'kb': 10**3, 'mb': 10**6, 'gb': 10**9, 'tb': 10**12}


def parse_bytes(text: str) -> int:
  """'40GiB', '40G' (binary), '40GB' (decimal), '512MiB', '1e9' -> bytes."""
  match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([a-zA-Z]*)\s*', text)
  unit = match and match.group(2).lower()
  if not match or unit not in _UNITS or float(match.group(1)) <= 0:
    raise ValueError(f'memory budget {text!r}: expected a positive size such as 40GiB, 16G, '
                     f'80GB or 512MiB')
  return int(float(match.group(1)) * _UNITS[unit])


def gib(num_bytes: float) -> str:
  return f'{num_bytes / 2**30:.2f} GiB'


def settings_of(train: bool) -> dict[str, dict[str, Any]]:
  return TRAIN_SETTINGS if train else SETTINGS


def global_config(settings: str, dtype: str = 'float32', train: bool = False) -> GlobalConfig:
  named = settings_of(train)
  if settings not in named:
    raise ValueError(f'unknown {"training " if train else ""}settings {settings!r}; choose one '
                     f'of {", ".join(named)}')
  return GlobalConfig(dtype=dtype, use_remat=train, **named[settings])


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What a prediction's memory depends on besides the settings."""
  preset: str
  length: int
  msa_clusters: int
  extra_msa: int
  templates: int
  num_recycle: int
  dtype: str = 'float32'
  logits: bool = False  # the heads' logits returned too (predict --save-logits)
  train: bool = False  # a training step on a crop of `length` residues, not a prediction
  # The device mesh as (axis, size) pairs over this machine's devices: a prediction's residues
  # over 'res' (`inference.prediction_mesh`), or a training step's layout with one example
  # per data-parallel replica; () is one device. The plan is one device's.
  mesh: tuple[tuple[str, int], ...] = ()

  def describe(self) -> str:
    what = (f'training step of {self.preset}, crop {self.length:,} residues' if self.train
            else f'{self.preset}, {self.length:,} residues')
    recycling = (f'up to {self.num_recycle} recycling iterations (all compiled)' if self.train
                 else f'{self.num_recycle} recycling iterations')
    return (f'{what}, {self.msa_clusters:,} MSA clusters, {self.extra_msa:,} extra sequences, '
            f'{self.templates} templates, {self.dtype}, {recycling}'
            + (', logits returned' if self.logits else '')
            + (f'; per device of mesh {sharding.format_mesh(self.mesh)} '
               f'({layout(self.mesh)} layout)' if self.mesh else ''))


def layout(mesh: Sequence[tuple[str, int]]) -> str:
  """The sharding layout that uses every axis of `mesh` of size other than 1."""
  sizes = dict(mesh)
  residues, fsdp = sizes.get('res', 1) != 1, sizes.get('fsdp', 1) != 1
  return {(True, True): 'fsdp_dap', (True, False): 'dap', (False, True): 'fsdp',
          (False, False): 'data'}[residues, fsdp]


def preset_shapes(preset: str, length: int, *, msa_clusters: int | None = None,
                  extra_msa: int | None = None, templates: int | None = None,
                  num_recycle: int | None = None, dtype: str = 'float32',
                  logits: bool = False, train: bool = False,
                  mesh: Sequence[tuple[str, int]] = ()) -> Shapes:
  """The shapes `jaxfold predict` gives the model for a sequence of `length` residues with full
  alignments: the preset's MSA sizes unless given (MSA clusters as the batch holds them, less
  the template rows where the preset makes room for them). With `train`, those of a training
  crop of `length` residues with as many sequences (model_1's 512 clusters and 5,120 extra
  sequences are AlphaFold's fine-tuning sizes) and up to `num_recycle` iterations. On
  `mesh`, the plan of one of its devices.
  """
  config = config_lib.preset(preset)
  data, template = config.data, config.model.embeddings_and_evoformer.template
  for name, value in (('length', length), ('msa clusters', msa_clusters),
                      ('extra MSA sequences', extra_msa)):
    if value is not None and value < 1:
      raise ValueError(f'{name} {value}: must be at least 1')
  for name, value in (('templates', templates), ('recycling iterations', num_recycle)):
    if value is not None and value < 0:
      raise ValueError(f'{name} {value}: must be 0 or more')
  if templates is None:
    templates = data.eval.max_templates if template.enabled else 0
  if msa_clusters is None:
    msa_clusters = data.eval.max_msa_clusters
    if data.common.reduce_msa_clusters_by_max_templates and template.enabled:
      msa_clusters -= templates
  return Shapes(preset, length, msa_clusters,
                data.common.max_extra_msa if extra_msa is None else extra_msa,
                max(templates, 1) if template.enabled else 0,
                config.model.num_recycle if num_recycle is None else num_recycle, dtype, logits,
                train, tuple(mesh))


@dataclasses.dataclass(frozen=True)
class Plan:
  """XLA's plan of one compiled prediction, in bytes."""
  shapes: Shapes
  settings: str
  global_config: GlobalConfig
  argument_bytes: int
  output_bytes: int
  temp_bytes: int
  alias_bytes: int
  compile_seconds: float
  # The compiled program (`jax.stages.Compiled`), to run where the plan was of real inputs.
  compiled: Any = dataclasses.field(default=None, repr=False, compare=False)

  @property
  def total_bytes(self) -> int:
    """Arguments, outputs and temporaries, less outputs written into donated arguments."""
    return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes

  def as_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self.shapes), 'settings': self.settings,
            'global_config': dataclasses.asdict(self.global_config),
            'argument_bytes': self.argument_bytes, 'output_bytes': self.output_bytes,
            'temp_bytes': self.temp_bytes, 'alias_bytes': self.alias_bytes,
            'total_bytes': self.total_bytes, 'compile_seconds': round(self.compile_seconds, 1)}


def plan(shapes: Shapes, settings: str = DEFAULT_SETTINGS) -> Plan:
  """Compiles the prediction (or training step) of `shapes` under `settings` on abstract
  inputs; runs nothing."""
  gc = global_config(settings, shapes.dtype, shapes.train)
  program, args = (_training_step if shapes.train else _prediction)(shapes, gc)
  return compiled_plan(shapes, settings, gc, program, args)


def compiled_plan(shapes: Shapes, settings: str, gc: GlobalConfig, program: Any,
                  args: Sequence[Any]) -> Plan:
  """The plan of jitted `program` compiled for `args` (arrays or shape structs); with real
  arrays, `Plan.compiled(*args)` runs it."""
  start = time.perf_counter()
  compiled = program.lower(*args).compile()
  memory = compiled.memory_analysis()
  return Plan(shapes, settings, gc, memory.argument_size_in_bytes, memory.output_size_in_bytes,
              memory.temp_size_in_bytes, memory.alias_size_in_bytes,
              time.perf_counter() - start, compiled)


def _prediction(shapes: Shapes, gc: GlobalConfig) -> tuple[Any, tuple[Any, ...]]:
  """`jaxfold predict`'s program (on `shapes.mesh`, if any) and its abstract (parameters,
  batch)."""
  model_config = config_lib.preset(shapes.preset).model
  model = AlphaFold(model_config, gc)
  num_slices = shapes.num_recycle + 1 if model_config.resample_msa_in_recycling else 1
  batch = feature_shapes(model_config, shapes.length, shapes.msa_clusters, shapes.extra_msa,
                         num_templates=max(shapes.templates, 1), num_slices=num_slices)
  one_slice = {k: jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for k, v in batch.items()}
  params = jax.eval_shape(model.init, jax.random.key(0), one_slice)['params']
  run = inference.prediction_fn(model, shapes.num_recycle, logits=shapes.logits)
  mesh = inference.prediction_mesh(shapes.mesh) if shapes.mesh else None
  return inference.jit_prediction(run, mesh), (params, batch)


def train_config(shapes: Shapes, gc: GlobalConfig) -> TrainConfig:
  """`jaxfold train`'s config for one example of `shapes` per step on one device."""
  model = config_lib.preset(shapes.preset)
  weights = FINE_TUNING.weights
  if not model.model.heads.predicted_aligned_error.weight:  # no pTM head
    weights = dataclasses.replace(weights, aligned_error=0.0)
  reduce = (model.data.common.reduce_msa_clusters_by_max_templates
            and model.model.embeddings_and_evoformer.template.enabled)
  crop = TrainingDataConfig(
      crop_size=shapes.length, max_extra_msa=shapes.extra_msa,
      max_msa_clusters=shapes.msa_clusters + (shapes.templates if reduce else 0),
      max_templates=max(shapes.templates, 1))
  return TrainConfig(preset=shapes.preset, model=model, crop=crop,
                     loss=dataclasses.replace(FINE_TUNING, weights=weights),
                     global_batch_size=1, mesh=(('data', 1),), sharding='data',
                     max_num_recycle=shapes.num_recycle, dtype=shapes.dtype,
                     use_remat=gc.use_remat, subbatch_size=gc.subbatch_size,
                     attention=gc.attention)


def training_example(config: TrainConfig, seed: int = 0) -> dict[str, np.ndarray]:
  """The training pipeline's example of `config`'s crop from a synthetic chain: random
  sequences as its alignment (as many as the crop samples), random coordinates of every
  atom as its structure, no template hits (the batch holds padded template slots)."""
  rng = np.random.default_rng(seed)
  crop = config.crop
  num_res, num_seq = crop.crop_size, crop.max_msa_clusters + crop.max_extra_msa + 1
  letters = np.array(rc.restypes)
  sequences = [''.join(row) for row in rng.choice(letters, (num_seq, num_res))]
  raw = msa_features.make_sequence_features(sequences[0], 'synthetic', num_res)
  raw.update(msa_features.make_msa_features([parsers.Msa(
      sequences, np.zeros((num_seq, num_res), np.int32), ['synthetic'] * num_seq)]))
  raw.update(templates.empty_template_features(num_res))
  aatype = np.argmax(raw['aatype'], axis=-1)
  positions = rng.normal(scale=10.0, size=(num_res, rc.atom_type_num, 3))
  raw.update(ground_truth.ground_truth_features(
      aatype, positions, np.asarray(rc.restype_atom37_mask)[aatype], resolution=2.0,
      source='synthetic chain'))
  return processing.process_features(raw, config.model.data, mode='train', seed=seed,
                                     num_recycle=config.max_num_recycle, train_config=crop,
                                     source='synthetic chain')


def _training_step(shapes: Shapes, gc: GlobalConfig) -> tuple[Any, tuple[Any, ...]]:
  """`jaxfold train`'s step on `shapes.mesh` (or one device) and its abstract (state,
  batch): one example per data-parallel replica."""
  axes = shapes.mesh or (('data', 1),)
  config = dataclasses.replace(train_config(shapes, gc), mesh=axes, sharding=layout(axes))
  step, state, batch = sharded_training_step(
      config, training_example(config), jax.devices() if shapes.mesh else jax.devices()[:1])
  return step, (state, batch)


def sharded_training_step(config: TrainConfig, example: dict[str, np.ndarray],
                          devices: Sequence[jax.Device]) -> tuple[Any, Any, dict[str, Any]]:
  """(step, abstract state, abstract batch): `jaxfold train`'s step of `config` on its mesh
  of `devices` and layout, for a global batch of `example`'s shapes, one per data-parallel
  replica (`config`'s batch sizes are set to that); the state and batch carry their
  shardings."""
  mesh = sharding.make_mesh(config.mesh, config.sharding, devices)
  rules = sharding.LAYOUTS[config.sharding]
  examples = sharding.batch_split(mesh, rules)
  config = dataclasses.replace(config, global_batch_size=examples, micro_batch_size=None)
  tx = optimizer.adam(config.optimizer)
  state = jax.eval_shape(lambda: state_lib.create(
      state_lib.init_params(config.model, jax.random.key(0)), tx, config.seed))
  state_shardings = sharding.state_shardings(state, mesh, rules, tx)
  batch_sharding = sharding.batch_sharding(mesh, rules)
  batch = {k: jax.ShapeDtypeStruct((examples,) + v.shape, v.dtype, sharding=batch_sharding)
           for k, v in example.items()}
  step = step_lib.jit_train_step(config, tx, mesh, state_shardings)
  return step, sharding.abstract(state, state_shardings), batch


def choose(shapes: Shapes, budget: int, progress=lambda message: None,
           planner: Callable[[Shapes, str], Plan] | None = None) -> Plan:
  """The plan of the least chunked settings that fit `budget` bytes; ValueError if none does.
  `planner(shapes, settings)` plans one (default: `plan`; predict compiles its own program)."""
  for settings in settings_of(shapes.train):
    result = (planner or plan)(shapes, settings)
    fits = result.total_bytes <= budget
    progress(f'settings {settings}: {gib(result.total_bytes)} '
             f'{"fits" if fits else "does not fit"} {gib(budget)}')
    if fits:
      return result
  raise ValueError(f'{shapes.length:,} residues do not fit {gib(budget)}: the leanest settings '
                   f'({settings}) plan {gib(result.total_bytes)}')


def longest(shapes: Shapes, budget: int, settings: str = 'leanest',
            progress=lambda message: None, plans: dict[int, Plan] | None = None,
            planner: Callable[[Shapes, str], Plan] | None = None) -> Plan:
  """The plan of the longest sequence (to LENGTH_STEP residues) that `settings` fit in budget.

  Memory grows about as a quadratic in the length; one is fitted through the three plans
  nearest the boundary, its root at the budget is planned, and the lengths around it are
  planned until the last that fits is LENGTH_STEP short of one that does not. Every reported
  length is a compiled plan. `plans` (length -> Plan of these shapes and settings) are
  reused, and new ones added. `planner(shapes, settings)` plans a length (default: `plan`;
  a benchmark passes another model's).
  """
  plans = {} if plans is None else plans
  planner = planner or plan

  def measure(length: int) -> Plan:
    if length not in plans:
      plans[length] = planner(dataclasses.replace(shapes, length=length), settings)
      progress(f'{length:,} residues: {gib(plans[length].total_bytes)}')
    return plans[length]

  for length in (LENGTH_STEP * 4, LENGTH_STEP * 8, LENGTH_STEP * 16):
    if len(plans) < 3:
      measure(length)
  if all(p.total_bytes > budget for p in plans.values()) and (
      measure(LENGTH_STEP).total_bytes > budget):
    raise ValueError(f'not even {LENGTH_STEP} residues fit {gib(budget)} with settings '
                     f'{settings}: they plan {gib(plans[LENGTH_STEP].total_bytes)}')
  while True:
    good = max(n for n, p in plans.items() if p.total_bytes <= budget)
    bad = min((n for n, p in plans.items() if p.total_bytes > budget), default=None)
    if bad is not None and bad - good <= LENGTH_STEP:
      return plans[good]
    # The quadratic through the three plans nearest the boundary (memory is not exactly
    # quadratic: layouts and chunk counts change with the length).
    middle = good if bad is None else (good + bad) / 2
    nearest = sorted(sorted(plans, key=lambda n: abs(n - middle))[:3])
    guess = _quadratic_root([plans[n] for n in nearest], budget)
    guess = max(good + LENGTH_STEP, guess // LENGTH_STEP * LENGTH_STEP)
    if bad is not None:
      guess = min(guess, bad - LENGTH_STEP)
    if measure(guess).total_bytes <= budget:
      measure(guess + LENGTH_STEP)
    # Otherwise the next round's guess comes from a fit that includes this failure.


def _quadratic_root(points: list[Plan], budget: int) -> int:
  """The length where the quadratic through three (length, total bytes) points meets budget."""
  (x0, y0), (x1, y1), (x2, y2) = ((p.shapes.length, p.total_bytes) for p in points)
  # Newton's divided differences: y = y0 + b (x - x0) + a (x - x0)(x - x1).
  b01, b12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
  a = (b12 - b01) / (x2 - x0)
  b, c = b01 - a * (x0 + x1), y0 - b01 * x0 + a * x0 * x1
  if a <= 0:
    return int((budget - c) / b) if b > 0 else x2 * 2
  return int((-b + math.sqrt(max(b * b - 4 * a * (c - budget), 0.0))) / (2 * a))
