"""HHsearch / HHblits result files (.hhr) as template hits.

The template search of Jumper et al. (2021) Suppl. 1.2.3 'Template search' runs HHsearch
against PDB70; each hit's pairwise alignment becomes a `TemplateHit` with the fields of
AlphaFold's `parsers.TemplateHit`: the aligned query and hit strings (gaps '-') and, per
alignment column, the 0-based residue index in the query and in the hit (-1 at a gap).

An .hhr file is a header (first line 'Query ...'), a summary table, then one block per hit:
  No 2
  >2CRB_A nuclear receptor binding factor 2; ...
  Probab=6.35  E-value=4.7e+02  ...  Aligned_cols=20 ...  Sum_probs=11.0  Template_Neff=5.700
  Q query            11 HKAAEHHEQAAKHHHAAAEH   30 (73)
  T 2CRB_A           32 EEAISCHRKATTYLSEAMKL   51 (97)
with the alignment wrapped over several Q/T line pairs and annotation lines (ss_pred,
ss_dssp, Consensus, Confidence) in between, which are skipped.
"""

import dataclasses
import math
import os
import re

from jaxfold.data import parsers

# 'No 12' opens a hit block. Numbers have at most 9 digits: int() refuses very long ones.
_BLOCK_START = re.compile(r'No (\d{1,9})\s*$')
# One alignment line: Q/T, name (first word of the header, at most 14 characters), start,
# aligned residues, end, (length of the full sequence).
_ALIGNMENT_LINE = re.compile(
    r'([QT]) (\S+)\s+(\d{1,9}) ([A-Z-]+)\s+(\d{1,9}) \(\d+\)\s*$')
_ANNOTATION_NAMES = ('ss_dssp', 'ss_pred', 'Consensus')


class HhrError(parsers.ParseError):
  """A malformed .hhr file; the message names the file, the line, the hit and the problem."""


@dataclasses.dataclass(frozen=True)
class TemplateHit:
  """One HHsearch hit; the four alignment fields have one entry per alignment column."""
  index: int  # the hit's rank in the file, from 1
  name: str  # the hit's header line without '>', e.g. '2CRB_A nuclear receptor ...'
  aligned_cols: int
  sum_probs: float | None  # None when the summary line has no Sum_probs
  query: str  # the aligned part of the query, with '-' gaps
  hit_sequence: str  # the aligned part of the hit, with '-' gaps
  indices_query: tuple[int, ...]  # 0-based query residue index per column, -1 at a gap
  indices_hit: tuple[int, ...]  # 0-based hit residue index per column, -1 at a gap


def _residue_indices(segment: str, start: int) -> list[int]:
  """0-based index of each residue of an aligned segment starting at `start`; -1 at gaps."""
  indices, next_index = [], start
  for symbol in segment:
    if symbol == '-':
      indices.append(-1)
    else:
      indices.append(next_index)
      next_index += 1
  return indices


def _parse_hit(lines: list[str], first_line: int, source: str) -> TemplateHit:
  """One hit block; `first_line` is the file's line number of its 'No' line."""
  index = int(_BLOCK_START.match(lines[0]).group(1))

  def error(offset: int, problem: str) -> HhrError:
    return HhrError(f'{source}: line {first_line + offset}: hit No {index}: {problem}')

  if len(lines) < 3 or not lines[1].startswith('>') or not lines[1][1:].strip():
    raise error(min(1, len(lines) - 1), f"expected a '>name' line after 'No {index}'.")
  summary = dict(re.findall(r'(\w+)=(\S+)', lines[2]))
  if 'Aligned_cols' not in summary:
    raise error(2, f'summary line {parsers.excerpt(lines[2])} has no Aligned_cols.')
  try:
    aligned_cols = int(summary['Aligned_cols'])
    sum_probs = float(summary['Sum_probs']) if 'Sum_probs' in summary else None
  except ValueError as e:
    raise error(2, f'unreadable summary line {parsers.excerpt(lines[2])} ({e}).') from e
  if sum_probs is not None and not math.isfinite(sum_probs):
    raise error(2, f'unreadable summary line {parsers.excerpt(lines[2])} '
                f'(Sum_probs={sum_probs}).')

  segments = {'Q': [], 'T': []}
  for offset, line in enumerate(lines[3:], start=3):
    if line[:2] not in ('Q ', 'T '):
      continue
    fields = line[2:].split(maxsplit=1)
    if fields and fields[0] in _ANNOTATION_NAMES:
      continue
    match = _ALIGNMENT_LINE.match(line)
    if not match:
      raise error(offset, f'unreadable alignment line {parsers.excerpt(line)}.')
    kind, _, start, residues, end = match.groups()
    start, end = int(start) - 1, int(end)
    if start < 0:
      raise error(offset, f'alignment line {parsers.excerpt(line)} starts at residue 0 '
                  '(numbered from 1).')
    if kind == 'Q' and end - start != len(residues) - residues.count('-'):
      raise error(offset, f'query line {parsers.excerpt(line)} spans residues {start + 1}-'
                  f'{end} but holds {len(residues) - residues.count("-")}.')
    segments[kind].append((residues, start))
  if len(segments['Q']) != len(segments['T']) or not segments['Q']:
    raise error(0, f"{len(segments['Q'])} query lines but {len(segments['T'])} hit lines "
                '(truncated block?).')
  for (query, _), (hit, _) in zip(segments['Q'], segments['T']):
    if len(query) != len(hit):
      raise error(0, f'aligned query {parsers.excerpt(query)} and hit '
                  f'{parsers.excerpt(hit)} differ in length.')
  return TemplateHit(
      index=index, name=lines[1][1:], aligned_cols=aligned_cols, sum_probs=sum_probs,
      query=''.join(s for s, _ in segments['Q']),
      hit_sequence=''.join(s for s, _ in segments['T']),
      indices_query=tuple(i for s, start in segments['Q'] for i in _residue_indices(s, start)),
      indices_hit=tuple(i for s, start in segments['T'] for i in _residue_indices(s, start)))


def parse_hhr(hhr_string: str, source: str = '<hhr string>') -> list[TemplateHit]:
  """The hits of an .hhr text, in file order; `source` names the file in error messages."""
  lines = hhr_string.split('\n')
  if not lines[0].startswith('Query '):
    raise HhrError(f"{source}: not an HHsearch .hhr file (it does not start with 'Query').")
  starts = [i for i, line in enumerate(lines) if _BLOCK_START.match(line)]
  return [_parse_hit(lines[begin:end], begin + 1, source)
          for begin, end in zip(starts, starts[1:] + [len(lines)])]


def read_hhr(path: str | os.PathLike) -> list[TemplateHit]:
  """The hits of the .hhr file at `path`."""
  return parse_hhr(parsers.read_text(path), source=str(path))
