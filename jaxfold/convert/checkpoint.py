"""jaxfold's own parameter checkpoint: an orbax directory plus a JSON naming the preset.

Layout of a checkpoint directory:

  <path>/jaxfold.json   {'format': 'jaxfold', 'version': 1, 'preset': ..., 'tensors': ...,
                         'parameters': ..., 'config': {...}, 'metadata': {...caller's...}}
  <path>/params/        the parameter tree, saved by orbax's StandardCheckpointer

'config' is the whole model configuration (`AlphaFoldConfig` as a dict) where it is not
the preset's own, e.g. a trained ablation; `read_config` gives it back, or the preset's.
The tree is jaxfold's (DESIGN.md, "Parameter tree"), so its names are AlphaFold's and the same
schemas (`alphafold_npz.check_schema`) validate it. Arrays are saved as host numpy arrays, so a
checkpoint carries no device or sharding layout and reads back on any machine as numpy.

`quiet_orbax` is here too: the training checkpoints (jaxfold.train.checkpoints) call it as well.
"""

from collections.abc import Mapping
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import sys
import traceback
from typing import Any
import uuid

import numpy as np
import orbax.checkpoint as ocp

from jaxfold.common.errors import JaxfoldError
from jaxfold.convert import alphafold_npz
from jaxfold.model import config as config_lib

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
                    metadata: Mapping[str, Any] | None = None, overwrite: bool = False,
                    config: config_lib.AlphaFoldConfig | None = None) -> None:
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
    config: the model's whole configuration, recorded where it differs from `preset`'s.

  Raises:
    FileExistsError: `path` exists (and `overwrite` is False, or it is not a checkpoint).
    FileNotFoundError: the directory that would hold `path` does not exist.
    JaxfoldError (a ValueError): an empty tree, a leaf that is not an array or has an
      unsupported dtype, keys that are not AlphaFold names, an empty preset, or metadata that
      JSON cannot hold.
  """
  path = pathlib.Path(path).absolute()
  if os.path.lexists(path) and not (overwrite and is_checkpoint(path)):
    reason = ('it is not a jaxfold checkpoint, so overwrite=True does not replace it'
              if overwrite else 'pass overwrite=True to replace it')
    raise FileExistsError(f'{path}: already exists; {reason}')
  if not isinstance(preset, str) or not preset:
    raise JaxfoldError(f'{path}: preset must be a non-empty string, got {preset!r}')
  flat = alphafold_npz.host_arrays(params, str(path))
  document = {'format': FORMAT, 'version': VERSION, 'preset': preset, 'tensors': len(flat),
              'parameters': int(sum(array.size for array in flat.values())),
              'metadata': dict(metadata or {})}
  if config is not None and config != _preset_config(preset):
    document['config'] = dataclasses.asdict(config)
  try:
    document_text = json.dumps(document, indent=2, sort_keys=True)
  except (TypeError, ValueError) as error:
    raise JaxfoldError(f'{path}: metadata cannot be written as JSON ({error})') from error

  if not path.parent.is_dir():
    raise FileNotFoundError(f'{path}: its directory {path.parent} does not exist')
  quiet_orbax()
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
    JaxfoldError: `path` is not a jaxfold checkpoint directory, was written by a newer
      jaxfold, or its orbax data is damaged.
    SchemaError: the tensors differ from `expected` or have an unsupported dtype.
  """
  quiet_orbax()
  path = pathlib.Path(path).absolute()
  document = read_document(path)
  params_dir = path / PARAMS_DIR
  if not params_dir.is_dir():
    raise JaxfoldError(f'{path}: damaged jaxfold checkpoint: no {PARAMS_DIR}/ directory')
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      stored = checkpointer.metadata(params_dir).item_metadata
      # orbax answers None, not an error, when its metadata files are missing or damaged.
      if stored is None:
        raise JaxfoldError('orbax finds no parameter metadata')
      flat = alphafold_npz.flat_keys(stored.tree)
      shapes = {key: tuple(leaf.shape) for key, leaf in flat.items()}
      dtypes = {key: np.dtype(leaf.dtype) for key, leaf in flat.items()}
    except Exception as error:  # orbax raises many kinds on a damaged directory; report one.
      raise JaxfoldError(f'{path}: damaged jaxfold checkpoint: cannot read its parameter '
                         f'metadata ({one_line(error)})') from error
    # With no schema given, the checkpoint is its own: only the dtypes can then be wrong.
    alphafold_npz.check_schema(shapes, shapes if expected is None else expected, str(path),
                               flat_dtypes=dtypes, schema_name=schema_name)
    # Empty numpy targets (pages untouched until written) make orbax restore numpy arrays.
    target = alphafold_npz.unflatten(
        {key: np.empty(shapes[key], dtypes[key]) for key in flat}, str(path))
    try:
      restored = checkpointer.restore(params_dir, target)
    except Exception as error:  # as above: one clear error for any damage orbax meets
      raise JaxfoldError(f'{path}: damaged jaxfold checkpoint: cannot restore the parameters '
                         f'({one_line(error)})') from error
  params = alphafold_npz.unflatten(
      {key: np.asarray(value) for key, value in alphafold_npz.flat_keys(restored).items()},
      str(path))
  return params, document


