"""Prediction as a library: what `jaxfold predict` does, step by step, for Python users.

    from jaxfold import inference
    model = inference.load_model('params_model_1_ptm.npz')        # any format, with its config
    raw = inference.raw_features('query.fasta', 'msas/', 'pdb_mmcif/')  # or read_features(pkl)
    batch = inference.make_batch(raw, model.config, max_msa_clusters=32, max_extra_msa=64)
    outputs = inference.predict(model, batch)                     # numpy: structure, confidence
    inference.write(out_dir, 'query', batch, outputs)             # PDB, mmCIF, npz, JSON, PNG

`load_model` reads an AlphaFold .npz, an OpenFold .pt/.ckpt, a jaxfold checkpoint or a
training run's step, with the whole model configuration it records (a trained ablation's
own), else its preset's. `prediction_fn` is the prediction as one function of parameters and
batch: what `predict` compiles and `jaxfold plan` plans, so the plan is of the program that
runs.
"""

import dataclasses
import os
import pathlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxfold.common.errors import JaxfoldError
from jaxfold.model import config as config_lib
from jaxfold.model import logical_axes
from jaxfold.model.alphafold import AlphaFold, model_features
from jaxfold.model.global_config import GlobalConfig
from jaxfold.train import sharding

# `jaxfold predict`'s defaults: attention, transitions and the outer product mean 4 rows at a
# time (as AlphaFold's inference), the pair-wide layers 64 pair rows at a time.
DEFAULT_GLOBAL_CONFIG = GlobalConfig(subbatch_size=4, pair_chunk_size=64)
_NAMED_NPZ = re.compile(r'params_(\w+)\.npz')  # AlphaFold's file names: params_model_1_ptm.npz

# The heads whose outputs are logits (AlphaFold's names); `prediction_fn` returns them only
# when asked.
LOGIT_HEADS = ('distogram', 'masked_msa', 'experimentally_resolved', 'predicted_lddt',
               'predicted_aligned_error')


def prediction_fn(model: AlphaFold, num_recycle: int, return_representations: bool = False,
                  logits: bool = False
                  ) -> Callable[[Any, Mapping[str, jax.Array]], dict[str, Any]]:
  """fn(params, batch) -> the model's outputs after num_recycle recycling iterations.

  What a prediction does not ask for is not returned, and what is not returned XLA need not
  keep: 'prev' (the inputs a further iteration would recycle, among them the N_res x N_res x
  c_z pair) never, the heads' logits and 'aligned_confidence_probs' (N_res x N_res x 64
  each for the distogram and PAE: 4 GiB apiece at 4,096 residues in float32) only with
  `logits`. The structure and the confidence metrics (pLDDT, PAE, pTM) always.
  """
  def run(params, batch):
    outputs = model.apply({'params': params}, batch, num_recycle=num_recycle,
                          return_representations=return_representations)
    outputs.pop('prev')
    if not logits:
      for head in LOGIT_HEADS:
        outputs.pop(head, None)
      outputs.get('confidence', {}).pop('aligned_confidence_probs', None)
    return outputs
  return run


