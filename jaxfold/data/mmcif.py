"""mmCIF structures as per-chain full sequences with atom37 coordinates aligned to them.

The template stack (Jumper et al. (2021) Suppl. 1.2.3 'Template search', 1.7.1 'Template
stack') and the training set (Suppl. 1.2.4 'Training data') read experimental structures
this way, as AlphaFold's `mmcif_parsing` does:
  * a chain's sequence is its polymer entity's `_entity_poly_seq`, so residues without
    coordinates are present in the sequence and get an all-zero atom mask;
  * a polymer is a protein chain when any of its monomers is a peptide-linking chem comp,
    and chains are named by their author chain ID (`auth_asym_id`);
  * only the first model is read; of an atom's alternate locations the one with the highest
    occupancy wins, the first listed on a tie (Biopython's choice, which AlphaFold inherits);
  * atoms are placed by `label_seq_id`, the position in the polymer sequence, so insertion
    codes and gaps of the author numbering need no special handling;
  * selenomethionine (MSE) reads as methionine with its SE atom in the SD slot; other
    modified residues take their parent's letter from the PDB chemical component table
    (Biopython's `protein_letters_3to1_extended`, AlphaFold's table), else 'X';
  * the header carries the release date (earliest `_pdbx_audit_revision_history` that is
    set; '?' and '.' are not), the resolution (first of refine, EM reconstruction, reflns that
    parses; 0.0 when none) and the experimental method.
A file that is not UTF-8, that Biopython's tokenizer cannot read, whose numbers do not parse or
whose first model has a non-finite coordinate ('nan', 'inf', or beyond 1e6 Å) raises
`MmcifError` naming it.
"""

import collections
import dataclasses
import io
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from Bio.Data import PDBData
from Bio.PDB.MMCIF2Dict import MMCIF2Dict

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import parsers

# Resolution items in AlphaFold's order of preference.
_RESOLUTION_KEYS = ('_refine.ls_d_res_high', '_em_3d_reconstruction.resolution',
                    '_reflns.d_resolution_high')
# The `_atom_site` columns read, by role.
_ATOM_SITE_COLUMNS = {
    'model': '_atom_site.pdbx_PDB_model_num', 'asym': '_atom_site.label_asym_id',
    'auth_asym': '_atom_site.auth_asym_id', 'seq': '_atom_site.label_seq_id',
    'comp': '_atom_site.label_comp_id', 'atom': '_atom_site.label_atom_id',
    'occupancy': '_atom_site.occupancy', 'x': '_atom_site.Cartn_x', 'y': '_atom_site.Cartn_y',
    'z': '_atom_site.Cartn_z'}
_UNSET = ('.', '?')
# Å: far beyond any structure (the PDB format stops at 1e4) and small enough that squared
# distances stay finite in float32; a larger coordinate is a corrupt file.
_MAX_COORDINATE = 1e6


class MmcifError(JaxfoldError):
  """An mmCIF file that cannot be read; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class MmcifHeader:
  release_date: str | None  # the first revision's date as written ('YYYY-MM-DD'); None if unset
  resolution: float  # Å; 0.0 when the file states none (e.g. NMR)
  structure_method: str  # lower-case `_exptl.method` values joined by ','


@dataclasses.dataclass(frozen=True)
class MmcifChain:
  """One protein chain: full polymer sequence and first-model coordinates, N = N_res."""
  chain_id: str  # author chain ID
  sequence: str  # one-letter codes of `_entity_poly_seq` ('X' for unknown residues)
  residue_names: tuple[str, ...]  # [N] the three-letter monomer names as in the file
  atom_positions: np.ndarray  # [N, 37, 3] float32 Å, zero where unobserved
  atom_mask: np.ndarray  # [N, 37] float32, 1.0 where the atom has coordinates


@dataclasses.dataclass(frozen=True)
class MmcifObject:
  file_id: str  # e.g. the lower-case PDB ID
  header: MmcifHeader
  chains: Mapping[str, MmcifChain]  # by author chain ID, in file order

  @property
  def chain_to_seqres(self) -> dict[str, str]:
    return {chain_id: chain.sequence for chain_id, chain in self.chains.items()}


def residue_letter(resname: str) -> str:
  """One-letter code of a monomer: standard, a modified residue's parent, else 'X'."""
  letter = rc.restype_3to1.get(resname) or PDBData.protein_letters_3to1_extended.get(resname)
  return letter if letter in rc.restype_order else 'X'