def read_config(path: str | os.PathLike) -> tuple[str, config_lib.AlphaFoldConfig]:
  """(preset, whole model configuration) of a checkpoint: the configuration it records, else
  its preset's. Reads no parameters.

  Raises:
    FileNotFoundError / JaxfoldError: as `read_document`; also a recorded configuration this
      jaxfold cannot build, or a preset it does not know, without a recorded configuration.
  """
  document = read_document(path)
  recorded = document.get('config')
  if recorded is None:
    config = _preset_config(document['preset'])
    if config is None:
      raise JaxfoldError(f'{path}: preset {document["preset"]!r} is not one this jaxfold knows, '
                         'and the checkpoint records no configuration')
    return document['preset'], config
  try:
    return document['preset'], config_lib.from_dict(config_lib.AlphaFoldConfig, recorded)
  except (TypeError, ValueError, AttributeError) as error:
    raise JaxfoldError(f'{path}: its recorded model configuration does not fit this jaxfold '
                       f'({error})') from error


def _preset_config(name: str) -> config_lib.AlphaFoldConfig | None:
  return config_lib.preset(name) if name in config_lib.PRESETS else None


def read_document(path: str | os.PathLike) -> dict:
  """The checkpoint's JSON (preset, version, counts, metadata), reading no parameters.

  Raises:
    FileNotFoundError: nothing at `path`.
    JaxfoldError: `path` is not a jaxfold checkpoint, or one written by a newer jaxfold.
  """
  path = pathlib.Path(path)
  if not os.path.lexists(path):
    raise FileNotFoundError(f'{path}: no such jaxfold checkpoint directory')
  if not path.is_dir():
    raise JaxfoldError(f'{path}: is a file, not a jaxfold checkpoint directory')
  document_path = path / METADATA_FILE
  if not document_path.is_file():
    raise JaxfoldError(f'{path}: not a jaxfold checkpoint (no {METADATA_FILE} inside)')
  try:
    document = json.loads(document_path.read_text())
  except (OSError, ValueError) as error:
    raise JaxfoldError(f'{document_path}: unreadable checkpoint description ({error})'
                       ) from error
  if not isinstance(document, dict) or document.get('format') != FORMAT:
    raise JaxfoldError(f'{document_path}: not a jaxfold checkpoint description (format is not '
                       f'{FORMAT!r})')
  version = document.get('version')
  if not isinstance(version, int) or not 1 <= version <= VERSION:
    raise JaxfoldError(f'{document_path}: checkpoint format version {version!r}; this jaxfold '
                       f'reads versions 1..{VERSION}')
  if not isinstance(document.get('preset'), str):
    raise JaxfoldError(f'{document_path}: no preset name')
  return document


def quiet_orbax() -> None:
  """Keeps orbax's background noise off stderr, so that a failure is told once, by jaxfold.

  Orbax logs each failed background write (absl, ERROR, with its traceback, from several of
  its threads) and then raises it to the caller, who reports it. And a failed read abandons
  the reads still in flight, in an event loop orbax then closes: those finishing later on
  tensorstore's threads find the loop closed (`RuntimeError: Event loop is closed`, printed
  as an unraisable exception), those that failed too are logged by asyncio when collected
  ('Future exception was never retrieved'), and those never finished raise when the
  interpreter closes them at exit (unraisable again): often hundreds of tracebacks. All are
  dropped here (jaxfold runs no asyncio code of its own: abandoned asyncio work is orbax's);
  every other log record and unraisable exception goes where it went before. Installs once;
  calling it again is cheap.
  """
  for name, noise in (('absl', _ORBAX_ERRORS), ('asyncio', _ABANDONED_FUTURES)):
    library = logging.getLogger(name)
    if noise not in library.filters:
      library.addFilter(noise)
  if not getattr(sys.unraisablehook, 'drops_abandoned_orbax_work', False):
    sys.unraisablehook = _drop_abandoned_orbax_work(sys.unraisablehook)


_ORBAX_SOURCE = f'{os.sep}orbax{os.sep}checkpoint{os.sep}'


class _OrbaxErrors(logging.Filter):
  """Drops orbax's ERROR records: each failure they describe reaches its caller as well."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR or _ORBAX_SOURCE not in record.pathname


class _AbandonedFutures(logging.Filter):
  """Drops asyncio's reports of futures and tasks collected unfinished or unread."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith('Task was destroyed but it is pending')
                or message.split('\n', 1)[0].endswith('exception was never retrieved'))


_ORBAX_ERRORS = _OrbaxErrors()
_ABANDONED_FUTURES = _AbandonedFutures()


def _drop_abandoned_orbax_work(previous: Any) -> Any:
  """An unraisable hook that drops what the work a failed orbax call abandoned raises (see
  `quiet_orbax`), passing everything else to `previous`."""

  def hook(unraisable: Any) -> None:
    error = unraisable.exc_value
    late_callback = (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'
                     and any(frame.name == 'call_soon_threadsafe'
                             for frame in traceback.extract_tb(unraisable.exc_traceback)))
    code = getattr(unraisable.object, 'cr_code', None)  # a coroutine closed unfinished
    closed_read = code is not None and _ORBAX_SOURCE in code.co_filename
    if not (late_callback or closed_read):
      previous(unraisable)

  hook.drops_abandoned_orbax_work = True
  return hook


def one_line(error: BaseException) -> str:
  """The innermost cause of `error` as `Type: message` on one line: orbax wraps tensorstore's
  error (which names the file and what is wrong with it) in one of its own that quotes a whole
  TensorStore spec, over many lines."""
  while error.__cause__ is not None:
    error = error.__cause__
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
