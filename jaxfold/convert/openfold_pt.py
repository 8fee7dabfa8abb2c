"""OpenFold's PyTorch weight files (`.pt` state dicts, Lightning `.ckpt`), read and written.

What OpenFold leaves on disk, and where the weights are inside:

  a plain `.pt`          {key: tensor}, `model.state_dict()` (OpenFold's released weights are
                         this, with the EMA already applied);
  a Lightning `.ckpt`    {'state_dict': {'model.<key>': tensor}, 'ema': {'params': {<key>:
                         tensor}, 'decay': float}, 'optimizer_states': ..., ...}: the training
                         weights under 'state_dict', the exponential moving average of them
                         (Jumper et al. (2021) Suppl. 1.11.7, decay 0.999) under 'ema';
  a DeepSpeed / DDP file keys with a further 'module.' prefix, or the weights under 'module'.

`read_openfold` finds the weights, strips the wrapper prefixes, renames OpenFold v1 keys and
returns numpy float32 arrays under OpenFold's key names; the mapping to jaxfold's tree is
`openfold_keys`'.
`write_openfold` writes the plain `.pt` that `AlphaFold.load_state_dict(..., strict=True)`
takes. torch is an optional dependency (`jaxfold[torch]`), imported only when a file is read
or written.
"""

from collections.abc import Mapping
import dataclasses
import io
import os
import pathlib
import pickle
import re
from typing import Any

import numpy as np

from jaxfold.common.atomic_file import atomic_write
from jaxfold.common.errors import JaxfoldError
from jaxfold.convert import openfold_keys

SUFFIXES = ('.pt', '.pth', '.ckpt')
INSTALL_HINT = "pip install 'jaxfold[torch]'"

# Containers of weights inside a file, tried in this order (the EMA first when it is chosen).
_EMA = ('ema', 'params')
_TRAINED = (('state_dict',), ('module',))
# float16/bfloat16 (DeepSpeed's mixed precision) widen to float32 exactly; anything else would
# be rounded or is not a weight.
_WIDENED = ('torch.float16', 'torch.bfloat16')


class TorchMissingError(JaxfoldError):
  """An OpenFold file was to be read or written, and torch is not installed."""


@dataclasses.dataclass(frozen=True)
class OpenFoldFile:
  """Where in an OpenFold file its weights were found.

  Attributes:
    path: the file read.
    container: the weights' place in the file: '' for a plain state dict, 'state_dict',
      'ema/params' or 'module'.
    ema: whether the weights read are the exponential moving average.
    has_ema: whether the file holds EMA weights at all.
    widened: how many float16/bfloat16 tensors were widened to float32 (exactly).
  """
  path: str
  container: str
  ema: bool
  has_ema: bool
  widened: int


def is_openfold_path(path: str | os.PathLike) -> bool:
  """Whether `path` names an OpenFold weight file, by its suffix."""
  return pathlib.Path(path).suffix.lower() in SUFFIXES


def read_openfold(path: str | os.PathLike, *, ema: bool | None = None,
                  trusted: bool = False) -> tuple[dict[str, np.ndarray], OpenFoldFile]:
  """Reads an OpenFold `.pt` or Lightning `.ckpt` as {OpenFold key: float32 array}.

  Args:
    path: the file.
    ema: True reads the EMA weights (an error if there are none), False the trained weights
      (an error if the file holds only EMA weights), None the EMA weights when present.
    trusted: unpickle any Python object the file holds. By default torch.load runs with
      weights_only=True, which refuses everything but tensors and plain containers and so
      cannot run code hidden in the file; pass True only for a file from a trusted source.

  Returns:
    (state_dict, info): keys as OpenFold's `AlphaFold.state_dict()` names them today (the
    'model.' and 'module.' wrapper prefixes removed, OpenFold v1 names made v2), values
    float32 numpy arrays.

  Raises:
    TorchMissingError: torch is not installed.
    FileNotFoundError: no file at `path`.
    ValueError: the file is truncated or damaged, holds objects a weights-only load refuses,
      holds no OpenFold weights, lacks the weights `ema` asks for, holds a value that is not
      a floating-point tensor, or two of its keys name the same tensor.
  """
  torch = _import_torch(path)
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no such file (expected an OpenFold .pt or .ckpt)')
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=not trusted)
  except Exception as error:  # torch raises RuntimeError, KeyError, EOFError, ... on damage
    refused = re.search(r'GLOBAL (\S+)', str(error))
    if isinstance(error, pickle.UnpicklingError) and refused:
      raise ValueError(f'{path}: holds Python objects besides tensors ({refused.group(1)}), '
                       f'which a weights-only load refuses; if you trust its source, read it '
                       f'with trusted=True (jaxfold convert --trust-pickle)') from error
    raise ValueError(f'{path}: not a readable PyTorch file, truncated or damaged '
                     f'({type(error).__name__}: {_first_line(error)})') from error
  weights, container, has_ema = _find_weights(loaded, ema, path, torch)
  arrays, widened = {}, 0
  source = str(path)
  named = openfold_keys.v2_names(openfold_keys.strip_prefixes(weights, source), source)
  for key, value in named.items():
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
      kind = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
      raise ValueError(f'{path}: {container or "state dict"} entry {key!r} is {kind}, '
                       f'not a floating-point tensor')
    if value.dtype != torch.float32:
      if str(value.dtype) not in _WIDENED:
        raise ValueError(f'{path}: tensor {key!r} is {value.dtype}; OpenFold weights are '
                         f'float32 (float16 and bfloat16 are widened exactly)')
      value, widened = value.float(), widened + 1
    arrays[key] = value.detach().contiguous().numpy()
  return arrays, OpenFoldFile(path=str(path), container=container,
                              ema=container == '/'.join(_EMA), has_ema=has_ema,
                              widened=widened)


