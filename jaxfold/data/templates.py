"""Template features from HHsearch hits and a folder of mmCIF files.

Jumper et al. (2021) Suppl. 1.2.3 'Template search': the hits of an HHsearch run against
PDB70 are taken best `sum_probs` first, filtered, and each one that survives becomes one
template aligned to the query, until `max_hits` templates are found. This follows
AlphaFold's `templates.HhsearchHitFeaturizer`:
  * prefilter (before reading the structure): a hit aligning at most `min_align_ratio` of
    the query, a hit shorter than `min_length` residues, and a hit that is a substring of the
    query longer than `max_subsequence_ratio` of it (a copy of the query) are dropped;
  * a structure released after `max_template_date` is dropped;
  * the hit's residues are located in the mmCIF chain's full sequence: exact match in the
    named chain, then in any chain, then with 'X' as a wildcard; failing that, the hit is
    re-aligned to the named chain's sequence (Biopython's PairwiseAligner where AlphaFold
    runs kalign) and kept when >= 90 % of the shorter sequence is identical;
  * arginines whose NH1 is further from CD than NH2 get the two swapped (mislabelled atoms);
  * a template with fewer than 5 atoms over the aligned residues is dropped.
A hit whose mmCIF file is missing or unreadable (malformed, not UTF-8, a non-finite
coordinate) is skipped with a logged warning naming it; with a date cut-off, a structure with
no release date or an unreadable one is skipped too.

Features, per template t and query residue i ('-' where the query residue is unaligned):
  template_aatype [T, N, 22] one-hot in HHblits order, template_all_atom_masks [T, N, 37],
  template_all_atom_positions [T, N, 37, 3], template_domain_names [T] (b'2crb_A'),
  template_sequence [T] (bytes, length N), template_sum_probs [T, 1].
With no template the arrays have T = 0, which the input pipeline pads to `max_templates`
with `template_mask` 0.
"""

import dataclasses
import datetime
import logging
import os
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np
from Bio.Align import PairwiseAligner, substitution_matrices

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import hhr, mmcif

logger = logging.getLogger(__name__)

TEMPLATE_FEATURES = {
    'template_aatype': np.float32,
    'template_all_atom_masks': np.float32,
    'template_all_atom_positions': np.float32,
    'template_domain_names': object,
    'template_sequence': object,
    'template_sum_probs': np.float32,
}

# AlphaFold keeps a re-aligned template only this similar to the hit (wrt the shorter one).
_MIN_REALIGN_IDENTITY = 0.9
# Alanine, the smallest residue, has 5 atoms: a template with fewer has no usable residue.
_MIN_TEMPLATE_ATOMS = 5
# PDB ID (4 characters), '_', chain ID ('.' when unknown), at the start of a hit name.
_HIT_NAME = re.compile(r'([a-zA-Z\d]{4})_([a-zA-Z0-9.]+)')
_ISO_DATE = re.compile(r'[0-9]{4}-[0-9]{2}-[0-9]{2}')


class SkipHit(Exception):
  """Why one hit yields no template; the featurizer records it and moves on."""


class TemplateFileError(SkipHit):
  """The hit's mmCIF file is missing or unreadable: a set-up problem, logged as a warning."""


@dataclasses.dataclass(frozen=True)
class TemplateSearchResult:
  features: dict[str, np.ndarray]  # TEMPLATE_FEATURES keys, leading axis T
  skipped: tuple[str, ...]  # one line per hit not used: its name and the reason


def parse_date(text: str | datetime.date, what: str) -> datetime.date:
  """The date `text` ('YYYY-MM-DD'; a date passes through); `what` names it in the error:
  JaxfoldError('--max-template-date 2021-13-01: not a date (YYYY-MM-DD): month must be in
  1..12')."""
  if isinstance(text, datetime.date):
    return text
  problem = ''
  if isinstance(text, str) and _ISO_DATE.fullmatch(text):
    try:
      return datetime.date.fromisoformat(text)
    except ValueError as e:
      problem = f': {e}'
  raise JaxfoldError(f'{what} {text}: not a date (YYYY-MM-DD){problem}')


