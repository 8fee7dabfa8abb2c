"""jaxfold's own parameter checkpoint: an orbax directory plus a JSON naming the preset.

Layout of a checkpoint directory:

  <path>/jaxfold.json   {'format': 'jaxfold', 'version': 1, 'preset': ..., 'tensors': ...,
                         'parameters': ..., 'metadata': {...caller's...}}
  <path>/params/        the parameter tree, saved by orbax's StandardCheckpointer

The tree is jaxfold's (DESIGN.md, "Parameter tree"), so its names are AlphaFold's and the same
schemas (`alphafold_npz.check_schema`) validate it. Arrays are saved as host numpy arrays, so a
checkpoint carries no device or sharding layout and reads back on any machine as numpy.
"""

from collections.abc import Mapping
import json
import os
import pathlib
import shutil
from typing import Any
import uuid

import numpy as np
import orbax.checkpoint as ocp

from jaxfold.convert import alphafold_npz

FORMAT = 'jaxfold'
VERSION = 1
METADATA_FILE = 'jaxfold.json'
PARAMS_DIR = 'params'


def is_checkpoint(path: str | os.PathLike) -> bool:
  """Whether `path` is a directory with a jaxfold checkpoint's JSON and params folder."""
  path = pathlib.Path(path)
  try:
    document = json.loads((path / METADATA_FILE).read_text())
  except (OSError, ValueError):
    return False
  return (isinstance(document, dict) and document.get('format') == FORMAT
          and (path / PARAMS_DIR).is_dir())


