"""DeepMind AlphaFold's released parameter files (`params_<preset>.npz`), read and written.

DeepMind's file is an uncompressed `np.savez` archive whose keys are Haiku's flattened names,
'alphafold/<module path>//<parameter name>' (e.g. 'alphafold/alphafold_iteration/evoformer/
evoformer_iteration/msa_transition/transition1//weights'). jaxfold's Flax tree is the same
module tree nested, without the leading 'alphafold' level (the Flax root module plays it), so
conversion is a re-nesting and never touches an array's bytes (DESIGN.md, "Parameter tree").

Parameter dtypes: AlphaFold's parameters are float32. jaxfold accepts float32, float16 and
bfloat16 tensors (the dtypes its model computes in) and never casts them: a tensor of any other
dtype (integers, float64, numpy's raw void type that a bfloat16 array turns into inside an
.npz) is a schema error. An .npz cannot hold bfloat16, so `write_npz` refuses it.
"""

import collections
from collections.abc import Mapping
import os
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common.atomic_file import atomic_write
from jaxfold.common.errors import JaxfoldError
from jaxfold.convert import haiku_tree

ROOT = 'alphafold'
SEPARATOR = '//'
PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(jnp.bfloat16))

# A fixed member timestamp (the earliest a zip can hold) makes the same tree give the same
# bytes every time; np.savez stamps each member with the time of writing.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}
_LISTED = 5  # names shown per kind of mismatch in a SchemaError


class SchemaError(JaxfoldError):
  """Parameters whose names, shapes or dtypes differ from the expected schema."""


def flat_keys(tree: Mapping) -> dict[str, np.ndarray | jax.Array]:
  """Flattens a jaxfold tree to AlphaFold's keys.

  Args:
    tree: nested jaxfold parameters, e.g. tree['alphafold_iteration']['evoformer'][...]
      [name]. Leaves are returned as they are (arrays, or jax.ShapeDtypeStruct for a schema).

  Returns:
    {'alphafold/<module path>//<name>': leaf}, sorted by key.
  """
  flat = {f'{path}{SEPARATOR}{name}': value
          for path, leaves in haiku_tree.to_haiku(tree, root=ROOT).items()
          for name, value in leaves.items()}
  return dict(sorted(flat.items()))


def unflatten(flat: Mapping[str, np.ndarray | jax.Array], source: str = 'parameters') -> dict:
  """Inverse of `flat_keys`: nests {'alphafold/a/b//name': x} as {'a': {'b': {'name': x}}}.

  Args:
    flat: AlphaFold-keyed parameters.
    source: names the parameters' origin in error messages (e.g. a file path).

  Raises:
    ValueError: a key is not 'alphafold/<module path>//<name>', or a parameter's name is also
      a submodule's.
  """
  _check_key_format(flat, source)
  haiku: dict[str, dict] = {}
  for key, value in flat.items():
    path, name = key.split(SEPARATOR)
    haiku.setdefault(path, {})[name] = value
  try:
    return haiku_tree.from_haiku(haiku, root=ROOT)
  except ValueError as error:
    raise ValueError(f'{source}: {error}') from error


def check_schema(flat_shapes: Mapping[str, tuple[int, ...]],
                 expected: Mapping[str, tuple[int, ...]], source: str, *,
                 flat_dtypes: Mapping[str, np.dtype] | None = None,
                 schema_name: str = 'the expected parameters') -> None:
  """Compares parameter names and shapes (and dtypes) with a schema, reporting every mismatch.

  Args:
    flat_shapes: {AlphaFold key: shape} of the parameters found.
    expected: {AlphaFold key: shape} required, e.g. a preset's manifest (lists are accepted).
    source: names the parameters' origin (a file path) at the start of the message.
    flat_dtypes: {AlphaFold key: dtype}; every dtype must be one of `PARAM_DTYPES`.
    schema_name: what `expected` is, e.g. "preset 'model_1_ptm'".

  Raises:
    SchemaError: one line naming the counts and the first few missing, unexpected and
      misshaped keys (and those of an unsupported dtype).
  """
  found = {key: tuple(int(d) for d in shape) for key, shape in flat_shapes.items()}
  wanted = {key: tuple(int(d) for d in shape) for key, shape in expected.items()}
  missing = sorted(wanted.keys() - found.keys())
  unexpected = sorted(found.keys() - wanted.keys())
  misshaped = [f'{key}: got {found[key]}, expected {wanted[key]}'
               for key in sorted(found.keys() & wanted.keys()) if found[key] != wanted[key]]
  bad_dtype = [f'{key}: {np.dtype(dtype)}' for key, dtype in sorted((flat_dtypes or {}).items())
               if np.dtype(dtype) not in PARAM_DTYPES]
  other_dtype = 'with a dtype other than ' + '/'.join(dtype.name for dtype in PARAM_DTYPES)
  problems = [f'{len(names)} {kind} ({_listed(names, separator)})'
              for kind, names, separator in (('missing', missing, ', '),
                                             ('unexpected', unexpected, ', '),
                                             ('misshaped', misshaped, '; '),
                                             (other_dtype, bad_dtype, '; '))
              if names]
  if problems:
    raise SchemaError(f'{source}: does not match {schema_name} ({len(wanted)} tensors): '
                      + ', '.join(problems))


