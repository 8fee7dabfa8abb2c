"""One chain's raw features from its files: AlphaFold's `features.pkl` without running a search.

Jumper et al. (2021) Suppl. 1.2 'Data pipeline', from precomputed search results: the query
sequence, the alignments of Suppl. 1.2.2 (UniRef90, BFD, MGnify, in AlphaFold's merge order),
and the templates of Suppl. 1.2.3 from the HHsearch output and an mmCIF folder. The result
has the keys, shapes and dtypes of the `features.pkl` AlphaFold writes: sequence, MSA and
template features.

Two entry points: `raw_features` for prediction (a FASTA file and an alignment folder), and
`training_example` for one PDB chain of a training set (its alignment files, from a folder or
OpenFold's alignment database, and its mmCIF structure), which adds the ground truth of
Suppl. 1.9 and keeps only templates released well before the chain itself.
"""

import dataclasses
import datetime
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import ground_truth, hhr, mmcif, msa_features, parsers, templates

FeatureDict = dict[str, np.ndarray]
# An alignment file's contents, or its path (read lazily: a UniRef90 .sto can be large).
AlignmentSource = bytes | os.PathLike

# HHsearch outputs of an alignment folder: AlphaFold's and OpenProteinSet's name, then
# OpenFold's examples'.
HHR_FILES = ('pdb70_hits.hhr', 'hhsearch_output.hhr')
# AlphaFold's featurizer keeps up to 20 hits; the model samples `max_templates` of them.
MAX_TEMPLATE_HITS = 20
# OpenFold's training rule: a template must be released this long before the query chain,
# so that a structure cannot serve as its own template.
TEMPLATE_RELEASE_GAP = datetime.timedelta(days=60)
_STANDARD = frozenset(rc.restypes_with_x)

_I32, _F32, _BYTES = np.dtype(np.int32), np.dtype(np.float32), np.dtype(object)
# (dtype, rank) of every raw feature `assemble` returns, and of the labels a training example
# adds: the schema of a built training set.
RAW_FEATURES: Mapping[str, tuple[np.dtype, int]] = {
    'aatype': (_I32, 2), 'between_segment_residues': (_I32, 1), 'domain_name': (_BYTES, 1),
    'residue_index': (_I32, 1), 'seq_length': (_I32, 1), 'sequence': (_BYTES, 1),
    'deletion_matrix_int': (_I32, 2), 'msa': (_I32, 2), 'num_alignments': (_I32, 1),
    'msa_species_identifiers': (_BYTES, 1),
    'template_aatype': (_F32, 3), 'template_all_atom_masks': (_F32, 3),
    'template_all_atom_positions': (_F32, 4), 'template_domain_names': (_BYTES, 1),
    'template_sequence': (_BYTES, 1), 'template_sum_probs': (_F32, 2),
}
LABEL_FEATURES: Mapping[str, tuple[np.dtype, int]] = {
    'all_atom_positions': (_F32, 3), 'all_atom_mask': (_F32, 2),
    'atom14_gt_positions': (_F32, 3), 'atom14_gt_exists': (_F32, 2),
    'atom14_alt_gt_positions': (_F32, 3), 'atom14_alt_gt_exists': (_F32, 2),
    'atom14_atom_exists': (_F32, 2), 'atom14_atom_is_ambiguous': (_F32, 2),
    'atom37_atom_exists': (_F32, 2), 'residx_atom14_to_atom37': (_I32, 2),
    'residx_atom37_to_atom14': (_I32, 2),
    'backbone_affine_tensor': (_F32, 2), 'backbone_affine_mask': (_F32, 1),
    'chi_angles': (_F32, 2), 'chi_angles_sin_cos': (_F32, 3), 'chi_mask': (_F32, 2),
    'rigidgroups_gt_frames': (_F32, 3), 'rigidgroups_alt_gt_frames': (_F32, 3),
    'rigidgroups_gt_exists': (_F32, 2), 'rigidgroups_group_exists': (_F32, 2),
    'rigidgroups_group_is_ambiguous': (_F32, 2),
    'pseudo_beta': (_F32, 2), 'pseudo_beta_mask': (_F32, 1), 'resolution': (_F32, 0),
}
TRAINING_FEATURES: Mapping[str, tuple[np.dtype, int]] = {**RAW_FEATURES, **LABEL_FEATURES}


