"""AlphaFold's raw feature dict (`features.pkl`), read without running code and checked.

A features.pkl is a pickle, and unpickling can call anything the file names. `read_features`
unpickles with a restricted `pickle.Unpickler` that admits only what AlphaFold's data pipeline
puts in one: numpy arrays, dtypes and scalars (under numpy 1's `numpy.core` names and numpy 2's
`numpy._core`), and `_codecs.encode`, with which pickle protocols 0-2 store bytes. Any other
global is refused; `trusted=True` loads with plain `pickle` instead.

`validate_features` then checks what the processing of Jumper et al. (2021) Suppl. 1.2.9
'Input features' (`jaxfold.data.processing`) reads of the raw features: keys, shapes, dtypes,
value ranges and finiteness. A damaged or hand-made file fails with one line naming the file,
the key and the problem, instead of failing inside the feature transforms or, worse, giving a
prediction of nonsense (an aatype of 5 columns reads as a chain of alanines).
"""

import codecs
import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import parsers

FeatureDict = dict[str, np.ndarray]

_NUMPY_PACKAGES = ('numpy.core', 'numpy._core')  # numpy 1's names, numpy 2's
# The callables numpy's pickles name, taken from numpy's own reductions (importing them by
# their numpy 1 names would warn under numpy 2).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # arrays, protocols 0-4
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # contiguous arrays, protocol 5
_SCALAR = np.float32(0).__reduce__()[0]  # numpy scalars
_ALLOWED_GLOBALS: Mapping[tuple[str, str], Any] = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('_codecs', 'encode'): codecs.encode,
    **{(f'{package}.multiarray', '_reconstruct'): _RECONSTRUCT for package in _NUMPY_PACKAGES},
    **{(f'{package}.multiarray', 'scalar'): _SCALAR for package in _NUMPY_PACKAGES},
    **{(f'{package}.numeric', '_frombuffer'): _FROMBUFFER for package in _NUMPY_PACKAGES},
}

NUM_AATYPES = len(rc.restypes_with_x)  # 21: aatype one-hot columns
NUM_TEMPLATE_AATYPES = len(rc.restypes_with_x_and_gap)  # 22
MAX_MSA_ID = max(rc.HHBLITS_AA_TO_ID.values())  # 21: the gap, in HHblits order
_INT32_MAX = np.iinfo(np.int32).max