def empty_template_features(num_res: int) -> dict[str, np.ndarray]:
  """Features of zero templates for a query of `num_res` residues (T = 0)."""
  return {
      'template_aatype': np.zeros((0, num_res, len(rc.restypes_with_x_and_gap)), np.float32),
      'template_all_atom_masks': np.zeros((0, num_res, rc.atom_type_num), np.float32),
      'template_all_atom_positions': np.zeros((0, num_res, rc.atom_type_num, 3), np.float32),
      'template_domain_names': np.zeros((0,), object),
      'template_sequence': np.zeros((0,), object),
      'template_sum_probs': np.zeros((0, 1), np.float32),
  }


def hit_pdb_id_and_chain(hit: hhr.TemplateHit) -> tuple[str, str]:
  """('2crb', 'A') from a hit named '2CRB_A ...'."""
  match = _HIT_NAME.match(hit.name)
  if not match:
    raise SkipHit('the name does not start with PDBID_chain')
  return match.group(1).lower(), match.group(2)


def query_to_hit_mapping(hit: hhr.TemplateHit, query_sequence: str) -> dict[int, int]:
  """Query residue index -> index into the hit's gapless aligned residues.

  HHsearch numbers the query as it was searched; the aligned query stretch is located in
  `query_sequence` so the mapping refers to the sequence being featurized.
  """
  if not any(q >= 0 and t >= 0 for q, t in zip(hit.indices_query, hit.indices_hit)):
    raise SkipHit('no query residue is aligned to a hit residue')
  offset = query_sequence.find(hit.query.replace('-', ''))
  if offset < 0:
    raise SkipHit(f'its aligned query residues {hit.query} are not in the query sequence')
  hit_length = len(hit.hit_sequence.replace('-', ''))
  first_query = min(i for i in hit.indices_query if i >= 0)
  first_hit = min(i for i in hit.indices_hit if i >= 0)
  mapping = {}
  for q, t in zip(hit.indices_query, hit.indices_hit):
    if q < 0 or t < 0:
      continue
    q, t = q - first_query + offset, t - first_hit
    if t < hit_length and q < len(query_sequence):
      mapping[q] = t
  return mapping


def _prefilter(hit: hhr.TemplateHit, query_sequence: str, min_align_ratio: float,
               min_length: int, max_subsequence_ratio: float) -> None:
  template_sequence = hit.hit_sequence.replace('-', '')
  align_ratio = hit.aligned_cols / len(query_sequence)
  length_ratio = len(template_sequence) / len(query_sequence)
  if align_ratio <= min_align_ratio:
    raise SkipHit(f'aligns {align_ratio:.3f} of the query (<= {min_align_ratio})')
  if template_sequence in query_sequence and length_ratio > max_subsequence_ratio:
    raise SkipHit(f'is a copy of the query ({length_ratio:.3f} of its length)')
  if len(template_sequence) < min_length:
    raise SkipHit(f'has {len(template_sequence)} residues (< {min_length})')


def _locate(template_sequence: str, chain_id: str,
            structure: mmcif.MmcifObject) -> tuple[str, int] | None:
  """(chain, offset of the hit's residues in its sequence): exact, any chain, X-wildcard."""
  named = structure.chains.get(chain_id)
  if named is not None and template_sequence in named.sequence:
    return chain_id, named.sequence.find(template_sequence)
  for other_id, chain in structure.chains.items():
    if template_sequence in chain.sequence:
      return other_id, chain.sequence.find(template_sequence)
  # 'X' in the hit matches anything; anything in the hit also matches an 'X' in the chain.
  wildcard = re.compile(''.join('.' if aa == 'X' else f'(?:{aa}|X)' for aa in template_sequence))
  for other_id, chain in structure.chains.items():
    match = wildcard.search(chain.sequence)
    if match:
      return other_id, match.start()
  return None


def _aligner() -> PairwiseAligner:
  # Global with free end gaps: the hit is usually a stretch of the full chain.
  aligner = PairwiseAligner(mode='global', open_gap_score=-11.0, extend_gap_score=-1.0,
                            end_gap_score=0.0)
  aligner.substitution_matrix = substitution_matrices.load('BLOSUM62')
  return aligner