def _column(info: Mapping[str, list[str]], key: str, source: str) -> list[str]:
  if key not in info:
    raise MmcifError(f'{source}: no {key} item in the file.')
  return info[key]


def _loop(info: Mapping[str, list[str]], keys: Mapping[str, str],
          source: str) -> dict[str, list[str]]:
  """Columns of one mmCIF loop by role, checked to have equal lengths (a cut file does not)."""
  columns = {role: _column(info, key, source) for role, key in keys.items()}
  lengths = {len(values) for values in columns.values()}
  if len(lengths) != 1:
    category = next(iter(keys.values())).split('.')[0]
    raise MmcifError(f'{source}: the {category} loop has columns of different lengths '
                     f'{sorted(lengths)} (truncated or malformed file).')
  return columns


def _header(info: Mapping[str, list[str]]) -> MmcifHeader:
  dates = [date for date in info.get('_pdbx_audit_revision_history.revision_date', [])
           if date not in _UNSET]
  resolution = 0.0
  for key in _RESOLUTION_KEYS:
    try:
      resolution = float(info[key][0])
      break
    except (KeyError, IndexError, ValueError):  # absent, empty, or '?' / '.'
      continue
  return MmcifHeader(release_date=min(dates) if dates else None, resolution=resolution,
                     structure_method=','.join(m.lower() for m in info.get('_exptl.method', [])))


def _protein_entities(info: Mapping[str, list[str]],
                      source: str) -> dict[str, list[tuple[int, str]]]:
  """Polymer entity id -> [(monomer num, monomer name)] for entities with a peptide monomer.

  Of several monomers listed at one num (microheterogeneity) the first is kept, so the
  sequence has one letter per position.
  """
  poly = _loop(info, {'entity': '_entity_poly_seq.entity_id', 'num': '_entity_poly_seq.num',
                      'mon': '_entity_poly_seq.mon_id'}, source)
  comps = _loop(info, {'id': '_chem_comp.id', 'type': '_chem_comp.type'}, source)
  comp_type = dict(zip(comps['id'], (t.lower() for t in comps['type'])))
  entities = collections.defaultdict(dict)
  for entity, num, mon in zip(poly['entity'], poly['num'], poly['mon']):
    entities[entity].setdefault(int(num), mon)
  return {entity: sorted(monomers.items()) for entity, monomers in entities.items()
          if any('peptide' in comp_type.get(mon, '') for mon in monomers.values())}


def _first_model_atoms(info: Mapping[str, list[str]], source: str) -> dict[str, np.ndarray]:
  atoms = {role: np.asarray(values)
           for role, values in _loop(info, _ATOM_SITE_COLUMNS, source).items()}
  if not atoms['model'].size:
    raise MmcifError(f'{source}: the _atom_site loop has no atoms.')
  first = atoms['model'] == atoms['model'][0]
  return {role: values[first] for role, values in atoms.items()}


