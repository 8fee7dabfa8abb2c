"""Reduced training sets: one split of a built set, copied with only some of its chains.

For the OpenProteinSet ablations (Ahdritz et al., 2024: retraining on fewer chains, or on sets
without whole secondary-structure classes), chains leave in this order, each with its reason:
  1. `keep_list` / `exclude_list`: files of chain IDs ('1abc_A') or PDB IDs ('1abc': all its
     chains), one a line, '#' comments and blank lines ignored; the PDB part matches in any
     case, the chain letter exactly. IDs that match no chain are reported, not an error.
  2. `exclude_classes`: a chain leaves when at least a given fraction of the assigned residues
     of its ground truth is of a class (helix, strand, coil), by P-SEA on the Cα positions
     (`jaxfold.common.secondary_structure`).
  3. `fraction` or `count`: a random choice of the chains left, from `numpy.random.default_rng
     (seed)` over their sorted IDs, so the record order does not change it.
  4. `validation`: a leakage report. For each validation chain, the highest sequence identity
     to any chosen chain, and the chosen chains above `max_identity` (AlphaFold's and OpenFold's
     validation sets are 40% sequence-identity clusters apart from training); `drop_leaking`
     leaves those chains out.

Sequence identity is the number of identical aligned pairs of one optimal alignment (Biopython
`PairwiseAligner`: global, BLOSUM62, gap open -11, extend -1, end gaps free so a fragment
aligns within its full-length chain) over the length of the shorter sequence. Identical
sequences are aligned once; each pair of distinct ones costs about 2 ms at 300 residues, so a
whole PDB training set against a validation set of hundreds takes hours (cluster such sets
with MMseqs2 instead).

The chosen chains' records are copied unchanged (`dataset_builder.build_dataset`) into a new
dataset built beside `output` and renamed into place when complete; `subset.json` beside its
shards records the source, every option, the chains kept, those left out with their reason,
the class fractions used, the unmatched list IDs and the leakage report.
"""

import collections
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tqdm
from Bio import Align
from Bio.Align import substitution_matrices

from jaxfold.common import residue_constants as rc
from jaxfold.common import secondary_structure
from jaxfold.data import dataset_builder, parsers, training_set

SUBSET_FILE = 'subset.json'
CLASSES = tuple(secondary_structure.SECONDARY_STRUCTURE.values())  # ('helix', 'strand', 'coil')
_CA = rc.atom_order['CA']


@dataclasses.dataclass(frozen=True)
class Options:
  """How chains are chosen (see the module docstring); every field is recorded in subset.json.

  exclude_classes: (class, fraction) pairs; a chain leaves when any class reaches its fraction.
  validation: a built dataset directory or a FASTA file of validation chains.
  validation_split: its split; None reads 'validation', or the only split if it has one.
  """
  keep_list: str | None = None
  exclude_list: str | None = None
  exclude_classes: tuple[tuple[str, float], ...] = ()
  fraction: float | None = None
  count: int | None = None
  seed: int = 0
  validation: str | None = None
  validation_split: str | None = None
  max_identity: float = 0.4
  drop_leaking: bool = False

  def __post_init__(self):
    for name, fraction in self.exclude_classes:
      if name not in CLASSES:
        raise ValueError(f'unknown secondary-structure class {name!r} (use one of '
                         f'{", ".join(CLASSES)})')
      if not 0 < fraction <= 1:
        raise ValueError(f'class fraction {name}:{fraction} is not in (0, 1]')
    if self.fraction is not None and self.count is not None:
      raise ValueError('give a fraction or a count of chains, not both')
    if self.fraction is not None and not 0 < self.fraction <= 1:
      raise ValueError(f'fraction {self.fraction} is not in (0, 1]')
    if self.count is not None and self.count < 1:
      raise ValueError(f'count {self.count} is not a positive number of chains')
    if not 0 <= self.max_identity <= 1:
      raise ValueError(f'max identity {self.max_identity} is not in [0, 1]')
    if self.drop_leaking and self.validation is None:
      raise ValueError('dropping leaking chains needs a validation set')