def write_openfold(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes {OpenFold key: array} as a plain `.pt` state dict of float32 tensors, atomically.

  The keys are written in the order given (OpenFold's module order when they come from
  `openfold_keys.to_openfold`). float16 and bfloat16 arrays are widened to float32, exactly;
  float32 arrays are written bit for bit. An existing file at `path` is replaced only once the
  new one is complete.

  Raises:
    TorchMissingError: torch is not installed.
    ValueError: the state dict is empty, or a value is not a floating-point array.
  """
  torch = _import_torch(path)
  path = pathlib.Path(path)
  if not state_dict:
    raise ValueError(f'{path}: the state dict to write holds no tensors')
  tensors = {}
  for key, value in state_dict.items():
    array = np.asarray(value)
    if array.dtype.kind != 'f' and array.dtype.name != 'bfloat16':
      raise ValueError(f'{path}: tensor {key!r} is {array.dtype}, not floating point')
    if array.dtype.itemsize > 4:
      raise ValueError(f'{path}: tensor {key!r} is {array.dtype}; OpenFold weights are float32 '
                       f'and it would be rounded')
    tensors[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
  # Serialised in memory, then written by Python: a full disk is then an OSError naming the
  # file, where torch's own writer reports an internal "PytorchStreamWriter failed" message.
  buffer = io.BytesIO()
  torch.save(tensors, buffer)
  with atomic_write(path) as file:
    file.write(buffer.getbuffer())


def _import_torch(path: str | os.PathLike):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise TorchMissingError(f'{path}: reading or writing OpenFold weights needs PyTorch, which '
                            f'is not installed: {INSTALL_HINT}') from error
  return torch


def _find_weights(loaded: Any, ema: bool | None, path: pathlib.Path,
                  torch) -> tuple[Mapping[str, Any], str, bool]:
  """(weights, container, has_ema) of a loaded file, as `ema` asks."""
  if not isinstance(loaded, Mapping):
    raise ValueError(f'{path}: holds a {type(loaded).__name__}, not a state dict or checkpoint')
  if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
    if ema:
      raise ValueError(f'{path}: a plain state dict has no separate EMA weights; read it '
                       f'without --ema')
    return loaded, '', False
  ema_weights = loaded.get(_EMA[0])
  ema_weights = ema_weights.get(_EMA[1]) if isinstance(ema_weights, Mapping) else None
  has_ema = isinstance(ema_weights, Mapping) and bool(ema_weights)
  trained = next(((name, loaded[name]) for (name,) in _TRAINED
                  if isinstance(loaded.get(name), Mapping) and loaded[name]), None)
  if ema or (ema is None and has_ema):
    if not has_ema:
      raise ValueError(f'{path}: holds no EMA weights (no {_EMA[0]!r} -> {_EMA[1]!r}); read '
                       f'the trained weights with --no-ema')
    return ema_weights, '/'.join(_EMA), True
  if trained is None:
    found = ', '.join(repr(key) for key in list(loaded)[:8])
    raise ValueError(f'{path}: no OpenFold weights found: neither a state dict of tensors nor '
                     + ('only EMA weights, and --no-ema was given' if has_ema else
                        f"a checkpoint with 'state_dict' or 'ema' (top-level keys: {found})"))
  return trained[1], trained[0], has_ema


def _first_line(error: Exception) -> str:
  return (str(error).splitlines() or [''])[0]
