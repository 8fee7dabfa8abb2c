"""Readers for the alignment formats of AlphaFold's search tools: FASTA, A3M and Stockholm.

An alignment is an `Msa`: one string per sequence over the query's columns (upper-case letters
and '-'), the deletion matrix (how many residues the sequence has, between this column and
the previous one, that the query has no column for), and one description per sequence. These
are the inputs of the MSA features of Jumper et al. (2021) Suppl. 1.2.2 'Genetic search' and
1.2.9 'Input features' (`msa`, `deletion_matrix`).

Formats, as AlphaFold reads them:
  FASTA: '>' description lines, each followed by sequence lines; blank lines are skipped.
  A3M (HHblits): FASTA whose lower-case letters are insertions relative to the query; they are
    removed from the row and counted in the deletion matrix. '.' (a gap in an insertion, which
    A3M may omit) is removed without being counted.
  Stockholm (jackhmmer): 'name aligned_sequence' lines, possibly in several blocks, the query
    first; every column where the query has a gap is removed from every row, and the residues
    a row has in those columns are counted in its deletion matrix. Markup ('#=GS', '#=GC RF',
    ...) is ignored, so no reference annotation is needed. Descriptions are the sequence names.

Any character other than a letter or a gap is rejected with a `ParseError` naming the source and
line, as are structural faults (no sequence, a sequence before its '>' line, a row that does not
fit the query's columns). Unknown letters are kept; the feature encoders map them to X. Files
must be UTF-8 (ASCII in practice): other bytes are a `ParseError` naming the file and the byte's
offset. Lines end at '\n' (a '\r' before it is ignored), so line numbers are the file's.
"""

import codecs
import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import numpy as np

from jaxfold.common.errors import JaxfoldError

_GAP = '-'
_INSERT_GAP = '.'  # A3M / HMMER: gap in a column the query has no residue for
_FASTA_JUNK = re.compile(r'[^A-Za-z\-]')
_ALIGNMENT_JUNK = re.compile(r'[^A-Za-z\-.]')


class ParseError(JaxfoldError):
  """A malformed input file; the message names the file (or source) and line or byte offset."""


def excerpt(text: str, limit: int = 60) -> str:
  """`text` quoted for a one-line message: escaped as by repr, cut after `limit` characters."""
  return repr(text[:limit]) + ('...' if len(text) > limit else '')