def parse_class_limit(text: str) -> tuple[str, float]:
  """('strand', 0.5) from 'strand:0.5'."""
  name, colon, value = text.partition(':')
  try:
    fraction = float(value)
  except ValueError:
    fraction = None
  if not colon or fraction is None:
    raise ValueError(f'{text!r}: expected CLASS:FRACTION, e.g. strand:0.5')
  return name.strip().lower(), fraction


def find_dataset(path: str | os.PathLike) -> pathlib.Path:
  """The built dataset at `path`, or the one `jaxfold data build --output path` wrote there."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path}: no such file or directory')
  if (path / 'dataset_info.json').exists():
    return path
  found = list(path.glob(f'{dataset_builder.ChainFeatures.name}/*/dataset_info.json'))
  if len(found) == 1:
    return found[0].parent
  raise dataset_builder.DatasetError(f'{path} holds no built dataset (no dataset_info.json; '
                                     'make one with `jaxfold data build`)')


def read_id_list(path: str | os.PathLike) -> list[str]:
  """The IDs of a list file: one a line; blank lines and '#' comments are skipped."""
  lines = pathlib.Path(path).read_text().splitlines()
  return [line.split('#', 1)[0].strip() for line in lines if line.split('#', 1)[0].strip()]


def _match_key(chain_or_pdb_id: str) -> tuple[str, str]:
  pdb, _, chain = chain_or_pdb_id.rpartition('_')
  return pdb.lower(), chain


def match_ids(ids: Sequence[str], chain_ids: Sequence[str]) -> tuple[set[str], list[str]]:
  """(chains matched by `ids`, the IDs matching none): an ID matches the chain it names
  ('1abc_A') or every chain of the PDB entry it names ('1abc'), the PDB part in any case."""
  by_chain = {_match_key(c): c for c in chain_ids}
  by_entry = collections.defaultdict(list)
  for chain_id in chain_ids:
    by_entry[_match_key(chain_id)[0]].append(chain_id)
  matched, unmatched = set(), []
  for entry in ids:
    if _match_key(entry) in by_chain:
      found = [by_chain[_match_key(entry)]]
    else:  # a PDB ID; an ID with '_' names one chain only
      found = by_entry.get(entry.lower(), []) if '_' not in entry else []
    matched.update(found)
    if not found:
      unmatched.append(entry)
  return matched, unmatched


def ground_truth_classes(example: Mapping[str, np.ndarray]) -> dict[str, float]:
  """{class: fraction of the assigned residues} of a training example's ground truth."""
  classes = secondary_structure.assign(example['all_atom_positions'][:, _CA],
                                       example['residue_index'], example['all_atom_mask'][:, _CA])
  return secondary_structure.class_fractions(classes)


def choose(chain_ids: Sequence[str], fraction: float | None, count: int | None,
           seed: int) -> list[str]:
  """A random `count` of the chains, or `fraction` of them rounded to the nearest whole chain
  (all of them when both are None), sorted."""
  pool = sorted(chain_ids)
  if fraction is None and count is None:
    return pool
  size = count if count is not None else int(np.floor(fraction * len(pool) + 0.5))
  if size > len(pool):
    raise ValueError(f'cannot choose {size} chains: {len(pool)} are left')
  drawn = np.random.default_rng(seed).choice(len(pool), size=size, replace=False)
  return sorted(pool[i] for i in drawn)


def _aligner() -> Align.PairwiseAligner:
  return Align.PairwiseAligner(
      mode='global', substitution_matrix=substitution_matrices.load('BLOSUM62'),
      open_gap_score=-11, extend_gap_score=-1, end_gap_score=0)


def sequence_identity(a: str, b: str, aligner: Align.PairwiseAligner | None = None) -> float:
  """Identical aligned pairs of an optimal alignment of `a` and `b` / the shorter length."""
  aligner = aligner or _aligner()
  alphabet = set(aligner.substitution_matrix.alphabet)
  a, b = (''.join(c if c in alphabet else 'X' for c in s.upper()) for s in (a, b))
  if not a or not b:
    return 0.0
  return aligner.align(a, b)[0].counts().identities / min(len(a), len(b))