def save_checkpoint(path: str | os.PathLike, params: Mapping, *, preset: str,
                    metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
  """Saves a jaxfold parameter tree as a checkpoint directory, atomically.

  Everything is written into a temporary directory beside `path`, which is renamed to `path`
  only when complete; on any failure it is removed and `path` is left as it was.

  Args:
    path: the checkpoint directory to create.
    params: nested jaxfold parameters (numpy or jax arrays, float32/float16/bfloat16),
      saved as stored, never cast.
    preset: the model preset the parameters belong to, e.g. 'model_1_ptm'.
    metadata: more JSON-serialisable facts to keep with the checkpoint (e.g. its source).
    overwrite: replace an existing jaxfold checkpoint at `path` (never anything else).

  Raises:
    FileExistsError: `path` exists (and `overwrite` is False, or it is not a checkpoint).
    FileNotFoundError: the directory that would hold `path` does not exist.
    ValueError: an empty tree, a leaf that is not an array or has an unsupported dtype, keys
      that are not AlphaFold names, an empty preset, or metadata that JSON cannot hold.
  """
  path = pathlib.Path(path).absolute()
  if os.path.lexists(path) and not (overwrite and is_checkpoint(path)):
    reason = ('it is not a jaxfold checkpoint, so overwrite=True does not replace it'
              if overwrite else 'pass overwrite=True to replace it')
    raise FileExistsError(f'{path}: already exists; {reason}')
  if not isinstance(preset, str) or not preset:
    raise ValueError(f'{path}: preset must be a non-empty string, got {preset!r}')
  flat = alphafold_npz.host_arrays(params, str(path))
  document = {'format': FORMAT, 'version': VERSION, 'preset': preset, 'tensors': len(flat),
              'parameters': int(sum(array.size for array in flat.values())),
              'metadata': dict(metadata or {})}
  try:
    document_text = json.dumps(document, indent=2, sort_keys=True)
  except (TypeError, ValueError) as error:
    raise ValueError(f'{path}: metadata cannot be written as JSON ({error})') from error

  if not path.parent.is_dir():
    raise FileNotFoundError(f'{path}: its directory {path.parent} does not exist')
  temporary = _sibling(path, 'tmp')
  os.mkdir(temporary, 0o777)  # mode as for any new directory: the umask applies
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(temporary / PARAMS_DIR, alphafold_npz.unflatten(flat, str(path)))
      checkpointer.wait_until_finished()
    (temporary / METADATA_FILE).write_text(document_text + '\n')
    _move_into_place(temporary, path)
  except BaseException:
    shutil.rmtree(temporary, ignore_errors=True)
    raise


def read_checkpoint(path: str | os.PathLike,
                    expected: Mapping[str, tuple[int, ...]] | None = None, *,
                    schema_name: str = 'the expected parameters') -> tuple[dict, dict]:
  """Reads a jaxfold checkpoint, checking every tensor's name, shape and dtype before reading.

  Args:
    path: a directory written by `save_checkpoint`.
    expected: {AlphaFold key: shape} the checkpoint must hold exactly; None accepts any.
    schema_name: names `expected` in error messages.

  Returns:
    (params, document): the nested jaxfold tree of numpy arrays, and the checkpoint's JSON
    ('preset', 'version', 'tensors', 'parameters', and the caller's 'metadata').

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is not a jaxfold checkpoint directory, was written by a newer jaxfold,
      or its orbax data is damaged.
    SchemaError: the tensors differ from `expected` or have an unsupported dtype.
  """
  path = pathlib.Path(path).absolute()
  document = read_document(path)
  params_dir = path / PARAMS_DIR
  if not params_dir.is_dir():
    raise ValueError(f'{path}: damaged jaxfold checkpoint: no {PARAMS_DIR}/ directory')
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      stored = checkpointer.metadata(params_dir).item_metadata
      # orbax answers None, not an error, when its metadata files are missing or damaged.
      if stored is None:
        raise ValueError('orbax finds no parameter metadata')
      flat = alphafold_npz.flat_keys(stored.tree)
      shapes = {key: tuple(leaf.shape) for key, leaf in flat.items()}
      dtypes = {key: np.dtype(leaf.dtype) for key, leaf in flat.items()}
    except Exception as error:  # orbax raises many kinds on a damaged directory; report one.
      raise ValueError(f'{path}: damaged jaxfold checkpoint: cannot read its parameter '
                       f'metadata ({_one_line(error)})') from error
    # With no schema given, the checkpoint is its own: only the dtypes can then be wrong.
    alphafold_npz.check_schema(shapes, shapes if expected is None else expected, str(path),
                               flat_dtypes=dtypes, schema_name=schema_name)
    # Empty numpy targets (pages untouched until written) make orbax restore numpy arrays.
    target = alphafold_npz.unflatten(
        {key: np.empty(shapes[key], dtypes[key]) for key in flat}, str(path))
    try:
      restored = checkpointer.restore(params_dir, target)
    except Exception as error:  # as above: one clear error for any damage orbax meets
      raise ValueError(f'{path}: damaged jaxfold checkpoint: cannot restore the parameters '
                       f'({_one_line(error)})') from error
  params = alphafold_npz.unflatten(
      {key: np.asarray(value) for key, value in alphafold_npz.flat_keys(restored).items()},
      str(path))
  return params, document


def read_document(path: str | os.PathLike) -> dict:
  """The checkpoint's JSON (preset, version, counts, metadata), reading no parameters.

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is not a jaxfold checkpoint, or one written by a newer jaxfold.
  """
  path = pathlib.Path(path)
  if not os.path.lexists(path):
    raise FileNotFoundError(f'{path}: no such jaxfold checkpoint directory')
  if not path.is_dir():
    raise ValueError(f'{path}: is a file, not a jaxfold checkpoint directory')
  document_path = path / METADATA_FILE
  if not document_path.is_file():
    raise ValueError(f'{path}: not a jaxfold checkpoint (no {METADATA_FILE} inside)')
  try:
    document = json.loads(document_path.read_text())
  except (OSError, ValueError) as error:
    raise ValueError(f'{document_path}: unreadable checkpoint description ({error})') from error
  if not isinstance(document, dict) or document.get('format') != FORMAT:
    raise ValueError(f'{document_path}: not a jaxfold checkpoint description (format is not '
                     f'{FORMAT!r})')
  version = document.get('version')
  if not isinstance(version, int) or not 1 <= version <= VERSION:
    raise ValueError(f'{document_path}: checkpoint format version {version!r}; this jaxfold '
                     f'reads versions 1..{VERSION}')
  if not isinstance(document.get('preset'), str):
    raise ValueError(f'{document_path}: no preset name')
  return document


def _one_line(error: Exception) -> str:
  """An exception as `Type: message` on one line (tensorstore's messages span several)."""
  return f'{type(error).__name__}: ' + ' '.join(str(error).split())


def _sibling(path: pathlib.Path, kind: str) -> pathlib.Path:
  """A fresh hidden name beside `path`: same filesystem, so renames are atomic."""
  return path.with_name(f'.{path.name}.{uuid.uuid4().hex[:12]}.{kind}')


def _move_into_place(temporary: pathlib.Path, path: pathlib.Path) -> None:
  """Renames the finished directory to `path`, first moving aside a checkpoint it replaces.

  Replacing leaves `path` absent between two renames, but never half-written: a reader sees
  the old checkpoint, nothing, or the new one.
  """
  if not os.path.lexists(path):
    try:
      os.rename(temporary, path)
    except OSError as error:
      if os.path.lexists(path):  # another writer created it while this one was writing
        raise FileExistsError(f'{path}: appeared while the checkpoint was being written'
                              ) from error
      raise
    return
  old = _sibling(path, 'old')
  os.rename(path, old)
  try:
    os.rename(temporary, path)
  except BaseException:
    os.rename(old, path)
    raise
  shutil.rmtree(old)