def first_non_finite(tree: Mapping) -> tuple[str, int] | None:
  """(AlphaFold key, count) of the first parameter holding NaN or inf, or None."""
  for key, value in flat_keys(tree).items():
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.inexact):
      bad = int(value.size - np.count_nonzero(np.isfinite(value)))
      if bad:
        return key, bad
  return None


def check_finite(tree: Mapping, source: str) -> None:
  """Raises JaxfoldError naming `source` and the first parameter holding NaN or inf: a
  damaged file or a diverged run, caught before any forward pass uses it."""
  found = first_non_finite(tree)
  if found is not None:
    raise JaxfoldError(f'{source}: parameter {found[0]} holds {found[1]:,} non-finite values '
                       '(NaN or inf); the weights are damaged or come from a diverged run')


def read_npz(path: str | os.PathLike, expected: Mapping[str, tuple[int, ...]] | None = None,
             source_label: str | None = None, *,
             schema_name: str = 'the expected parameters') -> dict:
  """Reads an AlphaFold .npz into a jaxfold tree, checking every tensor before reading any.

  The names, shapes and dtypes come from the archive's directory and .npy headers, so a file
  that does not fit `expected` fails without its arrays being read.

  Args:
    path: an AlphaFold parameter file, e.g. params_model_1_ptm.npz.
    expected: {AlphaFold key: shape} the file must hold exactly; None accepts any names.
    source_label: names the file in error messages (default: the path).
    schema_name: names `expected` in error messages.

  Returns:
    The nested jaxfold tree of numpy arrays, bytes as stored in the file.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not a readable .npz (not a zip, truncated, damaged, a member that is not an
      .npy array), or keys not of the form 'alphafold/<module path>//<name>'.
    SchemaError: the tensors differ from `expected` or have an unsupported dtype.
  """
  path = pathlib.Path(path)
  source = source_label or str(path)
  if not path.exists():
    raise FileNotFoundError(f'{source}: no such file (expected an AlphaFold .npz parameter file)')
  if path.is_dir():
    raise ValueError(f'{source}: is a directory, not an AlphaFold .npz parameter file')
  headers = _read_npz(path, source, _member_header)
  _check_key_format(headers, source)
  shapes = {key: shape for key, (shape, _) in headers.items()}
  # With no schema given, the file is its own: only the dtypes can then be wrong.
  check_schema(shapes, shapes if expected is None else expected, source,
               flat_dtypes={key: dtype for key, (_, dtype) in headers.items()},
               schema_name=schema_name)
  return unflatten(_read_npz(path, source, _member_array), source)


def host_arrays(tree: Mapping, source: str) -> dict[str, np.ndarray]:
  """The tree's arrays as AlphaFold-keyed numpy arrays on the host, ready to be written.

  Args:
    tree: nested jaxfold parameters (numpy or jax arrays).
    source: names the destination in error messages.

  Raises:
    ValueError: the tree is empty, a leaf is not an array, or a key is not an AlphaFold name.
    SchemaError: a tensor's dtype is not one of `PARAM_DTYPES`.
  """
  flat = flat_keys(tree)
  if not flat:
    raise ValueError(f'{source}: the parameter tree holds no arrays')
  _check_key_format(flat, source)
  not_arrays = [f'{key}: {type(value).__name__}' for key, value in flat.items()
                if not isinstance(value, (np.ndarray, jax.Array))]
  if not_arrays:
    raise ValueError(f'{source}: {len(not_arrays)} parameter(s) are not arrays: '
                     f'{_listed(not_arrays, "; ")}')
  arrays = {key: np.asarray(jax.device_get(value)) for key, value in flat.items()}
  shapes = {key: array.shape for key, array in arrays.items()}
  check_schema(shapes, shapes, source, flat_dtypes={key: a.dtype for key, a in arrays.items()},
               schema_name='a jaxfold parameter tree')
  return arrays