def leakage(training: Mapping[str, str], validation: Sequence[tuple[str, str]],
            max_identity: float) -> list[dict[str, Any]]:
  """Per validation (name, sequence): its highest identity to a training chain, that chain
  (the first by ID among equals), and every training chain above `max_identity`."""
  aligner, identities = _aligner(), {}
  report = []
  for name, sequence in tqdm.tqdm(validation, desc='leakage', unit='validation chain'):
    row = {'chain': name, 'length': len(sequence), 'identity': 0.0, 'closest': None,
           'flagged': False, 'similar': {}}
    for chain_id in sorted(training):
      pair = (sequence, training[chain_id])
      if pair not in identities:
        identities[pair] = sequence_identity(*pair, aligner)
      if identities[pair] > row['identity']:
        row['identity'], row['closest'] = identities[pair], chain_id
      if identities[pair] > max_identity:
        row['similar'][chain_id] = identities[pair]
    row['flagged'] = bool(row['similar'])
    report.append(row)
  return report


def read_validation(path: str | os.PathLike,
                    split: str | None) -> tuple[list[tuple[str, str]], str | None]:
  """((name, sequence) of each validation chain, the split read or None for FASTA)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path}: no such file or directory (validation set)')
  if not path.is_dir():
    sequences, descriptions = parsers.read_fasta(path)
    return [((d.split() or [f'sequence_{i + 1}'])[0], s)
            for i, (d, s) in enumerate(zip(descriptions, sequences))], None
  dataset_dir = find_dataset(path)
  info = json.loads((dataset_dir / 'dataset_info.json').read_text())
  splits = [s['name'] for s in info.get('splits', [])]
  if split is None:
    split = 'validation' if 'validation' in splits or len(splits) != 1 else splits[0]
  source = dataset_builder.load_data_source(dataset_dir, split)
  return [(example['domain_name'][0].decode(), example['sequence'][0].decode())
          for example in tqdm.tqdm(source, desc='reading validation chains', unit='chain')], split


def _select(data: pathlib.Path, split: str, options: Options, source: Sequence[Any],
            record_of: Mapping[str, int]) -> dict[str, Any]:
  """subset.json without its output path: the chains chosen, and why the others left.

  source, record_of: the split's records, and each chain's record index.
  """
  if options.validation is not None:  # read first: a bad file fails before the long steps
    validation, validation_split = read_validation(options.validation, options.validation_split)
  left_out, unmatched = {}, {}
  remaining = set(record_of)
  for name, path, keep in (('keep_list', options.keep_list, True),
                           ('exclude_list', options.exclude_list, False)):
    if path is None:
      continue
    ids = read_id_list(path)
    matched, unmatched[name] = match_ids(ids, list(record_of))
    if unmatched[name]:
      logging.warning('%s: %d of its %d IDs match no chain of %s, e.g. %s', path,
                      len(unmatched[name]), len(ids), data, unmatched[name][:5])
    leaving = remaining - matched if keep else remaining & matched
    left_out.update({c: {'reason': name, 'detail': f'{"not " if keep else ""}listed in {path}'}
                     for c in leaving})
    remaining -= leaving

  fractions = {}
  if options.exclude_classes:
    for chain_id in tqdm.tqdm(sorted(remaining), desc='secondary structure', unit='chain'):
      try:
        fractions[chain_id] = ground_truth_classes(source[record_of[chain_id]])
      except ValueError as e:  # no resolved Cα: its classes are unknown
        left_out[chain_id] = {'reason': 'exclude_class', 'detail': str(e)}
        continue
      over = [f'{name} {fractions[chain_id][name]:.3f} >= {limit}'
              for name, limit in options.exclude_classes if fractions[chain_id][name] >= limit]
      if over:
        left_out[chain_id] = {'reason': 'exclude_class', 'detail': ', '.join(over)}
    remaining -= set(left_out)

  chosen = choose(remaining, options.fraction, options.count, options.seed)
  left_out.update({c: {'reason': 'sample', 'detail': f'not drawn (seed {options.seed})'}
                   for c in remaining - set(chosen)})

  report = None
  if options.validation is not None:
    sequences = {c: source[record_of[c]]['sequence'][0].decode() for c in chosen}
    report = {'source': str(options.validation), 'split': validation_split,
              'max_identity': options.max_identity,
              'chains': leakage(sequences, validation, options.max_identity)}
    if options.drop_leaking:
      for row in report['chains']:
        for chain_id, identity in row['similar'].items():
          left_out.setdefault(chain_id, {
              'reason': 'leakage',
              'detail': f'identity {identity:.3f} to validation chain {row["chain"]}'})
      chosen = [c for c in chosen if c not in left_out]
  if not chosen:
    raise ValueError(f'{data}: no chain of split {split!r} is left '
                     f'({dict(collections.Counter(v["reason"] for v in left_out.values()))})')
  return {'source': str(data.resolve()), 'split': split, 'options': dataclasses.asdict(options),
          'num_source_chains': len(record_of), 'chains': chosen,
          'left_out': dict(sorted(left_out.items())), 'class_fractions': fractions,
          'unmatched_ids': unmatched, 'leakage': report}


def write_subset(data: str | os.PathLike, output: str | os.PathLike, options: Options,
                 split: str = 'train') -> dict[str, Any]:
  """Writes the subset of split `split` of the built set `data` as a new dataset under
  `output` (a tfds data_dir, as `jaxfold data build --output`; it must not exist), and
  returns its subset.json record, whose 'dataset' is the new dataset directory."""
  output = pathlib.Path(output)
  if os.path.lexists(output):
    raise FileExistsError(f'{output}: exists (a subset is written to a new directory)')
  if not output.resolve().parent.is_dir():
    raise FileNotFoundError(f'{output}: directory {output.resolve().parent} does not exist')
  files = {name: getattr(options, name) for name in ('keep_list', 'exclude_list', 'validation')
           if getattr(options, name) is not None}
  for path in files.values():
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: no such file or directory')
  # Recorded as absolute paths, so that subset.json says what was read from anywhere.
  options = dataclasses.replace(
      options, **{name: str(pathlib.Path(path).resolve()) for name, path in files.items()})
  data = find_dataset(data)
  source = dataset_builder.load_data_source(data, split)
  chain_ids, _ = dataset_builder.record_chains(data, split)
  record_of = {c: i for i, c in enumerate(chain_ids)}
  record = _select(data, split, options, source, record_of)
  building = pathlib.Path(tempfile.mkdtemp(dir=output.resolve().parent,
                                           prefix=f'.{output.name}.partial-'))
  try:
    summary = dataset_builder.build_dataset(building, lambda c: source[record_of[c]],
                                            {split: record['chains']}, training_set.feature_spec())
    if summary.failed[split]:
      chain_id, error = next(iter(summary.failed[split].items()))
      raise dataset_builder.DatasetError(f'{data}: copying {len(summary.failed[split])} chains '
                                         f'failed, e.g. {chain_id}: {error}')
    relative = pathlib.Path(summary.dataset_dir).relative_to(building)
    record = {'dataset': str(output.resolve() / relative), **record}
    written = building / relative
    (written / dataset_builder.SUMMARY_FILE).write_text(json.dumps(
        {**dataclasses.asdict(summary), 'dataset_dir': record['dataset']}, indent=1))
    (written / SUBSET_FILE).write_text(json.dumps(record, indent=1, default=str))
    os.rename(building, output)
  except BaseException:
    shutil.rmtree(building, ignore_errors=True)
    raise
  return record


def summary(record: Mapping[str, Any]) -> list[str]:
  """Short lines for the user: chains kept, left out by reason, flagged validation chains
  (list IDs that match no chain are logged as they are read)."""
  reasons = collections.Counter(v['reason'] for v in record['left_out'].values())
  lines = [f'kept {len(record["chains"])} of {record["num_source_chains"]} chains of split '
           f'{record["split"]!r}; written to {record["dataset"]}']
  if reasons:
    lines.append('left out: ' + ', '.join(f'{n} by {r}' for r, n in sorted(reasons.items())))
  if record['leakage'] is not None:
    rows = record['leakage']['chains']
    flagged = [f'{r["chain"]} ({r["identity"]:.2f} to {r["closest"]})' for r in rows
               if r['flagged']]
    lines.append(f'{len(flagged)} of {len(rows)} validation chains above '
                 f'{record["leakage"]["max_identity"]:.0%} identity'
                 + (': ' + ', '.join(flagged[:10]) + (' ...' if len(flagged) > 10 else '')
                    if flagged else ''))
  return lines
