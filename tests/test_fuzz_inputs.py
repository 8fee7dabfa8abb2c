"""Every reader of user input, fed seeded mutations of the real files in ../shared/data.

Issue #22: bad input must end in one `JaxfoldError` line naming the file, never in another
exception (IndexError, ZeroDivisionError, ...) from deep inside a parser or the feature
processing. Each case takes a real file (FASTA, A3M, Stockholm, HHR, mmCIF, AlphaFold's
features.pkl), applies one to three mutations drawn from a seeded generator, and runs the
reader the command line runs. The result must be either a value that passes the readers' own
validation, or a JaxfoldError whose one-line message names the file.

Text mutations: truncation, byte flips, inserted garbage, an empty file, a huge line, latin-1
and UTF-16 bytes, CRLF line ends, lower case, unusual residue letters, swapped, deleted and
repeated lines, and a token replaced by a troublesome one ('nan', '?', 'loop_', ...). A pickle
is mutated as a dict (wrong dtypes, out-of-range values, None, inf, wrong shapes, missing keys,
Python objects for arrays) and re-pickled, or as bytes (truncated, flipped).

The fast tier runs a fixed set of seeds per reader; the slow tier (`-m slow`) ten times more.
Each case's failure message carries its seed and mutations, to replay it alone.
"""

import collections
import dataclasses
import pathlib
import pickle
from collections.abc import Callable

import numpy as np
import pytest

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import hhr, mmcif, msa_features, parsers, pipeline, processing, raw_features
from jaxfold.data import templates
from jaxfold.model.config import preset

Rng = np.random.Generator
_DATA_CONFIG = preset('model_1_ptm').data

# ---------------------------------------------------------------------------------------------
# Mutations of a text file's bytes.
# ---------------------------------------------------------------------------------------------

_NASTY_TOKENS = ('?', '.', 'nan', 'inf', '-inf', '1e39', '-1', '0', '9' * 30, "'", '"', ';',
                 'loop_', 'data_', '_atom_site.Cartn_x', '>', '#', '//', 'No 1', 'Q', 'T')
_ODD_LETTERS = b'BJOUZX*.0@-~'


def _lines(data: bytes) -> list[bytes]:
  return data.split(b'\n')


def _truncate(data: bytes, rng: Rng) -> bytes:
  return data[:rng.integers(0, len(data) + 1)]


def _flip_bytes(data: bytes, rng: Rng) -> bytes:
  if not data:
    return data
  out = bytearray(data)
  for position in rng.integers(0, len(out), rng.integers(1, 5)):
    out[position] = rng.integers(0, 256)
  return bytes(out)


def _insert_garbage(data: bytes, rng: Rng) -> bytes:
  position = rng.integers(0, len(data) + 1)
  return data[:position] + rng.bytes(int(rng.integers(1, 33))) + data[position:]


def _empty(data: bytes, rng: Rng) -> bytes:
  del data, rng
  return b''