def prediction_mesh(axes: Sequence[tuple[str, int]],
                    devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh of a prediction split over `axes` (`--mesh res=8`): one structure's residues
  over 'res'; 'data' and 'fsdp' split a training batch's examples and weights, and a
  prediction has one example and weights that fit any device."""
  other = [f'{name}={size}' for name, size in axes if name != 'res' and size != 1]
  if other:
    raise sharding.ShardingError(
        f'--mesh {sharding.format_mesh(axes)}: a prediction splits its residues '
        f'over res only ({", ".join(other)} split examples and weights in training)')
  return sharding.make_mesh(axes, 'dap', devices)


def jit_prediction(fn: Callable[[Any, Mapping[str, jax.Array]], Any], mesh: Mesh | None = None
                   ) -> Any:
  """`prediction_fn`'s fn jitted: on one device, or over `mesh` by dynamic axial parallelism
  (FastFold's DAP: each row-wise module holds 1/n of the MSA's or the pair's rows, each
  column-wise one 1/n of their columns; XLA places the all-to-all between them, as in
  `jaxfold train --sharding dap`). Parameters, batch and outputs are whole on every device.
  """
  if mesh is None:
    return jax.jit(fn)

  def sharded(params, batch):
    with logical_axes.use_rules(mesh, sharding.LAYOUTS['dap']):  # read while traced
      return fn(params, batch)

  whole = sharding.replicated(mesh)
  return jax.jit(sharded, in_shardings=whole, out_shardings=whole)


# ---------------------------------------------------------------------------------------------
# Weights with their configuration.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Model:
  """Parameters with the configuration they belong to.

  preset: the DeepMind preset the model is (or was trained from); config: the whole
  configuration (data and network), which a trained ablation records itself; source: the
  path it was read from.
  """
  params: Any
  config: config_lib.AlphaFoldConfig
  preset: str
  source: str


def is_training_step(path: str | os.PathLike) -> bool:
  """Whether `path` is a training run's step directory (<workdir>/checkpoints/<step>)."""
  from jaxfold.train import checkpoints  # pylint: disable=import-outside-toplevel
  return checkpoints.is_training_checkpoint(path)


def weights_config(path: str | os.PathLike, preset: str | None = None
                   ) -> tuple[str | None, config_lib.AlphaFoldConfig | None]:
  """(preset, whole model configuration) of weights at `path`, reading no parameters: what a
  jaxfold checkpoint or a training run records (a trained ablation's own configuration), else
  `preset`'s, else the preset an AlphaFold file's name `params_<preset>.npz` gives; (None,
  None) when nothing tells (an OpenFold file without a preset).

  Raises:
    FileNotFoundError: nothing at `path`.
    JaxfoldError: `preset` differs from what a checkpoint records, or an .npz that does not
      say its preset.
  """
  from jaxfold.convert import formats  # pylint: disable=import-outside-toplevel
  source = pathlib.Path(path)
  if not source.exists():
    raise FileNotFoundError(f'{source}: no such file or directory')
  if is_training_step(path):
    from jaxfold.train import checkpoints  # pylint: disable=import-outside-toplevel
    run = checkpoints.run_config(path)
    recorded, config = run.preset, run.model
  elif source.is_dir():
    recorded, config = formats.checkpoint_config(source)
  else:
    named = _NAMED_NPZ.fullmatch(source.name)
    if preset is None and named and named.group(1) in config_lib.PRESETS:
      preset = named.group(1)
    if preset is None and source.suffix.lower() == '.npz':
      raise JaxfoldError(f'{source}: an AlphaFold .npz does not say which model it is; pass '
                         '--preset (or name it params_<preset>.npz, as AlphaFold does)')
    return preset, None if preset is None else config_lib.preset(preset)
  if preset is not None and preset != recorded:
    raise JaxfoldError(f'{source}: checkpoint holds preset {recorded!r}, not {preset!r}')
  return recorded, config


def load_params(path: str | os.PathLike, preset: str | None = None, *, ema: bool | None = None,
                trusted: bool = False, finite: bool = True
                ) -> tuple[Any, str, config_lib.AlphaFoldConfig]:
  """(parameters, preset, whole model configuration) of any weights (`weights_config`),
  checked against that configuration's parameter shapes.

  ema: of an OpenFold Lightning file or a training step, the averaged (default, where
    present) or the trained weights. trusted: let torch unpickle anything in an OpenFold file
    (only for files you trust). finite: refuse NaN or inf parameters.
  """
  # pylint: disable=import-outside-toplevel
  from jaxfold.convert import alphafold_npz, formats, schema
  preset, config = weights_config(path, preset)
  expected = None if config is None else schema.parameter_shapes(config.model)
  if not is_training_step(path):
    # An OpenFold file without a preset is read anyway, so the error names the preset it fits.
    tree, _ = formats.load_params(
        path, expected=expected, schema_name=f'preset {preset!r}',
        model_config=None if config is None else config.model, ema=ema, trusted=trusted,
        finite=finite)
    return tree, preset, config
  from jaxfold.train import checkpoints
  tree = checkpoints.read_params(path, ema=ema is not False)
  flat = alphafold_npz.flat_keys(tree)
  alphafold_npz.check_schema({key: value.shape for key, value in flat.items()}, expected,
                             str(path), schema_name='the run\'s model configuration')
  if finite:
    alphafold_npz.check_finite(tree, str(path))
  return tree, preset, config


def load_model(path: str | os.PathLike, preset: str | None = None, *, ema: bool | None = None,
               trusted: bool = False) -> Model:
  """The model at `path` (`load_params`), ready for `make_batch` and `predict`."""
  params, preset, config = load_params(path, preset, ema=ema, trusted=trusted)
  return Model(params, config, preset, os.fspath(path))


# ---------------------------------------------------------------------------------------------
# Inputs.
# ---------------------------------------------------------------------------------------------

def raw_features(fasta: str | os.PathLike, msa_dir: str | os.PathLike,
                 mmcif_dir: str | os.PathLike | None = None, *,
                 max_template_date: str | None = None) -> dict[str, np.ndarray]:
  """AlphaFold's raw features (a features.pkl's dict) of one sequence and its precomputed
  alignments (`jaxfold.data.pipeline.raw_features`); templates from `mmcif_dir`."""
  from jaxfold.data import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.raw_features(fasta, msa_dir, mmcif_dir,
                               max_template_date=max_template_date).features


def read_features(path: str | os.PathLike, trusted: bool = False) -> dict[str, np.ndarray]:
  """A features.pkl, unpickling only arrays, numbers and strings unless `trusted`."""
  from jaxfold.data import raw_features as raw_lib  # pylint: disable=import-outside-toplevel
  return raw_lib.read_features(path, trusted=trusted)


def make_batch(raw: Mapping[str, np.ndarray], config: config_lib.AlphaFoldConfig, *,
               max_msa_clusters: int | None = None, max_extra_msa: int | None = None,
               seed: int = 0, num_recycle: int | None = None,
               source: str = 'features') -> dict[str, np.ndarray]:
  """The model's batch of raw features: AlphaFold's eval processing (MSA clusters, extra
  sequences, one slice per iteration) with `config`'s sizes, or those given, then only the
  features the network reads."""
  from jaxfold.data import processing  # pylint: disable=import-outside-toplevel
  changes = {}
  if max_msa_clusters is not None:
    changes['data.eval.max_msa_clusters'] = max_msa_clusters
  if max_extra_msa is not None:
    changes['data.common.max_extra_msa'] = max_extra_msa
  data = config_lib.replace(config, changes).data
  num_recycle = config.model.num_recycle if num_recycle is None else num_recycle
  batch = processing.process_features(raw, data, mode='eval', seed=seed,
                                      num_recycle=num_recycle, source=source)
  return model_features(batch, config.model, source)  # labels, BERT targets, ... stay out


def read_batch(path: str | os.PathLike, config: config_lib.AlphaFoldConfig | None = None,
               layout: str = 'alphafold') -> dict[str, np.ndarray]:
  """A processed batch saved with np.savez, in AlphaFold's layout (leading recycle axis) or
  OpenFold's (recycling axis last), in AlphaFold's: with `config`, the features its network
  reads (checked), else every array of the file."""
  source = pathlib.Path(path)
  if not source.is_file():
    raise FileNotFoundError(f'{source}: no such file')
  try:
    with np.load(source, allow_pickle=False) as data:
      batch = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile / pickle / format errors: all mean an unreadable batch
    raise JaxfoldError(f'{source}: not a readable .npz batch ({type(e).__name__}: {e})') from e
  if layout == 'openfold':
    from jaxfold.convert import openfold_batch  # pylint: disable=import-outside-toplevel
    batch = openfold_batch.from_openfold(batch, str(source))
  return batch if config is None else model_features(batch, config.model, str(source))


def batch_recycling(batch: Mapping[str, np.ndarray], asked: int | None = None,
                    source: str = 'batch') -> int:
  """The recycling iterations a processed batch holds (its slices less one, as AlphaFold
  runs it); `asked` must agree: never a silent clamp."""
  slices = batch['aatype'].shape[0]
  if asked is not None and asked != slices - 1:
    raise JaxfoldError(f'{source}: holds {slices} recycling slices, so {slices - 1} recycling '
                       f'iterations; --num-recycle {asked} disagrees (omit it, or make a batch '
                       f'with {asked + 1} slices)')
  return slices - 1


# ---------------------------------------------------------------------------------------------
# Prediction.
# ---------------------------------------------------------------------------------------------

def predict(model: Model, batch: Mapping[str, np.ndarray], *,
            global_config: GlobalConfig = DEFAULT_GLOBAL_CONFIG,
            save_representations: bool = False, save_logits: bool = False,
            mesh: Mesh | None = None, compiled: Any = None,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
  """The model's outputs (numpy) on `batch`, one iteration per slice of it.

  global_config: kernels, chunking and dtype (default: `jaxfold predict`'s). mesh: split
  the residues over devices (`prediction_mesh`). compiled: a program already compiled for
  these shapes (`jit_prediction(...).lower(...).compile()`, as `--budget` makes), else it is
  compiled here. progress: told how long compiling and running took.
  """
  num_recycle = batch_recycling(batch)
  if compiled is None:
    clock = time.perf_counter()
    program = jit_prediction(prediction_fn(AlphaFold(model.config.model, global_config),
                                           num_recycle, save_representations, save_logits),
                             mesh)
    compiled = program.lower(model.params, batch).compile()
    progress(f'compiled in {time.perf_counter() - clock:.1f} s')
  clock = time.perf_counter()
  outputs = jax.tree.map(np.asarray, compiled(model.params, batch))
  progress(f'predicted in {time.perf_counter() - clock:.1f} s ({num_recycle + 1} iterations)')
  return outputs


def write(output_dir: str | os.PathLike, name: str, batch: Mapping[str, np.ndarray],
          outputs: Mapping[str, Any], *, save_representations: bool = False,
          overwrite: bool = False) -> dict[str, pathlib.Path]:
  """What `jaxfold predict` writes (`prediction_outputs.write_prediction`), all or nothing."""
  from jaxfold import prediction_outputs  # pylint: disable=import-outside-toplevel
  return prediction_outputs.write_prediction(
      output_dir, name, {key: value[0] for key, value in batch.items()}, outputs,
      save_representations=save_representations, overwrite=overwrite)