@dataclasses.dataclass(frozen=True)
class RawFeatures:
  """What `raw_features` made and what it left out."""
  features: FeatureDict
  description: str  # the FASTA description of the query
  skipped_templates: tuple[str, ...]  # one line per template hit not used, with the reason


def read_query(fasta_path: str | os.PathLike) -> tuple[str, str]:
  """(sequence, description) of a FASTA file holding exactly one protein sequence.

  Letters other than the 20 amino acids and X are rejected: AlphaFold would silently read
  them as unknown residues, which is rarely what the user meant.
  """
  sequences, descriptions = parsers.read_fasta(fasta_path)
  if len(sequences) != 1:
    raise parsers.ParseError(f'{fasta_path}: expected one sequence, found {len(sequences)} '
                             '(jaxfold predicts monomers)')
  sequence = sequences[0]
  unknown = sorted(set(sequence.upper()) - _STANDARD)
  if unknown:
    position = min(sequence.upper().index(letter) for letter in unknown)
    raise parsers.ParseError(
        f'{fasta_path}: unknown residue {sequence[position]!r} at position {position + 1} of '
        f'{parsers.excerpt(descriptions[0])} (use one of {"".join(rc.restypes_with_x)}; X for '
        'unknown)')
  return sequence.upper(), descriptions[0]


def _label(source: str, name: str, value: AlignmentSource) -> str:
  """How errors name an alignment file: its path, or '<source>/<name>' for contents."""
  return f'{source}/{name}' if isinstance(value, bytes) else str(value)


def _read_msa(name: str, source: AlignmentSource, cap: int | None) -> parsers.Msa:
  if isinstance(source, bytes):
    return parsers.parse_msa(parsers.decode_text(source, name), name, cap)
  return parsers.read_msa(source, cap)


def _read_hits(name: str, source: AlignmentSource) -> list[hhr.TemplateHit]:
  if isinstance(source, bytes):
    return hhr.parse_hhr(parsers.decode_text(source, name), name)
  return hhr.read_hhr(source)


def _check_query_row(label: str, row: str, sequence: str, description: str) -> None:
  """An alignment's first row must be the query, one column per residue: a gap in it ('-',
  which A3M allows) would give the MSA more columns than the sequence features have."""
  if row == sequence:
    return
  if row.replace('-', '') == sequence:
    raise parsers.ParseError(
        f'{label}: the query row has a gap at column {row.index("-") + 1} ({len(row)} columns '
        f'for {len(sequence)} residues); the query must have no gap columns')
  raise parsers.ParseError(
      f'{label}: its first sequence is not the query {parsers.excerpt(description)} '
      f'({len(row)} columns, the query has {len(sequence)} residues)')