class _FeaturesUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and plain containers only; any other global is refused."""

  def __init__(self, file, source: str):
    super().__init__(file)
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    allowed = _ALLOWED_GLOBALS.get((module, name))
    if allowed is None:
      raise JaxfoldError(
          f'{self._source}: refusing to load {module}.{name} from a pickle (a features.pkl '
          'holds only numpy arrays; pass --trust-pickle to load a file you trust)')
    return allowed


def read_features(path: str | os.PathLike, trusted: bool = False) -> FeatureDict:
  """The raw feature dict of the features.pkl at `path`, validated (`validate_features`).

  Only numpy arrays, dtypes and scalars are unpickled unless `trusted`, which loads any
  object (and so runs any code the file names). A missing file raises its OSError; anything
  else wrong raises JaxfoldError naming the file.
  """
  source = os.fspath(path)
  with open(path, 'rb') as file:
    try:
      features = pickle.load(file) if trusted else _FeaturesUnpickler(file, source).load()
    except JaxfoldError:
      raise
    # A damaged pickle fails in many ways (UnpicklingError, EOFError, ValueError, TypeError,
    # MemoryError for an absurd array size, ...): all mean an unreadable file.
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise JaxfoldError(f'{source}: not a readable features pickle ({type(e).__name__}: '
                         f'{parsers.excerpt(str(e))})') from e
  validate_features(features, source)
  return features


class _Checker:
  """Checks of one feature dict; each failure is a JaxfoldError '<path>: <key> <problem>'."""

  def __init__(self, features: Mapping[str, Any], path: str):
    self.features, self.path = features, path

  def fail(self, key: str, problem: str) -> JaxfoldError:
    return JaxfoldError(f'{self.path}: {key!r} {problem}')

  def array(self, key: str, kinds: str = 'biuf') -> np.ndarray:
    """The array under `key`, its dtype kind one of `kinds` (numpy's codes: b, i, u, f)."""
    if key not in self.features:
      raise JaxfoldError(f'{self.path}: missing raw feature {key!r}')
    value = self.features[key]
    if not isinstance(value, np.ndarray):
      kind = 'None' if value is None else f'a {type(value).__name__}'
      raise self.fail(key, f'is {kind}, not a numpy array')
    if value.dtype.kind not in kinds:
      raise self.fail(key, f'has dtype {value.dtype}; expected '
                      f'{"an integer" if kinds == "iu" else "a numeric"} dtype')
    return value

  def shaped(self, key: str, shape: tuple[int, ...], described: str,
             kinds: str = 'biuf') -> np.ndarray:
    value = self.array(key, kinds)
    if value.shape != shape:
      raise self.fail(key, f'has shape {value.shape}; expected {described} = {shape}')
    return value

  def integers(self, key: str, value: np.ndarray, low: int, high: int) -> None:
    """Every value a whole number in [low, high] (the float check comes first)."""
    whole = np.all(value == np.round(value)) if value.dtype.kind == 'f' else True
    if not whole or value.size and (value.min() < low or value.max() > high):
      raise self.fail(key, f'has values outside the whole numbers {low}..{high}')

  def count(self, key: str, expected: int, of_what: str) -> None:
    """A per-residue copy of a count (AlphaFold's seq_length, num_alignments): all `expected`."""
    value = self.array(key)
    if not value.size:
      raise self.fail(key, 'is empty')
    if not np.all(value == expected):
      shown = value.ravel()[np.argmax(value.ravel() != expected)]
      raise self.fail(key, f'says {shown}, but {of_what} is {expected}')


def _first_present(features: Mapping[str, Any], keys: tuple[str, ...]) -> str:
  return next((key for key in keys if key in features), keys[0])


def validate_features(features: Any, path: str | os.PathLike) -> None:
  """Raises JaxfoldError (naming `path`, the key and the problem) unless `features` is a raw
  feature dict AlphaFold's processing can use, L = N_res, N = N_seq, T = N_templ:
    aatype [L, 21] one-hot; residue_index, between_segment_residues [L] whole numbers;
    msa [N, L] integers in 0..21 (HHblits order, 21 = gap), N >= 1;
    deletion_matrix_int (or deletion_matrix) [N, L] >= 0;
    seq_length all L and num_alignments all N (AlphaFold stores one copy per residue);
    where any template_* key is present: template_aatype [T, L, 22],
      template_all_atom_positions [T, L, 37, 3], template_all_atom_masks (or OpenFold's
      template_all_atom_mask) [T, L, 37], template_sum_probs [T, 1], and if present
      template_domain_names and template_sequence [T];
    every floating-point array finite.
  """
  path = os.fspath(path)
  if not isinstance(features, dict):
    raise JaxfoldError(f'{path}: holds a {type(features).__name__}, not a dict of raw features')
  for key, value in features.items():
    if not isinstance(key, str):
      raise JaxfoldError(f'{path}: key {parsers.excerpt(repr(key), 40)} is not a feature name')
    if isinstance(value, np.ndarray) and value.dtype.kind in 'fc' and not np.isfinite(
        value).all():
      raise JaxfoldError(f'{path}: {key!r} has non-finite values (nan or inf)')
  check = _Checker(features, path)
  aatype = check.array('aatype')
  if aatype.ndim != 2 or aatype.shape[1] != NUM_AATYPES or not aatype.shape[0]:
    raise check.fail('aatype', f'has shape {aatype.shape}; expected (N_res, {NUM_AATYPES}) '
                     'one-hot with N_res >= 1')
  if not (np.isin(aatype, (0, 1)).all() and (aatype.sum(axis=1) == 1).all()):
    raise check.fail('aatype', f'is not one-hot (each row one 1 among {NUM_AATYPES} columns)')
  num_res = aatype.shape[0]
  for key in ('residue_index', 'between_segment_residues'):
    check.integers(key, check.shaped(key, (num_res,), '(N_res,)'), -_INT32_MAX, _INT32_MAX)
  msa = check.array('msa', 'iu')
  if msa.ndim != 2 or msa.shape[1] != num_res or not msa.shape[0]:
    raise check.fail('msa', f'has shape {msa.shape}; expected (N_seq, N_res = {num_res}) '
                     'with N_seq >= 1 (row 0 is the query)')
  check.integers('msa', msa, 0, MAX_MSA_ID)
  num_seq = msa.shape[0]
  deletions = _first_present(features, ('deletion_matrix_int', 'deletion_matrix'))
  check.integers(deletions, check.shaped(deletions, msa.shape, '(N_seq, N_res)'), 0,
                 _INT32_MAX)
  check.count('seq_length', num_res, 'the number of residues (aatype rows)')
  check.count('num_alignments', num_seq, 'the number of MSA rows')
  if any(key.startswith('template_') for key in features):
    _validate_templates(check, num_res)


def _validate_templates(check: _Checker, num_res: int) -> None:
  """The template features' shapes; T is template_aatype's first axis."""
  template_aatype = check.array('template_aatype')
  num_templates = template_aatype.shape[0] if template_aatype.ndim else 0
  expected = {
      'template_aatype': ((num_templates, num_res, NUM_TEMPLATE_AATYPES),
                          f'(N_templ, N_res, {NUM_TEMPLATE_AATYPES})'),
      'template_all_atom_positions': ((num_templates, num_res, rc.atom_type_num, 3),
                                      f'(N_templ, N_res, {rc.atom_type_num}, 3)'),
      _first_present(check.features, ('template_all_atom_masks', 'template_all_atom_mask')): (
          (num_templates, num_res, rc.atom_type_num), f'(N_templ, N_res, {rc.atom_type_num})'),
      'template_sum_probs': ((num_templates, 1), '(N_templ, 1)'),
  }
  for key, (shape, described) in expected.items():
    check.shaped(key, shape, described)
  for key in ('template_domain_names', 'template_sequence'):
    if key in check.features:
      value = check.array(key, 'OSU')
      if value.shape != (num_templates,):
        raise check.fail(key, f'has shape {value.shape}; expected (N_templ,) = '
                         f'({num_templates},)')
