"""Reading and writing parameters in whichever format a path names.

A path ending in '.npz' is DeepMind AlphaFold's parameter file (`alphafold_npz`); a directory
is a jaxfold checkpoint (`checkpoint`). DESIGN.md's `jaxfold convert SRC DST` uses the same
rule; OpenFold's '.pt'/'.ckpt' files are converted elsewhere and refused here.
"""

from collections.abc import Mapping
import os
import pathlib
from typing import Any

from jaxfold.convert import alphafold_npz
from jaxfold.convert import checkpoint

_ACCEPTED = "an AlphaFold '.npz' parameter file or a jaxfold checkpoint directory"
_OPENFOLD_SUFFIXES = ('.pt', '.pth', '.ckpt')


def load_params(path: str | os.PathLike,
                expected: Mapping[str, tuple[int, ...]] | None = None, *,
                schema_name: str = 'the expected parameters') -> tuple[dict, str | None]:
  """Reads parameters from an AlphaFold .npz or a jaxfold checkpoint directory.

  Args:
    path: a '.npz' file or a checkpoint directory.
    expected: {AlphaFold key: shape} the parameters must match exactly; None accepts any.
    schema_name: names `expected` in error messages.

  Returns:
    (params, preset): the nested jaxfold tree of numpy arrays, and the checkpoint's preset
    (None for an .npz, which does not record it).

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is neither format, or is unreadable (see `read_npz`, `read_checkpoint`).
    SchemaError: the tensors differ from `expected`.
  """
  path = pathlib.Path(path)
  if path.suffix.lower() == '.npz':
    return alphafold_npz.read_npz(path, expected, schema_name=schema_name), None
  if path.is_dir():
    params, document = checkpoint.read_checkpoint(path, expected, schema_name=schema_name)
    return params, document['preset']
  if not os.path.lexists(path):
    raise FileNotFoundError(f'{path}: no such file or directory (expected {_ACCEPTED})')
  raise ValueError(f'{path}: not a parameter format read here; expected {_ACCEPTED}')


def checkpoint_preset(path: str | os.PathLike) -> str:
  """The preset a jaxfold checkpoint directory records, reading no parameters.

  Raises:
    FileNotFoundError: nothing at `path`.
    ValueError: `path` is not a jaxfold checkpoint directory.
  """
  return checkpoint.read_document(path)['preset']


def save_params(tree: Mapping, path: str | os.PathLike, *, preset: str,
                metadata: Mapping[str, Any] | None = None, overwrite: bool = False) -> None:
  """Writes parameters as an AlphaFold .npz or a jaxfold checkpoint directory, atomically.

  Args:
    tree: nested jaxfold parameters.
    path: ending in '.npz' writes AlphaFold's format (which cannot record `preset` or
      `metadata`); any other path becomes a jaxfold checkpoint directory.
    preset: the model preset, e.g. 'model_1_ptm'.
    metadata: JSON-serialisable facts kept in a checkpoint (e.g. the file it came from).
    overwrite: replace an existing .npz file or jaxfold checkpoint at `path`.

  Raises:
    FileExistsError: `path` exists and `overwrite` is False.
    ValueError: `path` names an OpenFold file, or the tree cannot be written (see
      `write_npz`, `save_checkpoint`).
  """
  path = pathlib.Path(path)
  suffix = path.suffix.lower()
  if suffix in _OPENFOLD_SUFFIXES:
    raise ValueError(f'{path}: {suffix} is an OpenFold format, not written here; write '
                     f'{_ACCEPTED}')
  if suffix != '.npz':
    checkpoint.save_checkpoint(path, tree, preset=preset, metadata=metadata, overwrite=overwrite)
    return
  if os.path.lexists(path) and not (overwrite and path.is_file()):
    raise FileExistsError(f'{path}: already exists; pass overwrite=True to replace it'
                          if not overwrite else f'{path}: already exists and is not a file')
  alphafold_npz.write_npz(tree, path)