def realign(old_sequence: str, new_sequence: str) -> dict[int, int]:
  """Index map old -> new residue of two versions of a template's sequence.

  Raises SkipHit when fewer than 90 % of the shorter sequence's residues are identical.
  """
  aligner = _aligner()
  known = set(aligner.substitution_matrix.alphabet)
  alignment = aligner.align(*(''.join(aa if aa in known else 'X' for aa in seq)
                                 for seq in (old_sequence, new_sequence)))[0]
  old_to_new, same = {}, 0
  for (old_start, old_end), (new_start, new_end) in zip(*alignment.aligned):
    for i, j in zip(range(old_start, old_end), range(new_start, new_end)):
      old_to_new[i] = j
      same += old_sequence[i] == new_sequence[j]
  identity = same / min(len(old_sequence), len(new_sequence))
  if identity < _MIN_REALIGN_IDENTITY:
    raise SkipHit(f'hit sequence {old_sequence} is {identity:.0%} identical to the chain '
                  f'sequence {new_sequence} after re-alignment (< 90 %)')
  return old_to_new


def chain_atoms(chain: mmcif.MmcifChain,
                zero_center: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """A chain's atom37 positions [N, 37, 3] and mask [N, 37], arginine NH1/NH2 made canonical.

  NH1 is by convention the guanidinium nitrogen nearer CD; where a file has them the other
  way round the two are swapped, as AlphaFold does for templates. With `zero_center` the
  chain's atoms are moved to have their centroid at the origin, as OpenFold does.
  """
  # float32 throughout, as OpenFold centres; AlphaFold only copies the file's float32 values.
  positions, mask = chain.atom_positions.copy(), chain.atom_mask.copy()
  cd, nh1, nh2 = (rc.atom_order[name] for name in ('CD', 'NH1', 'NH2'))
  is_arg = np.array([name == 'ARG' for name in chain.residue_names], bool)
  complete = is_arg & (mask[:, [cd, nh1, nh2]] > 0).all(axis=-1)
  swap = complete & (np.linalg.norm(positions[:, nh1] - positions[:, cd], axis=-1) >
                     np.linalg.norm(positions[:, nh2] - positions[:, cd], axis=-1))
  positions[swap, nh1], positions[swap, nh2] = positions[swap, nh2], positions[swap, nh1]
  if zero_center:
    observed = mask > 0
    positions[observed] -= positions[observed].mean(axis=0)
  return positions, mask


def _check_release(released: str | None, cutoff: datetime.date, path: pathlib.Path) -> None:
  """Raises SkipHit unless the structure at `path` was released on or before `cutoff`; a
  file without a readable release date is a TemplateFileError (warned about)."""
  if released is None:
    raise TemplateFileError(f'{path} has no release date (the cut-off is {cutoff})')
  try:
    date = parse_date(released, f'{path}: release date')
  except JaxfoldError as e:
    raise TemplateFileError(str(e)) from e
  if date > cutoff:
    raise SkipHit(f'released {released}, after the cut-off {cutoff}')


def _hit_features(hit: hhr.TemplateHit, query_sequence: str, pdb_id: str, chain_id: str,
                  structure: mmcif.MmcifObject, zero_center: bool) -> dict[str, np.ndarray]:
  """One template's features (no leading T axis); raises SkipHit."""
  mapping = query_to_hit_mapping(hit, query_sequence)
  template_sequence = hit.hit_sequence.replace('-', '')
  located = _locate(template_sequence, chain_id, structure)
  if located is not None:
    chain_id, offset = located
  else:  # PDB70 holds another version of the sequence than the mmCIF file
    if chain_id not in structure.chains and len(structure.chains) == 1:
      chain_id = next(iter(structure.chains))
    if chain_id not in structure.chains:
      raise SkipHit(f'chain {chain_id} is not a protein chain of {pdb_id} '
                    f'(chains {sorted(structure.chains)})')
    template_sequence = structure.chains[chain_id].sequence
    old_to_new = realign(hit.hit_sequence.replace('-', ''), template_sequence)
    mapping = {q: old_to_new[t] for q, t in mapping.items() if t in old_to_new}
    offset = 0
  positions, mask = chain_atoms(structure.chains[chain_id], zero_center)
  num_res = len(query_sequence)
  query_index = np.fromiter(mapping.keys(), int, len(mapping))
  chain_index = np.fromiter(mapping.values(), int, len(mapping)) + offset
  template_positions = np.zeros((num_res, rc.atom_type_num, 3), np.float32)
  template_mask = np.zeros((num_res, rc.atom_type_num), np.float32)
  template_positions[query_index] = positions[chain_index]
  template_mask[query_index] = mask[chain_index]
  if template_mask.sum() < _MIN_TEMPLATE_ATOMS:
    raise SkipHit(f'{int(template_mask.sum())} atoms over the aligned residues of '
                  f'{pdb_id}_{chain_id} (< {_MIN_TEMPLATE_ATOMS})')
  sequence = ['-'] * num_res
  for q, t in mapping.items():
    sequence[q] = template_sequence[t]
  sequence = ''.join(sequence)
  return {
      'template_aatype': rc.sequence_to_onehot(sequence, rc.HHBLITS_AA_TO_ID),
      'template_all_atom_masks': template_mask,
      'template_all_atom_positions': template_positions,
      'template_domain_names': f'{pdb_id}_{chain_id}'.encode(),
      'template_sequence': sequence.encode(),
      'template_sum_probs': [hit.sum_probs or 0.0],
  }


def template_features(query_sequence: str, hits: Sequence[hhr.TemplateHit],
                      mmcif_dir: str | os.PathLike, *,
                      max_template_date: datetime.date | str | None = None,
                      max_hits: int = 20, min_align_ratio: float = 0.1, min_length: int = 10,
                      max_subsequence_ratio: float = 0.95,
                      zero_center: bool = False) -> TemplateSearchResult:
  """Template features of the best `max_hits` usable hits; mmCIFs read from `mmcif_dir`.

  `max_template_date` (ISO 'YYYY-MM-DD' or a date) drops structures released after it, and
  those whose release date is unset or unreadable; None keeps every date. AlphaFold's
  featurizer finds 20 hits (`max_hits`), of which the model samples `max_templates` (4); it
  passes `max_subsequence_ratio=1.0`, which never drops a copy of the query. `zero_center`
  centres each template chain at the origin as OpenFold's pipeline does (the model's template
  features are translation-invariant).
  """
  if not query_sequence:
    raise ValueError('template_features: the query sequence is empty.')
  if max_template_date is not None:
    max_template_date = parse_date(max_template_date, 'max_template_date')
  mmcif_dir = pathlib.Path(mmcif_dir)
  structures: dict[str, mmcif.MmcifObject] = {}
  found: list[Mapping[str, np.ndarray]] = []
  skipped = []
  for hit in sorted(hits, key=lambda h: -(h.sum_probs or 0.0)):
    if len(found) >= max_hits:
      break
    try:
      pdb_id, chain_id = hit_pdb_id_and_chain(hit)
      _prefilter(hit, query_sequence, min_align_ratio, min_length, max_subsequence_ratio)
      path = mmcif_dir / f'{pdb_id}.cif'
      if pdb_id not in structures:
        if not path.is_file():
          raise TemplateFileError(f'no mmCIF file {path}')
        try:
          structures[pdb_id] = mmcif.read(path)
        except (mmcif.MmcifError, OSError) as e:
          raise TemplateFileError(str(e)) from e
      structure = structures[pdb_id]
      if max_template_date is not None:
        _check_release(structure.header.release_date, max_template_date, path)
      found.append(_hit_features(hit, query_sequence, pdb_id, chain_id, structure,
                                 zero_center))
    except SkipHit as e:
      reason = f'hit No {hit.index} {hit.name.split()[0]}: {e}'
      skipped.append(reason)
      logger.log(logging.WARNING if isinstance(e, TemplateFileError) else logging.INFO,
                 'skipped %s', reason)
  if not found:
    return TemplateSearchResult(empty_template_features(len(query_sequence)), tuple(skipped))
  features = {name: np.stack([f[name] for f in found]).astype(dtype)
              for name, dtype in TEMPLATE_FEATURES.items()}
  return TemplateSearchResult(features, tuple(skipped))