def _chain_atoms(atoms: Mapping[str, np.ndarray], monomers: Sequence[tuple[int, str]],
                 where: str) -> tuple[np.ndarray, np.ndarray]:
  """atom37 positions [N, 37, 3] and mask [N, 37] of one chain's atom-site rows; `where`
  names the chain in errors."""
  position_of = {num: i for i, (num, _) in enumerate(monomers)}
  positions = np.zeros((len(monomers), rc.atom_type_num, 3), np.float32)
  mask = np.zeros((len(monomers), rc.atom_type_num), np.float32)
  occupancy = np.full((len(monomers), rc.atom_type_num), -np.inf)
  for seq, comp, atom, occ, xyz in zip(
      atoms['seq'], atoms['comp'], atoms['atom'], atoms['occupancy'],
      zip(atoms['x'], atoms['y'], atoms['z'])):
    if seq in _UNSET:
      continue
    i = position_of.get(int(seq))
    if i is None or comp != monomers[i][1]:  # not in the sequence, or another microheterogeneity
      continue
    if comp == 'MSE' and atom == 'SE':
      atom = 'SD'
    slot = rc.atom_order.get(atom)
    if slot is None:  # hydrogens and atoms outside atom37
      continue
    occ = float(occ) if occ not in _UNSET else 1.0
    if occ > occupancy[i, slot]:  # alternate locations: highest occupancy, first on a tie
      xyz = [float(v) for v in xyz]
      if not all(abs(v) < _MAX_COORDINATE for v in xyz):  # nan fails the comparison too
        raise MmcifError(f'{where} residue {seq} {comp} atom {atom}: coordinates '
                         f'{" ".join(map(str, xyz))} are not finite (or beyond '
                         f'{_MAX_COORDINATE:g} Å)')
      positions[i, slot] = xyz
      occupancy[i, slot] = occ
      mask[i, slot] = 1.0
  return positions, mask


def _from_info(info: Mapping[str, list[str]], file_id: str, source: str) -> MmcifObject:
  entities = _protein_entities(info, source)
  if not entities:
    raise MmcifError(f'{source}: no protein chains (no polymer entity with peptide monomers).')
  asyms = _loop(info, {'id': '_struct_asym.id', 'entity': '_struct_asym.entity_id'}, source)
  atoms = _first_model_atoms(info, source)
  # Author chain IDs come from the atoms; a chain with no atom keeps its label ID.
  author_id = dict(zip(atoms['asym'].tolist(), atoms['auth_asym'].tolist()))
  chains = {}
  for asym, entity in zip(asyms['id'], asyms['entity']):
    if entity not in entities:
      continue
    monomers = entities[entity]
    rows = atoms['asym'] == asym
    chain_id = author_id.get(asym, asym)
    positions, mask = _chain_atoms({role: values[rows] for role, values in atoms.items()},
                                   monomers, f'{source}: chain {chain_id}')
    chains[chain_id] = MmcifChain(
        chain_id=chain_id, sequence=''.join(residue_letter(mon) for _, mon in monomers),
        residue_names=tuple(mon for _, mon in monomers), atom_positions=positions,
        atom_mask=mask)
  return MmcifObject(file_id=file_id, header=_header(info), chains=chains)


def parse(mmcif_string: str, file_id: str, source: str | None = None) -> MmcifObject:
  """Parses mmCIF text; `source` (default file_id) names the file in error messages."""
  source = source or file_id
  try:
    info = MMCIF2Dict(io.StringIO(mmcif_string))
  # Biopython's tokenizer raises ValueError (empty file, no data_ block, open quote) but also
  # others on malformed files (ZeroDivisionError for values after 'loop_' before any key).
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise MmcifError(f'{source}: not an mmCIF file ({type(e).__name__}: '
                     f'{parsers.excerpt(str(e))}).') from e
  info = {key: value if isinstance(value, list) else [value] for key, value in info.items()}
  try:
    return _from_info(info, file_id, source)
  except MmcifError:
    raise
  except ValueError as e:  # a number field (seq id, occupancy, coordinate) holding text
    raise MmcifError(f'{source}: unreadable number ({e}).') from e


def read(path: str | os.PathLike) -> MmcifObject:
  """Parses the mmCIF file at `path`; its file_id is the lower-case file stem (the PDB ID)."""
  path = pathlib.Path(path)
  try:
    text = parsers.read_text(path)
  except parsers.ParseError as e:  # not UTF-8: the message names the file and the byte
    raise MmcifError(str(e)) from e
  return parse(text, file_id=path.stem.lower(), source=str(path))