def decode_text(data: bytes, source: str, offset: int = 0) -> str:
  """`data` as UTF-8 text; else a ParseError naming `source` and the first bad byte's offset
  in the file (`offset`: where `data` starts in it). A byte order mark opening the file is
  dropped (some editors write one)."""
  if offset == 0 and data.startswith(codecs.BOM_UTF8):
    data, offset = data[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    utf16 = offset == 0 and data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    raise ParseError(f'{source}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset '
                     f'{offset + e.start} ({e.reason}'
                     f'{"; the file is UTF-16: save it as UTF-8" if utf16 else ""})') from e


def read_text(path: str | os.PathLike) -> str:
  """The UTF-8 text of the file at `path`; ParseError naming it and the offset of a byte that
  is not UTF-8 (a binary file, or another encoding such as latin-1 or UTF-16)."""
  return decode_text(pathlib.Path(path).read_bytes(), str(path))


def _text_lines(file: BinaryIO, source: str) -> Iterator[str]:
  """The lines of a binary file as text, decoded one at a time (a large file is not held)."""
  offset = 0
  for line in file:
    yield decode_text(line, source, offset)
    offset += len(line)


@dataclasses.dataclass(frozen=True, eq=False)  # no field-wise ==: it would compare arrays
class Msa:
  """A parsed alignment, query first; N = number of sequences, L = query length."""
  sequences: list[str]  # N strings of length L: upper-case letters and '-'
  deletion_matrix: np.ndarray  # [N, L] int32, residues deleted before each column
  descriptions: list[str]  # N descriptions (A3M header text, Stockholm sequence name)

  def __post_init__(self):
    shape = np.shape(self.deletion_matrix)
    if not len(self.sequences) == shape[0] == len(self.descriptions):
      raise ValueError(f'Msa has {len(self.sequences)} sequences, {shape[0]} deletion matrix '
                       f'rows and {len(self.descriptions)} descriptions; they must match.')

  def __len__(self) -> int:
    return len(self.sequences)

  def truncate(self, max_sequences: int) -> 'Msa':
    """The first `max_sequences` sequences (the query counts as one)."""
    return Msa(self.sequences[:max_sequences], self.deletion_matrix[:max_sequences],
               self.descriptions[:max_sequences])


def _fasta_records(text: str, source: str,
                   junk: re.Pattern) -> tuple[list[str], list[str], list[int]]:
  """(sequences, descriptions, header line numbers) of FASTA text, checked line by line."""
  sequences, descriptions, header_lines = [], [], []
  chunks: list[list[str]] = []
  for line_number, line in enumerate(text.split('\n'), start=1):
    line = line.strip()
    if line.startswith('>'):
      descriptions.append(line[1:])
      header_lines.append(line_number)
      chunks.append([])
    elif line:
      if not chunks:
        raise ParseError(f'{source}: line {line_number}: sequence before the first '
                         f"'>' description line.")
      bad = junk.search(line)
      if bad:
        raise ParseError(f'{source}: line {line_number}: invalid character {bad.group()!r} '
                         f'in sequence {excerpt(descriptions[-1])}.')
      chunks[-1].append(line)
  if not chunks:
    raise ParseError(f"{source}: no sequences (no '>' description line).")
  for chunk, description, line_number in zip(chunks, descriptions, header_lines):
    if not chunk:
      raise ParseError(f'{source}: line {line_number}: sequence {excerpt(description)} is empty.')
    sequences.append(''.join(chunk))
  return sequences, descriptions, header_lines


def parse_fasta(text: str, source: str = '<string>') -> tuple[list[str], list[str]]:
  """(sequences, descriptions) of a FASTA text; descriptions are the header lines without '>'.

  Sequences may hold letters and '-' only; `source` names the text in error messages.
  """
  sequences, descriptions, _ = _fasta_records(text, source, _FASTA_JUNK)
  return sequences, descriptions


def _a3m_row(row: str) -> tuple[str, np.ndarray]:
  """A3M row -> (aligned sequence, [L] lower-case letters between consecutive columns)."""
  codes = np.frombuffer(row.encode('ascii'), np.uint8)
  inserted = (codes >= ord('a')) & (codes <= ord('z'))
  aligned = ~inserted & (codes != ord(_INSERT_GAP))
  inserted_before = np.cumsum(inserted)[aligned]
  deletions = np.diff(inserted_before, prepend=0)
  return codes[aligned].tobytes().decode('ascii'), deletions.astype(np.int32)


def parse_a3m(text: str, source: str = '<string>') -> Msa:
  """The `Msa` of an A3M text (first sequence = query); `source` names it in error messages."""
  rows, descriptions, header_lines = _fasta_records(text, source, _ALIGNMENT_JUNK)
  sequences, deletions = zip(*map(_a3m_row, rows))
  width = len(sequences[0])
  for sequence, description, line_number in zip(sequences, descriptions, header_lines):
    if len(sequence) != width:
      raise ParseError(f'{source}: line {line_number}: sequence {excerpt(description)} has '
                       f'{len(sequence)} aligned columns; the query has {width}.')
  return Msa(list(sequences), np.stack(deletions), descriptions)


def parse_stockholm(text: str | Iterable[str], source: str = '<string>',
                    max_sequences: int | None = None) -> Msa:
  """The `Msa` of a Stockholm text or its lines (first sequence = query), columns where the
  query has a gap removed. `max_sequences` keeps the first sequences only (AlphaFold's cap on
  jackhmmer hits); `source` names the text in error messages.
  """
  lines = text.split('\n') if isinstance(text, str) else text
  blocks: dict[str, list[str]] = {}
  first_lines: dict[str, int] = {}
  for line_number, line in enumerate(lines, start=1):
    line = line.strip()
    if not line or line.startswith(('#', '//')):
      continue
    fields = line.split()
    if len(fields) != 2:
      raise ParseError(f"{source}: line {line_number}: expected 'name aligned_sequence', "
                       f'got {len(fields)} fields.')
    name, aligned = fields
    bad = _ALIGNMENT_JUNK.search(aligned)
    if bad:
      raise ParseError(f'{source}: line {line_number}: invalid character {bad.group()!r} '
                       f'in sequence {excerpt(name)}.')
    if name not in blocks:
      if max_sequences is not None and len(blocks) >= max_sequences:
        continue
      blocks[name] = []
      first_lines[name] = line_number
    blocks[name].append(aligned)
  if not blocks:
    raise ParseError(f'{source}: no sequences (no alignment lines).')
  names = list(blocks)
  rows = [''.join(blocks[name]) for name in names]
  for name, row in zip(names, rows):
    if len(row) != len(rows[0]):
      raise ParseError(f'{source}: line {first_lines[name]}: sequence {excerpt(name)} is '
                       f'{len(row)} columns long; the query {excerpt(names[0])} is '
                       f'{len(rows[0])}.')
  # Every row has the same length: one [N, columns] byte array does all rows at once.
  codes = np.frombuffer(''.join(rows).encode('ascii'), np.uint8).reshape(len(rows), -1)
  is_gap = (codes == ord(_GAP)) | (codes == ord(_INSERT_GAP))
  query_columns = ~is_gap[0]
  inserted_before = np.cumsum(~is_gap & ~query_columns, axis=1)[:, query_columns]
  deletions = np.diff(inserted_before, axis=1, prepend=0).astype(np.int32)
  kept = np.where(is_gap, ord(_GAP), codes)[:, query_columns].astype(np.uint8)
  sequences = [row.tobytes().decode('ascii').upper() for row in kept]
  return Msa(sequences, deletions, names)


ALIGNMENT_SUFFIXES = ('.a3m', '.sto')


def parse_msa(text: str | Iterable[str], source: str, max_sequences: int | None = None) -> Msa:
  """The `Msa` of an alignment's text (or lines), its format from the extension of `source`:
  '.a3m' or '.sto'. `max_sequences` caps the number of sequences kept (query included); a
  Stockholm text given as lines is read lazily so that only those are held."""
  suffix = os.path.splitext(source)[1]
  if suffix not in ALIGNMENT_SUFFIXES:
    raise ParseError(f'{source}: unknown alignment format {suffix!r}; expected one of '
                     f'{list(ALIGNMENT_SUFFIXES)}.')
  if suffix == '.sto':
    return parse_stockholm(text, source, max_sequences)
  msa = parse_a3m(text if isinstance(text, str) else ''.join(text), source)
  return msa if max_sequences is None else msa.truncate(max_sequences)


def read_msa(path: str | os.PathLike, max_sequences: int | None = None) -> Msa:
  """`parse_msa` of a file, read line by line. Unreadable, non-UTF-8 or malformed files raise
  `ParseError` naming the file."""
  try:
    with open(path, 'rb') as f:
      return parse_msa(_text_lines(f, str(path)), str(path), max_sequences)
  except OSError as e:
    raise ParseError(f'{path}: cannot read: {e.strerror or e}.') from e


def read_fasta(path: str | os.PathLike) -> tuple[list[str], list[str]]:
  """(sequences, descriptions) of a FASTA file; unreadable, non-UTF-8 or malformed files raise
  `ParseError` naming the file."""
  try:
    text = read_text(path)
  except OSError as e:
    raise ParseError(f'{path}: cannot read: {e.strerror or e}.') from e
  return parse_fasta(text, str(path))