def _huge_line(data: bytes, rng: Rng) -> bytes:
  """One line repeated to ~200 kB in place: a long row, name or field."""
  lines = _lines(data)
  i = rng.integers(0, len(lines))
  unit = lines[i] or b'A'
  lines[i] = unit * (200_000 // len(unit) + 1)
  return b'\n'.join(lines)


def _latin1(data: bytes, rng: Rng) -> bytes:
  """A latin-1 letter (one byte that is not UTF-8) inside the text."""
  position = rng.integers(0, len(data) + 1)
  return data[:position] + bytes([rng.choice([0xe9, 0xc5, 0xb5, 0xff])]) + data[position:]


def _utf16(data: bytes, rng: Rng) -> bytes:
  del rng
  return data.decode('latin-1').encode('utf-16')


def _crlf(data: bytes, rng: Rng) -> bytes:
  del rng
  return data.replace(b'\n', b'\r\n')


def _lowercase(data: bytes, rng: Rng) -> bytes:
  if rng.random() < 0.3:
    return data.lower()
  lines = _lines(data)
  for i in rng.integers(0, len(lines), rng.integers(1, 4)):
    lines[i] = lines[i].lower()
  return b'\n'.join(lines)


def _odd_residues(data: bytes, rng: Rng) -> bytes:
  """Upper-case letters replaced by rare or invalid residue codes (B, J, O, U, Z, X, *, ...)."""
  out = bytearray(data)
  letters = [i for i, c in enumerate(out) if 65 <= c <= 90]
  if letters:
    for position in rng.choice(letters, min(len(letters), rng.integers(1, 6)), replace=False):
      out[position] = _ODD_LETTERS[rng.integers(0, len(_ODD_LETTERS))]
  return bytes(out)


def _swap_lines(data: bytes, rng: Rng) -> bytes:
  lines = _lines(data)
  i, j = rng.integers(0, len(lines), 2)
  lines[i], lines[j] = lines[j], lines[i]
  return b'\n'.join(lines)


def _delete_line(data: bytes, rng: Rng) -> bytes:
  lines = _lines(data)
  del lines[rng.integers(0, len(lines))]
  return b'\n'.join(lines)


def _repeat_line(data: bytes, rng: Rng) -> bytes:
  lines = _lines(data)
  i = rng.integers(0, len(lines))
  lines.insert(i, lines[i])
  return b'\n'.join(lines)


def _nasty_token(data: bytes, rng: Rng) -> bytes:
  """A whitespace-separated token replaced by one that parsers find hard."""
  tokens = data.split(b' ')
  i = rng.integers(0, len(tokens))
  tokens[i] = _NASTY_TOKENS[rng.integers(0, len(_NASTY_TOKENS))].encode()
  return b' '.join(tokens)


TEXT_MUTATIONS: dict[str, Callable[[bytes, Rng], bytes]] = {
    'truncate': _truncate, 'flip_bytes': _flip_bytes, 'insert_garbage': _insert_garbage,
    'empty': _empty, 'huge_line': _huge_line, 'latin1': _latin1, 'utf16': _utf16,
    'crlf': _crlf, 'lowercase': _lowercase, 'odd_residues': _odd_residues,
    'swap_lines': _swap_lines, 'delete_line': _delete_line, 'repeat_line': _repeat_line,
    'nasty_token': _nasty_token,
}


def _mutate_text(data: bytes, rng: Rng) -> tuple[bytes, list[str]]:
  names = [str(name) for name in rng.choice(list(TEXT_MUTATIONS), rng.integers(1, 4))]
  for name in names:
    data = TEXT_MUTATIONS[name](data, rng)
  return data, names


# ---------------------------------------------------------------------------------------------
# Mutations of a feature dict (then pickled), or of the pickle's bytes.
# ---------------------------------------------------------------------------------------------

def _pick_array(features: dict, rng: Rng, kinds: str = 'biuf') -> str | None:
  keys = sorted(k for k, v in features.items()
                if isinstance(v, np.ndarray) and v.dtype.kind in kinds and v.ndim and v.size)
  return keys[rng.integers(0, len(keys))] if keys else None


def _pick_key(features: dict, rng: Rng) -> str:
  keys = sorted(features)
  return keys[rng.integers(0, len(keys))]


def _wrong_dtype(features: dict, rng: Rng) -> None:
  key = _pick_key(features, rng)
  value = features[key]
  dtype = [np.float32, np.float64, np.int8, np.uint8, bool, object, 'U3'][rng.integers(0, 7)]
  if isinstance(value, np.ndarray):
    try:
      features[key] = value.astype(dtype)
    except (TypeError, ValueError):  # bytes that are no number: leave as they are
      pass


def _out_of_range(features: dict, rng: Rng) -> None:
  key = _pick_array(features, rng, 'iuf')
  if key is None:
    return
  value = features[key].copy()
  bad = [-1, 2, 21, 22, 255, 10**6, 2**31 - 1, -2**31, 0.5, 1e30][rng.integers(0, 10)]
  if value.dtype.kind in 'iu':
    info = np.iinfo(value.dtype)
    bad = int(np.clip(int(bad), info.min, info.max))
  value.flat[rng.integers(0, value.size)] = bad
  features[key] = value


def _none(features: dict, rng: Rng) -> None:
  features[_pick_key(features, rng)] = None


def _non_finite(features: dict, rng: Rng) -> None:
  key = _pick_array(features, rng, 'iuf')
  if key is None:
    return
  value = features[key].astype(np.float64 if rng.random() < 0.5 else np.float32)
  value.flat[rng.integers(0, value.size)] = [np.nan, np.inf, -np.inf][rng.integers(0, 3)]
  features[key] = value


def _wrong_shape(features: dict, rng: Rng) -> None:
  key = _pick_array(features, rng, 'biufOSU')
  if key is None:
    return
  value = features[key]
  changes = [lambda v: v[..., :-1], lambda v: v[1:], lambda v: v.ravel(), lambda v: v[None],
             lambda v: v[:0], lambda v: v.T, lambda v: v.ravel()[0],
             lambda v: np.concatenate([v, v])]
  features[key] = changes[rng.integers(0, len(changes))](value)


def _missing_key(features: dict, rng: Rng) -> None:
  del features[_pick_key(features, rng)]


def _python_value(features: dict, rng: Rng) -> None:
  features[_pick_key(features, rng)] = [3, 2.5, 'abc', [1, 2], {}, b'x', float('inf')][
      rng.integers(0, 7)]


def _five_column_aatype(features: dict, rng: Rng) -> None:
  """The case of issue #22: a 5-column aatype predicted a chain of alanines."""
  del rng
  if isinstance(features.get('aatype'), np.ndarray) and features['aatype'].ndim == 2:
    features['aatype'] = features['aatype'][:, :5]


def _count(features: dict, rng: Rng) -> None:
  key = ['seq_length', 'num_alignments'][rng.integers(0, 2)]
  value = features.get(key)
  if not isinstance(value, np.ndarray) or value.dtype.kind not in 'biuf' or not value.size:
    return
  changes = [lambda v: v[:0], lambda v: v.ravel()[:1], lambda v: v + 1,
             lambda v: np.full(v.shape, np.inf, np.float32), lambda v: v + 0.5,
             lambda v: v.ravel()[0]]
  features[key] = changes[rng.integers(0, len(changes))](value)


def _swap_values(features: dict, rng: Rng) -> None:
  first, second = _pick_key(features, rng), _pick_key(features, rng)
  features[first], features[second] = features[second], features[first]


FEATURE_MUTATIONS: dict[str, Callable[[dict, Rng], None]] = {
    'wrong_dtype': _wrong_dtype, 'out_of_range': _out_of_range, 'none': _none,
    'non_finite': _non_finite, 'wrong_shape': _wrong_shape, 'missing_key': _missing_key,
    'python_value': _python_value, 'five_column_aatype': _five_column_aatype, 'count': _count,
    'swap_values': _swap_values,
}
PICKLE_BYTE_MUTATIONS = ('truncate', 'flip_bytes', 'insert_garbage')


def _mutate_pickle(features: dict, rng: Rng) -> tuple[bytes, list[str]]:
  features = dict(features)
  names = [str(name) for name in rng.choice(list(FEATURE_MUTATIONS), rng.integers(1, 3))]
  for name in names:
    FEATURE_MUTATIONS[name](features, rng)
  data = pickle.dumps(features, protocol=int(rng.integers(2, 6)))
  if rng.random() < 0.2:
    name = PICKLE_BYTE_MUTATIONS[rng.integers(0, len(PICKLE_BYTE_MUTATIONS))]
    data = TEXT_MUTATIONS[name](data, rng)
    names.append(f'bytes:{name}')
  return data, names


# ---------------------------------------------------------------------------------------------
# The readers, each with the validation its result must pass.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
  """A reader under test: source files (relative to shared data), how a mutant is written and
  read, and how many seeds the fast tier runs."""
  files: tuple[str, ...]
  run: Callable[[pathlib.Path, pathlib.Path, pathlib.Path], None]  # (mutant, source, tmp)
  fast_seeds: int
  pickle: bool = False


def _sequence_features(sequence: str) -> dict:
  """Sequence and one-row MSA features of `sequence`: the base the template features join."""
  features = msa_features.make_sequence_features(sequence, 'query', len(sequence))
  features.update(msa_features.make_msa_features([parsers.parse_a3m(f'>q\n{sequence}\n')]))
  return features


def _check_raw(features: dict, source: pathlib.Path) -> None:
  """Raw features that pass validation must also go through AlphaFold's processing."""
  raw_features.validate_features(features, source)
  processing.process_features(features, _DATA_CONFIG, mode='eval', seed=0, num_recycle=0,
                              source=str(source))


def _run_fasta(mutant: pathlib.Path, source: pathlib.Path, tmp: pathlib.Path) -> None:
  del source, tmp
  sequence, _ = pipeline.read_query(mutant)
  assert sequence and set(sequence) <= set(rc.restypes_with_x)


def _alignment_folder(mutant: pathlib.Path, source: pathlib.Path,
                      tmp: pathlib.Path) -> pathlib.Path:
  """A copy of the source's alignment folder (links; no HHsearch output) with the mutant."""
  folder = tmp / 'alignments'
  folder.mkdir(exist_ok=True)
  for path in source.parent.iterdir():
    link = folder / path.name
    if path.suffix in ('.a3m', '.sto', '.fasta') and not link.exists():
      link.symlink_to(path)
  (folder / source.name).unlink()
  mutant.rename(folder / source.name)
  return folder


def _run_alignment(mutant: pathlib.Path, source: pathlib.Path, tmp: pathlib.Path) -> None:
  folder = _alignment_folder(mutant, source, tmp)
  fasta = next(folder.glob('*.fasta'))
  made = pipeline.raw_features(fasta, folder)
  _check_raw(made.features, folder / source.name)


def _template_folder(tmp: pathlib.Path, shared_mmcif: pathlib.Path,
                     mutant: pathlib.Path | None = None) -> pathlib.Path:
  """Templates 4zey and 2q2k (quick to read; 2crb's 20 NMR models are not), one a mutant."""
  folder = tmp / 'mmcif'
  folder.mkdir(exist_ok=True)
  for name in ('4zey.cif', '2q2k.cif'):
    if not (folder / name).exists():
      (folder / name).symlink_to(shared_mmcif / name)
  if mutant is not None:
    (folder / '4zey.cif').unlink()
    mutant.rename(folder / '4zey.cif')
  return folder


def _check_templates(result: templates.TemplateSearchResult, sequence: str,
                     source: pathlib.Path) -> None:
  assert all('\n' not in reason for reason in result.skipped), result.skipped
  _check_raw({**_sequence_features(sequence), **result.features}, source)


def _run_hhr(mutant: pathlib.Path, source: pathlib.Path, tmp: pathlib.Path) -> None:
  hits = hhr.read_hhr(mutant)
  for hit in hits:
    assert len(hit.query) == len(hit.hit_sequence) == len(hit.indices_query) == len(
        hit.indices_hit)
  sequence, _ = pipeline.read_query(next(source.parent.glob('*.fasta')))
  shared_mmcif = source.parent.parent.parent / 'mmcif'
  result = templates.template_features(sequence, hits, _template_folder(tmp, shared_mmcif),
                                       max_template_date='2030-01-01')
  _check_templates(result, sequence, mutant)


def _run_mmcif(mutant: pathlib.Path, source: pathlib.Path, tmp: pathlib.Path) -> None:
  is_template = source.name == '4zey.cif'
  if is_template:  # read where the template search will read it, so errors name one path
    mutant = _template_folder(tmp, source.parent, mutant) / '4zey.cif'
  try:
    structure = mmcif.read(mutant)
  except mmcif.MmcifError as e:
    error = e
  else:
    error = None
    for chain in structure.chains.values():
      count = len(chain.sequence)
      assert chain.atom_positions.shape == (count, 37, 3) and chain.atom_mask.shape == (count, 37)
      assert np.isfinite(chain.atom_positions).all() and set(np.unique(chain.atom_mask)) <= {0, 1}
  if not is_template:
    if error is not None:
      raise error
    return
  # The mutant as the template of query73's hit 4ZEY_A: a template, or the hit skipped.
  query = source.parent.parent / 'alignments' / 'query73'
  sequence, _ = pipeline.read_query(query / 'query.fasta')
  hit = next(h for h in hhr.read_hhr(query / 'pdb70_hits.hhr') if h.name.startswith('4ZEY_A'))
  result = templates.template_features(sequence, [hit], mutant.parent,
                                       max_template_date='2030-01-01')
  if error is not None:
    assert result.skipped == (f'hit No 3 4ZEY_A: {error}',), (result.skipped, error)
    raise error
  _check_templates(result, sequence, mutant)


def _run_pickle(mutant: pathlib.Path, source: pathlib.Path, tmp: pathlib.Path) -> None:
  del source, tmp
  _check_raw(raw_features.read_features(mutant), mutant)


TARGETS = {
    'fasta': Target(('alignments/query73/query.fasta', 'examples/6KWC_1/6kwc.fasta',
                     'pdb/101m_1_A.fasta'), _run_fasta, 150),
    'a3m': Target(('alignments/query73/bfd_uniclust_hits.a3m',
                   'examples/6KWC_1/bfd_uniref_hits.a3m'), _run_alignment, 120),
    'stockholm': Target(('alignments/query73/uniref90_hits.sto',
                         'alignments/query73/mgnify_hits.sto'), _run_alignment, 120),
    'hhr': Target(('alignments/query73/pdb70_hits.hhr',), _run_hhr, 120),
    'mmcif': Target(('mmcif/4zey.cif', 'mmcif/3zee.cif', 'mmcif/2q2k.cif'), _run_mmcif, 90),
    'features_pkl': Target(('features/alphafold_feature_dict.pickle',
                            'features/openfold_test_features.pkl'), _run_pickle, 150, True),
}
SLOW_FACTOR = 10


@pytest.fixture(scope='module')
def data_dir(shared_dir) -> pathlib.Path:
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def loaded_pickles(data_dir) -> dict[str, dict]:
  """The shared features.pkl files as dicts (plain pickle: they are known files)."""
  loaded = {}
  for name in TARGETS['features_pkl'].files:
    with open(data_dir / name, 'rb') as f:
      loaded[name] = pickle.load(f)
  return loaded


def _fuzz(target_name: str, seeds: range, data_dir: pathlib.Path, loaded_pickles: dict,
          tmp_path_factory: pytest.TempPathFactory) -> collections.Counter:
  """Runs the target on one mutant per seed; returns outcome counts per mutation kind."""
  target = TARGETS[target_name]
  outcomes = collections.Counter()
  originals = {name: None if target.pickle else (data_dir / name).read_bytes()
               for name in target.files}
  for seed in seeds:
    rng = np.random.default_rng([seed, sorted(TARGETS).index(target_name)])
    name = target.files[rng.integers(0, len(target.files))]
    source = data_dir / name
    if target.pickle:
      data, mutations = _mutate_pickle(loaded_pickles[name], rng)
    else:
      data, mutations = _mutate_text(originals[name], rng)
    tmp = tmp_path_factory.mktemp(f'{target_name}_{seed}')
    mutant = tmp / source.name
    mutant.write_bytes(data)
    case = f'{target_name} seed {seed} ({name}, mutations {mutations})'
    try:
      target.run(mutant, source, tmp)
      outcome = 'valid'
    except JaxfoldError as e:
      message = str(e)
      assert '\n' not in message and len(message) < 600, f'{case}: {message!r}'
      assert str(tmp) in message, f'{case}: the message names no file: {message}'
      outcome = 'error'
    except Exception as e:
      raise AssertionError(f'{case}: {type(e).__name__}: {e}') from e
    for mutation in mutations:
      outcomes[mutation, outcome] += 1
    outcomes['cases', outcome] += 1
  return outcomes


def _report(target_name: str, outcomes: collections.Counter) -> None:
  """One line of counts (seen with pytest -s): mutants, outcomes, mutations of each kind."""
  cases = {outcome: outcomes['cases', outcome] for outcome in ('valid', 'error')}
  print(f'{target_name}: {sum(cases.values())} mutants, {cases["valid"]} valid, '
        f'{cases["error"]} JaxfoldError; by mutation: '
        + ', '.join(f'{m} {outcomes[m, "valid"] + outcomes[m, "error"]}'
                    for m in sorted({m for m, _ in outcomes if m != 'cases'})))


@pytest.mark.parametrize('target_name', sorted(TARGETS))
def test_mutated_inputs_give_valid_values_or_one_line_errors(target_name, data_dir,
                                                             loaded_pickles, tmp_path_factory):
  outcomes = _fuzz(target_name, range(TARGETS[target_name].fast_seeds), data_dir,
                   loaded_pickles, tmp_path_factory)
  _report(target_name, outcomes)
  assert outcomes['cases', 'error'], 'no mutant was rejected: the mutations are too gentle'


@pytest.mark.slow
@pytest.mark.parametrize('target_name', sorted(TARGETS))
def test_many_mutated_inputs_give_valid_values_or_one_line_errors(target_name, data_dir,
                                                                  loaded_pickles,
                                                                  tmp_path_factory):
  fast = TARGETS[target_name].fast_seeds
  outcomes = _fuzz(target_name, range(fast, fast * (SLOW_FACTOR + 1)), data_dir,
                   loaded_pickles, tmp_path_factory)
  _report(target_name, outcomes)


# ---------------------------------------------------------------------------------------------
# read_features: what the restricted unpickler admits and refuses.
# ---------------------------------------------------------------------------------------------

def test_shared_pickles_load_under_the_restricted_unpickler(data_dir, loaded_pickles):
  for name, trusted in loaded_pickles.items():
    features = raw_features.read_features(data_dir / name)
    assert features.keys() == trusted.keys()
    for key, value in trusted.items():
      np.testing.assert_array_equal(features[key], value, err_msg=f'{name} {key}')


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_every_pickle_protocol_of_numpy_arrays_loads(loaded_pickles, tmp_path, protocol):
  features = dict(loaded_pickles['features/alphafold_feature_dict.pickle'])
  features['resolution'] = np.float32(2.5)  # a numpy scalar
  path = tmp_path / 'features.pkl'
  path.write_bytes(pickle.dumps(features, protocol=protocol))
  assert raw_features.read_features(path)['resolution'] == np.float32(2.5)


class _CallsAGlobal:
  """Unpickles by calling collections.OrderedDict: harmless, but code all the same."""

  def __reduce__(self):
    return (collections.OrderedDict, ())


def test_a_pickle_that_would_run_code_is_refused(loaded_pickles, tmp_path):
  path = tmp_path / 'features.pkl'
  path.write_bytes(pickle.dumps({**loaded_pickles['features/alphafold_feature_dict.pickle'],
                                 'payload': _CallsAGlobal()}))
  with pytest.raises(JaxfoldError, match=(
      f'^{path}: refusing to load collections.OrderedDict from a pickle \\(a features.pkl '
      'holds only numpy arrays; pass --trust-pickle to load a file you trust\\)$')):
    raw_features.read_features(path)
  assert raw_features.read_features(path, trusted=True)['payload'] == {}


@pytest.mark.parametrize('mutate, problem', [
    (lambda f: f.update(aatype=f['aatype'][:, :5]), r"'aatype' has shape \(73, 5\); expected "
                                                     r'\(N_res, 21\) one-hot'),
    (lambda f: f['msa'].__setitem__((3, 4), 22), "'msa' has values outside the whole numbers "
                                                 '0..21'),
    (lambda f: f.update(msa=f['msa'].astype(np.float32)), "'msa' has dtype float32; expected "
                                                           'an integer dtype'),
    (lambda f: f.update(seq_length=f['seq_length'][:0]), "'seq_length' is empty"),
    (lambda f: f.update(num_alignments=f['num_alignments'] * np.inf),
     "'num_alignments' has non-finite values"),
    (lambda f: f.update(seq_length=None), "'seq_length' is None, not a numpy array"),
    (lambda f: f.update(num_alignments=f['num_alignments'] - 1),
     "'num_alignments' says 1135, but the number of MSA rows is 1136"),
    (lambda f: f.update(template_aatype=None), "'template_aatype' is None, not a numpy array"),
    (lambda f: f.pop('template_all_atom_positions'),
     "missing raw feature 'template_all_atom_positions'"),
    (lambda f: f.update(deletion_matrix_int=f['deletion_matrix_int'][:, 1:]),
     r"'deletion_matrix_int' has shape \(1136, 72\); expected \(N_seq, N_res\)"),
])
def test_invalid_features_name_the_file_key_and_problem(loaded_pickles, tmp_path, mutate,
                                                        problem):
  features = {key: value.copy() for key, value in
              loaded_pickles['features/alphafold_feature_dict.pickle'].items()}
  mutate(features)
  path = tmp_path / 'features.pkl'
  path.write_bytes(pickle.dumps(features))
  with pytest.raises(JaxfoldError, match=f'^{path}: {problem}'):
    raw_features.read_features(path)
