"""Reading and writing parameters in whichever format a path names.

A path ending in '.npz' is DeepMind AlphaFold's parameter file (`alphafold_npz`); one ending
in '.pt', '.pth' or '.ckpt' is OpenFold's PyTorch file (`openfold_pt`, its keys mapped by
`openfold_keys`); a directory is a jaxfold checkpoint (`checkpoint`). DESIGN.md's
`jaxfold convert SRC DST` uses the same rule. Only a jaxfold checkpoint records its preset;
the other two need the model configuration to be named.
"""

from collections.abc import Mapping
import os
import pathlib
from typing import Any

from jaxfold.convert import alphafold_npz
from jaxfold.convert import checkpoint
from jaxfold.convert import openfold_keys
from jaxfold.convert import openfold_pt
from jaxfold.model import config as config_lib

_ACCEPTED = ("an AlphaFold '.npz' parameter file, an OpenFold '.pt'/'.ckpt' file or a jaxfold "
             "checkpoint directory")


def load_params(path: str | os.PathLike,
                expected: Mapping[str, tuple[int, ...]] | None = None, *,
                schema_name: str = 'the expected parameters',
                model_config: config_lib.ModelConfig | None = None, ema: bool | None = None,
                trusted: bool = False, finite: bool = True) -> tuple[dict, str | None]:
  """Reads parameters from an AlphaFold .npz, an OpenFold file or a jaxfold checkpoint.

  Args:
    path: a '.npz' file, a '.pt'/'.pth'/'.ckpt' file or a checkpoint directory.
    expected: {AlphaFold key: shape} the parameters must match exactly; None accepts any.
    schema_name: names `expected` (or `model_config`) in error messages.
    model_config: the network an OpenFold file belongs to (its keys are mapped through it);
      required for OpenFold files, unused otherwise.
    ema: for an OpenFold checkpoint, True/False reads the EMA/trained weights, None the EMA
      weights when present (see `openfold_pt.read_openfold`).
    trusted: let torch unpickle any object in an OpenFold file (only for trusted files).
    finite: refuse parameters holding NaN or inf (False reads them as they are, e.g. to
      convert bit for bit).

  Returns:
    (params, preset): the nested jaxfold tree of numpy arrays, and the checkpoint's preset
    (None for an .npz or OpenFold file, which do not record it).

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is none of the formats, is unreadable, or is an OpenFold file and
      `model_config` is None.
    SchemaError: the tensors differ from `expected` (or, for an OpenFold file, from
      `model_config`'s; the message then names a preset the keys fit, if one does).
    JaxfoldError: `finite`, and a parameter holds NaN or inf (the first such key is named).
    TorchMissingError: an OpenFold file, and torch is not installed.
  """
  path = pathlib.Path(path)
  if path.suffix.lower() == '.npz':
    params, preset = alphafold_npz.read_npz(path, expected, schema_name=schema_name), None
  elif openfold_pt.is_openfold_path(path):
    params, preset = _read_openfold(path, expected, schema_name, model_config, ema, trusted), None
  elif path.is_dir():
    params, document = checkpoint.read_checkpoint(path, expected, schema_name=schema_name)
    preset = document['preset']
  elif not os.path.lexists(path):
    raise FileNotFoundError(f'{path}: no such file or directory (expected {_ACCEPTED})')
  else:
    raise ValueError(f'{path}: not a parameter format read here; expected {_ACCEPTED}')
  if finite:
    alphafold_npz.check_finite(params, str(path))
  return params, preset


def checkpoint_preset(path: str | os.PathLike) -> str:
  """The preset a jaxfold checkpoint directory records, reading no parameters.

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is not a jaxfold checkpoint directory.
  """
  return checkpoint.read_document(path)['preset']


def checkpoint_config(path: str | os.PathLike) -> tuple[str, config_lib.AlphaFoldConfig]:
  """(preset, whole model configuration) a jaxfold checkpoint records (`checkpoint.read_config`)."""
  return checkpoint.read_config(path)


def records_config(path: str | os.PathLike) -> bool:
  """Whether weights saved at `path` keep the model configuration: a jaxfold checkpoint does;
  AlphaFold's .npz and OpenFold's files cannot."""
  path = pathlib.Path(path)
  return not (path.suffix.lower() == '.npz' or openfold_pt.is_openfold_path(path))


def save_params(tree: Mapping, path: str | os.PathLike, *, preset: str,
                metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
                model_config: config_lib.ModelConfig | None = None,
                config: config_lib.AlphaFoldConfig | None = None) -> None:
  """Writes parameters as an AlphaFold .npz, an OpenFold .pt or a jaxfold checkpoint, atomically.

  Args:
    tree: nested jaxfold parameters.
    path: ending in '.npz' writes AlphaFold's format, in '.pt'/'.pth'/'.ckpt' OpenFold's plain
      state dict (neither records `preset` or `metadata`); any other path becomes a jaxfold
      checkpoint directory.
    preset: the model preset, e.g. 'model_1_ptm'.
    metadata: JSON-serialisable facts kept in a checkpoint (e.g. the file it came from).
    overwrite: replace an existing file or jaxfold checkpoint at `path`.
    model_config: the network, for OpenFold's key names; default: `config`'s, else `preset`'s.
    config: the whole model configuration; a jaxfold checkpoint records it (the other formats
      cannot: a model that is not its preset's predicts from a jaxfold checkpoint only).

  Raises:
    FileExistsError: `path` exists and `overwrite` is False.
    ValueError: the tree cannot be written (see `write_npz`, `write_openfold`,
      `save_checkpoint`), or does not fit `model_config` (OpenFold).
    TorchMissingError: an OpenFold path, and torch is not installed.
  """
  path = pathlib.Path(path)
  if records_config(path):
    checkpoint.save_checkpoint(path, tree, preset=preset, metadata=metadata, overwrite=overwrite,
                               config=config)
    return
  if os.path.lexists(path) and not (overwrite and path.is_file()):
    raise FileExistsError(f'{path}: already exists; pass overwrite=True to replace it'
                          if not overwrite else f'{path}: already exists and is not a file')
  if not openfold_pt.is_openfold_path(path):
    alphafold_npz.write_npz(tree, path)
    return
  model_config = model_config or (config or config_lib.preset(preset)).model
  openfold_pt.write_openfold(openfold_keys.to_openfold(tree, model_config), path)


def _read_openfold(path: pathlib.Path, expected: Mapping[str, tuple[int, ...]] | None,
                   schema_name: str, model_config: config_lib.ModelConfig | None,
                   ema: bool | None, trusted: bool) -> dict:
  """An OpenFold file as a jaxfold tree (a misfit names the preset the keys fit)."""
  state_dict, _ = openfold_pt.read_openfold(path, ema=ema, trusted=trusted)
  if model_config is None:
    fits = openfold_keys.suggest_preset(state_dict)
    raise ValueError(f'{path}: an OpenFold file does not say which model it is; pass --preset'
                     + (f' (its keys fit {fits!r})' if fits else ''))
  tree = openfold_keys.from_openfold(state_dict, model_config, str(path))
  if expected is not None:
    alphafold_npz.check_schema(
        {key: value.shape for key, value in alphafold_npz.flat_keys(tree).items()}, expected,
        str(path), schema_name=schema_name)
  return tree