def write_npz(tree: Mapping, path: str | os.PathLike) -> None:
  """Writes a jaxfold tree as an AlphaFold .npz, atomically.

  The archive is what np.savez writes (uncompressed zip of .npy members, zip64 headers), with
  keys sorted and a fixed member timestamp, so equal trees give byte-identical files. An
  existing file at `path` is replaced only once the new one is complete.

  Args:
    tree: nested jaxfold parameters (numpy or jax arrays of a dtype in `PARAM_DTYPES` other
      than bfloat16); they are written as stored, never cast.
    path: the .npz file to write.

  Raises:
    ValueError: as `host_arrays`, or a tensor is bfloat16 (an .npz cannot hold it).
  """
  path = pathlib.Path(path)
  arrays = host_arrays(tree, str(path))
  bfloat16 = [key for key, array in arrays.items() if array.dtype == jnp.bfloat16]
  if bfloat16:
    raise ValueError(f'{path}: {len(bfloat16)} tensors are bfloat16, which an .npz cannot hold '
                     f'(numpy reads it back as raw bytes); cast them to float32 or save a jaxfold '
                     f'checkpoint: {_listed(bfloat16)}')
  with atomic_write(path) as file:
    with zipfile.ZipFile(file, mode='w', compression=zipfile.ZIP_STORED,
                         allowZip64=True) as archive:
      for key, array in arrays.items():
        member = zipfile.ZipInfo(key + '.npy', date_time=_ZIP_DATE_TIME)
        # np.savez forces zip64 headers so members over 4 GiB work (numpy gh-10776).
        with archive.open(member, 'w', force_zip64=True) as stream:
          np.lib.format.write_array(stream, array, allow_pickle=False)


def _listed(names: list[str], separator: str = ', ') -> str:
  """The first few names, and how many more there are."""
  more = [f'... {len(names) - _LISTED} more'] if len(names) > _LISTED else []
  return separator.join(names[:_LISTED] + more)


def _check_key_format(flat: Mapping[str, object], source: str) -> None:
  """Every key must be 'alphafold/<module path>//<name>' with no empty part."""
  def well_formed(key: str) -> bool:
    parts = key.split(SEPARATOR)
    if len(parts) != 2 or not parts[1] or '/' in parts[1]:
      return False
    modules = parts[0].split('/')
    return modules[0] == ROOT and all(modules)

  bad = [repr(key) for key in flat if not well_formed(key)]
  if bad:
    raise ValueError(f"{source}: {len(bad)} key(s) are not AlphaFold parameter names "
                     f"'{ROOT}/<module path>{SEPARATOR}<name>': {_listed(bad)}")


def _member_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo):
  """Shape and dtype from an .npy member's header, without reading its data."""
  with archive.open(member) as stream:
    version = np.lib.format.read_magic(stream)
    if version not in _NPY_HEADER_READERS:
      raise ValueError(f'.npy format version {version} is not one of {sorted(_NPY_HEADER_READERS)}')
    shape, _, dtype = _NPY_HEADER_READERS[version](stream)
  return tuple(shape), dtype


def _member_array(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> np.ndarray:
  with archive.open(member) as stream:
    array = np.lib.format.read_array(stream, allow_pickle=False)
    # Reading to the member's end makes zipfile check its CRC-32: a damaged byte fails here.
    if stream.read(1):
      raise ValueError('bytes follow the array data')
  return array


# What zipfile and numpy raise on a file that is not a zip, is cut short, or is damaged.
_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError)


def _read_npz(path: pathlib.Path, source: str, read_member) -> dict:
  """Applies `read_member` to every .npy member, turning a read failure into one ValueError.

  np.load is lazy (it reads a member only when indexed); reading every member here, each
  inside its own try, catches truncated and damaged files and names the member.
  """
  try:
    archive = zipfile.ZipFile(path)
  except PermissionError:
    raise
  except _READ_ERRORS as error:
    raise ValueError(f'{source}: not a readable .npz file ({type(error).__name__}: {error})'
                     ) from error
  with archive:
    members = archive.infolist()
    counts = collections.Counter(member.filename for member in members)
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
      raise ValueError(f'{source}: the archive holds several members named {_listed(repeated)}')
    not_npy = sorted(name for name in counts if not name.endswith('.npy'))
    if not_npy:
      raise ValueError(f'{source}: members are not .npy arrays: {_listed(not_npy)}')
    read = {}
    for member in members:
      try:
        read[member.filename[:-len('.npy')]] = read_member(archive, member)
      except PermissionError:
        raise
      except _READ_ERRORS as error:
        raise ValueError(f'{source}: cannot read member {member.filename} '
                         f'({type(error).__name__}: {error}); the file is truncated or damaged, '
                         f'or not an AlphaFold .npz') from error
    return read
