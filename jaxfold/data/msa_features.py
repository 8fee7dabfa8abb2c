"""The raw sequence and MSA features of AlphaFold's data pipeline (the `features.pkl` it writes).

Jumper et al. (2021) Suppl. 1.2.9 'Input features', before any sampling or clustering:
  sequence features: aatype [N_res, 21] int32 one-hot (20 = X), between_segment_residues
    [N_res] int32, domain_name [1] object (bytes), residue_index [N_res] int32 (0-based),
    seq_length [N_res] int32, sequence [1] object (bytes);
  MSA features: msa [N_seq, N_res] int32 in HHblits order ('ACDEFGHIKLMNPQRSTVWYX-'),
    deletion_matrix_int [N_seq, N_res] int32, num_alignments [N_res] int32 (= N_seq),
    msa_species_identifiers [N_seq] object (bytes, b'' where the name is not UniProt's).

The alignments of Suppl. 1.2.2 'Genetic search' are merged in AlphaFold's order — UniRef90
(first 10,000 sequences), BFD (+ Uniclust30 / UniRef30), MGnify (first 501) — and a row is
dropped when its encoded form repeats an earlier one, wherever that came from.
"""

import os
import pathlib
import re
from collections.abc import Iterable, Sequence

import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.data import parsers

FeatureDict = dict[str, np.ndarray]

# (database, file stems, cap on sequences): AlphaFold's monomer search, in merge order.
# Either file kind is read; '.a3m' (first of parsers.ALIGNMENT_SUFFIXES) wins where a folder
# holds both (OpenProteinSet does).
ALIGNMENT_FILES = (
    ('uniref90', ('uniref90_hits',), 10_000),
    ('bfd', ('bfd_uniclust_hits', 'bfd_uniref_hits'), None),
    ('mgnify', ('mgnify_hits',), 501),
)

# UniProtKB names, 'tr|ACCESSION|ENTRY_SPECIES' or 'sp|ACCESSION|MNEMONIC_SPECIES', with an
# optional isoform suffix on the accession and a small-BFD '_<number>' suffix on the entry.
_UNIPROT_NAME = re.compile(
    r'^(?:tr|sp)\|[A-Za-z0-9]{6,10}(?:_\d)?\|[A-Za-z0-9]+_(?P<species>[A-Za-z0-9]{1,5})(?:_\d+)?$')

# ASCII code -> HHblits id (every upper-case letter and '-'); -1 marks anything else.
_HHBLITS_LOOKUP = np.full(128, -1, np.int32)
_HHBLITS_LOOKUP[[ord(c) for c in rc.HHBLITS_AA_TO_ID]] = list(rc.HHBLITS_AA_TO_ID.values())


def make_sequence_features(sequence: str, description: str, num_res: int) -> FeatureDict:
  """AlphaFold's sequence features of one chain; `num_res` must equal len(sequence)."""
  if len(sequence) != num_res:
    raise ValueError(f'sequence {description!r} has {len(sequence)} residues; '
                     f'num_res is {num_res}.')
  return {
      'aatype': rc.sequence_to_onehot(sequence, rc.restype_order_with_x, map_unknown_to_x=True),
      'between_segment_residues': np.zeros(num_res, np.int32),
      'domain_name': np.array([description.encode('utf-8')], dtype=object),
      'residue_index': np.arange(num_res, dtype=np.int32),
      'seq_length': np.full(num_res, num_res, np.int32),
      'sequence': np.array([sequence.encode('utf-8')], dtype=object),
  }


def species_identifier(description: str) -> str:
  """The UniProt species code of an MSA description ('' if its first word is not a UniProt
  name); a '/start-end' range suffix (jackhmmer) is ignored."""
  words = description.split()
  match = words and _UNIPROT_NAME.match(words[0].partition('/')[0])
  return match.group('species') if match else ''


def _encode(msa: parsers.Msa, msa_index: int) -> np.ndarray:
  """[N_seq, N_res] int32 HHblits ids of one MSA's sequences."""
  codes = np.frombuffer(''.join(msa.sequences).encode('ascii', 'replace'), np.uint8)
  encoded = _HHBLITS_LOOKUP[codes].reshape(len(msa), -1)
  bad_rows = np.flatnonzero((encoded < 0).any(axis=1))
  if bad_rows.size:
    row = bad_rows[0]
    raise ValueError(f'MSA {msa_index}, sequence {row} ({msa.descriptions[row]!r}): character '
                     f'outside the HHblits alphabet in {msa.sequences[row]!r}.')
  return encoded


def make_msa_features(msas: Sequence[parsers.Msa]) -> FeatureDict:
  """AlphaFold's MSA features of `msas` merged in order, keeping the first of identical
  encoded rows; every MSA must have the first one's width."""
  if not msas:
    raise ValueError('make_msa_features needs at least one MSA; got none.')
  empty = [index for index, msa in enumerate(msas) if not msa]
  if empty:
    raise ValueError(f'MSA {empty[0]} holds no sequence.')
  num_res = len(msas[0].sequences[0])
  for index, msa in enumerate(msas):
    widths = {len(sequence) for sequence in msa.sequences}
    if widths != {num_res}:
      raise ValueError(f'MSA {index} has rows of widths {sorted(widths)}; the query of MSA 0 '
                       f'has {num_res} residues.')
  msa = np.concatenate([_encode(msa, index) for index, msa in enumerate(msas)])
  deletions = np.concatenate([msa.deletion_matrix for msa in msas]).astype(np.int32)
  descriptions = [description for msa in msas for description in msa.descriptions]
  # np.unique sorts stably when asked for indices, so each index is a first occurrence.
  _, first = np.unique(msa, axis=0, return_index=True)
  keep = np.sort(first)
  return {
      'deletion_matrix_int': deletions[keep],
      'msa': msa[keep],
      'num_alignments': np.full(num_res, len(keep), np.int32),
      'msa_species_identifiers': np.array(
          [species_identifier(descriptions[i]).encode('utf-8') for i in keep], dtype=object),
  }


def select_alignments(file_names: Iterable[str]) -> list[tuple[str, int | None]]:
  """(file name, sequence cap) of each database's alignment among `file_names`, in merge
  order; absent databases are skipped ([] when none is there)."""
  names = set(file_names)
  found = []
  for _, stems, cap in ALIGNMENT_FILES:
    present = [f'{stem}{suffix}' for suffix in parsers.ALIGNMENT_SUFFIXES for stem in stems
               if f'{stem}{suffix}' in names]
    if present:
      found.append((present[0], cap))
  return found


def alignment_paths(alignment_dir: str | os.PathLike) -> list[tuple[pathlib.Path, int | None]]:
  """(file, sequence cap) of each database's alignment in `alignment_dir`, in merge order;
  absent databases are skipped, and a folder that is missing or holds none raises."""
  folder = pathlib.Path(alignment_dir)
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: alignment folder not found.')
  found = select_alignments(path.name for path in folder.iterdir() if path.is_file())
  if not found:
    expected = [f'{stem}{suffix}' for _, stems, _ in ALIGNMENT_FILES for stem in stems
                for suffix in parsers.ALIGNMENT_SUFFIXES]
    raise FileNotFoundError(f'{folder}: no alignment file; expected any of {expected}.')
  return [(folder / name, cap) for name, cap in found]


def read_alignment_dir(alignment_dir: str | os.PathLike) -> list[parsers.Msa]:
  """The MSAs of an AlphaFold / OpenProteinSet alignment folder, in AlphaFold's merge order."""
  return [parsers.read_msa(path, cap) for path, cap in alignment_paths(alignment_dir)]