def assemble(sequence: str, description: str, alignments: Mapping[str, AlignmentSource],
             mmcif_dir: str | os.PathLike | None, *,
             max_template_date: datetime.date | str | None = None,
             max_template_hits: int = MAX_TEMPLATE_HITS,
             source: str = '') -> tuple[FeatureDict, tuple[str, ...]]:
  """(raw features, skipped template hits) of `sequence` from its alignment files.

  alignments: file name -> contents or path: uniref90_hits / bfd_*_hits / mgnify_hits
    (.sto or .a3m; see msa_features.ALIGNMENT_FILES) and optionally an HHsearch output
    (`HHR_FILES`). Every alignment's first row must be the query.
  mmcif_dir: template structures (`<pdb_id>.cif`); None gives no templates, as does the
    absence of HHsearch output.
  source: names the alignments (their folder) in error messages.
  """
  if max_template_date is not None:
    max_template_date = templates.parse_date(max_template_date, 'max_template_date')
  selected = msa_features.select_alignments(alignments)
  if not selected:
    stems = [stem for _, stems, _ in msa_features.ALIGNMENT_FILES for stem in stems]
    raise FileNotFoundError(f'{source}: no alignment file; expected one of {stems} with a '
                            f'suffix in {list(parsers.ALIGNMENT_SUFFIXES)}')
  msas = []
  for name, cap in selected:
    label = _label(source, name, alignments[name])
    msa = _read_msa(label, alignments[name], cap)
    _check_query_row(label, msa.sequences[0], sequence, description)
    msas.append(msa)
  features = msa_features.make_sequence_features(sequence, description, len(sequence))
  features.update(msa_features.make_msa_features(msas))
  hits_name = next((name for name in HHR_FILES if name in alignments), None)
  if mmcif_dir is None or hits_name is None:
    features.update(templates.empty_template_features(len(sequence)))
    return features, ()
  if not pathlib.Path(mmcif_dir).is_dir():
    raise FileNotFoundError(f'{mmcif_dir}: mmCIF folder not found')
  hits = _read_hits(_label(source, hits_name, alignments[hits_name]), alignments[hits_name])
  search = templates.template_features(
      sequence, hits, mmcif_dir,
      max_template_date=max_template_date, max_hits=max_template_hits)
  features.update(search.features)
  return features, search.skipped


def raw_features(fasta_path: str | os.PathLike, alignment_dir: str | os.PathLike,
                 mmcif_dir: str | os.PathLike | None = None, *,
                 max_template_date: datetime.date | str | None = None,
                 max_template_hits: int = MAX_TEMPLATE_HITS) -> RawFeatures:
  """AlphaFold's raw feature dict of the FASTA's sequence and its alignment folder."""
  sequence, description = read_query(fasta_path)
  folder = pathlib.Path(alignment_dir)
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: alignment folder not found')
  files = {path.name: path for path in folder.iterdir() if path.is_file()}
  features, skipped = assemble(sequence, description, files, mmcif_dir,
                               max_template_date=max_template_date,
                               max_template_hits=max_template_hits, source=str(folder))
  return RawFeatures(features, description, skipped)


def training_example(chain_id: str, alignments: Mapping[str, AlignmentSource],
                     structure: mmcif.MmcifObject, mmcif_dir: str | os.PathLike | None, *,
                     max_template_date: datetime.date | str | None = None,
                     max_template_hits: int = MAX_TEMPLATE_HITS) -> FeatureDict:
  """Raw features and ground truth of one PDB chain ('<pdb>_<chain>') of a training set.

  The sequence is the chain's full polymer sequence (SEQRES), as OpenProteinSet's alignments
  were computed; residues without coordinates get zero ground-truth masks. Templates must be
  released `TEMPLATE_RELEASE_GAP` before the chain (and not after `max_template_date`).
  """
  chain = chain_id.rpartition('_')[2]
  if chain not in structure.chains:
    raise JaxfoldError(f'{chain_id}: {structure.file_id}.cif has no protein chain {chain!r} '
                   f'(chains: {", ".join(structure.chains)})')
  found = structure.chains[chain]
  cutoff = None if max_template_date is None else templates.parse_date(
      max_template_date, 'max_template_date')
  if structure.header.release_date is not None:
    released = templates.parse_date(structure.header.release_date,
                                    f'{structure.file_id}.cif: release date')
    cutoff = min(filter(None, (cutoff, released - TEMPLATE_RELEASE_GAP)))
  features, _ = assemble(found.sequence, chain_id, alignments, mmcif_dir,
                         max_template_date=cutoff, max_template_hits=max_template_hits,
                         source=chain_id)
  labels = ground_truth.ground_truth_features(
      np.argmax(features['aatype'], axis=-1), found.atom_positions, found.atom_mask,
      structure.header.resolution, source=chain_id)
  features.update(labels)
  return features
