"""The `Protein` record in atom37 layout, and its PDB / mmCIF readers and writers.

A structure is per-residue arrays (Jumper et al. (2021) Suppl. 1.2.1 'Representations'):
  atom_positions [N_res, 37, 3] Å, atom_mask [N_res, 37], aatype [N_res] (0-19, 20 = UNK),
  residue_index [N_res] (author numbering), chain_index [N_res] (0-based), b_factors
  [N_res, 37].
A prediction's per-residue pLDDT (Suppl. Alg. 29 'predictPerResidueLDDT_Ca') goes in the
B-factor column of every atom of the residue.

Parsing follows AlphaFold: non-standard residue names become UNK, atoms outside the atom37
alphabet (hydrogens, ligand atoms) are dropped, and residues left with no atom are skipped.
The PDB writer emits exactly AlphaFold's `protein.to_pdb` text.
"""

import collections
import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from Bio.PDB import MMCIFParser, PDBParser
from Bio.PDB.mmcifio import MMCIFIO
from Bio.PDB.Structure import Structure

from jaxfold.common import residue_constants as rc

# Every one-character chain ID a PDB file can hold, in the order chains are labelled.
PDB_CHAIN_IDS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
PDB_MAX_CHAINS = len(PDB_CHAIN_IDS)  # 62

# _chem_comp rows for the mmCIF writer: (id, type, name); glycine has no L/D form.
_CHEM_COMP = tuple(
    (resname, 'peptide linking' if resname == 'GLY' else 'L-peptide linking', name)
    for resname, name in zip(rc.resnames[:rc.restype_num], (
        'ALANINE', 'ARGININE', 'ASPARAGINE', 'ASPARTIC ACID', 'CYSTEINE', 'GLUTAMINE',
        'GLUTAMIC ACID', 'GLYCINE', 'HISTIDINE', 'ISOLEUCINE', 'LEUCINE', 'LYSINE',
        'METHIONINE', 'PHENYLALANINE', 'PROLINE', 'SERINE', 'THREONINE', 'TRYPTOPHAN',
        'TYROSINE', 'VALINE')))


@dataclasses.dataclass(frozen=True)
class Protein:
  """One model of a protein structure, atom37 layout; all arrays numpy, N = N_res."""
  atom_positions: np.ndarray  # [N, 37, 3] Å
  aatype: np.ndarray  # [N] int, index into rc.restypes, 20 = UNK
  atom_mask: np.ndarray  # [N, 37] 1.0 where the atom has coordinates
  residue_index: np.ndarray  # [N] int, as numbered in the PDB (not necessarily contiguous)
  chain_index: np.ndarray  # [N] int, 0-based
  b_factors: np.ndarray  # [N, 37] Å^2, or pLDDT for predictions

  def __post_init__(self):
    num_res = np.shape(self.aatype)[0] if np.ndim(self.aatype) == 1 else None
    expected = {'atom_positions': (num_res, rc.atom_type_num, 3), 'aatype': (num_res,),
                'atom_mask': (num_res, rc.atom_type_num), 'residue_index': (num_res,),
                'chain_index': (num_res,), 'b_factors': (num_res, rc.atom_type_num)}
    for field, shape in expected.items():
      if num_res is None or np.shape(getattr(self, field)) != shape:
        raise ValueError(f'Protein.{field} has shape {np.shape(getattr(self, field))}; expected '
                         f'{shape} (N_res from aatype {np.shape(self.aatype)}).')
    if len(np.unique(self.chain_index)) > PDB_MAX_CHAINS:
      raise ValueError(f'Protein has {len(np.unique(self.chain_index))} chains; at most '
                       f'{PDB_MAX_CHAINS} can be written to PDB.')


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------

def _from_structure(structure: Structure, chain_id: str | None, source: str) -> Protein:
  """Protein of the single model of a Biopython structure, optionally one chain only."""
  models = list(structure.get_models())
  if len(models) != 1:
    raise ValueError(f'{source}: expected exactly one model, found {len(models)}'
                     + (' (no ATOM/HETATM records)' if not models else '') + '.')
  chains = [chain for chain in models[0] if chain_id is None or chain.id == chain_id]
  if not chains:
    raise ValueError(f'{source}: no chain {chain_id!r}; chains present: '
                     f'{[chain.id for chain in models[0]]}.')

  residues = []  # (aatype, positions, mask, b_factors, residue number, chain id)
  for chain in chains:
    for residue in chain:
      _, number, insertion_code = residue.id
      if insertion_code != ' ':
        raise ValueError(f'{source}: insertion code {insertion_code!r} at chain {chain.id} '
                         f'residue {number}; insertion codes are not supported.')
      positions = np.zeros((rc.atom_type_num, 3))
      mask = np.zeros((rc.atom_type_num,))
      b_factors = np.zeros((rc.atom_type_num,))
      for atom in residue:
        slot = rc.atom_order.get(atom.name)
        if slot is not None:
          positions[slot], mask[slot], b_factors[slot] = atom.coord, 1.0, atom.bfactor
      if mask.any():
        aatype = rc.resname_to_idx.get(residue.resname, rc.unk_restype_index)
        residues.append((aatype, positions, mask, b_factors, number, chain.id))
  if not residues:
    raise ValueError(f'{source}: no residue has any of the 37 standard heavy atoms.')

  aatype, positions, mask, b_factors, numbers, chain_ids = zip(*residues)
  # Chains are numbered in sorted order of their IDs, as AlphaFold does.
  chain_order = {cid: i for i, cid in enumerate(sorted(set(chain_ids)))}
  return Protein(atom_positions=np.array(positions), aatype=np.array(aatype),
                 atom_mask=np.array(mask), residue_index=np.array(numbers),
                 chain_index=np.array([chain_order[cid] for cid in chain_ids]),
                 b_factors=np.array(b_factors))


def _parse(parser: PDBParser | MMCIFParser, text: str, chain_id: str | None,
           source: str) -> Protein:
  if not isinstance(text, str):
    raise ValueError(f'{source}: expected the file contents as str, got {type(text).__name__}.')
  try:
    structure = parser.get_structure('none', io.StringIO(text))
  except Exception as error:  # Biopython raises many kinds; report them as one.
    raise ValueError(f'{source}: Biopython could not parse it: {error}') from error
  return _from_structure(structure, chain_id, source)


def from_pdb_string(pdb_str: str, chain_id: str | None = None) -> Protein:
  """Protein from PDB-format text; only chain `chain_id` if given.

  Raises ValueError on unparsable text, more or fewer than one model, a missing chain, an
  insertion code, or no standard atom at all.
  """
  return _parse(PDBParser(QUIET=True), pdb_str, chain_id, 'PDB')


def from_mmcif_string(mmcif_str: str, chain_id: str | None = None) -> Protein:
  """Protein from mmCIF text (author chain IDs); as `from_pdb_string` otherwise."""
  return _parse(MMCIFParser(QUIET=True), mmcif_str, chain_id, 'mmCIF')


# ---------------------------------------------------------------------------------------------
# Building from model output.
# ---------------------------------------------------------------------------------------------

def ideal_atom_mask(prot: Protein) -> np.ndarray:
  """[N_res, 37] int32: the heavy atoms each residue's type should have, whatever was observed."""
  return rc.STANDARD_ATOM_MASK[prot.aatype]


def from_prediction(features: Mapping[str, Any], result: Mapping[str, Any],
                    b_factors: np.ndarray | None = None,
                    remove_leading_feature_dimension: bool = True) -> Protein:
  """Protein from model inputs and outputs, as AlphaFold's `protein.from_prediction`.

  Args:
    features: model inputs with 'aatype' and 'residue_index' (0-based; written 1-based), and
      optionally 'asym_id' (chain index); each with a leading ensemble axis unless
      `remove_leading_feature_dimension` is False.
    result: model outputs; result['structure_module'] holds 'final_atom_positions'
      [N_res, 37, 3] and 'final_atom_mask' [N_res, 37].
    b_factors: [N_res] (e.g. pLDDT, repeated over the residue's atoms) or [N_res, 37];
      zeros if None.
  """
  def per_residue(array: Any) -> np.ndarray:
    array = np.asarray(array)
    return array[0] if remove_leading_feature_dimension else array

  structure = result['structure_module']
  atom_positions = np.asarray(structure['final_atom_positions'])
  atom_mask = np.asarray(structure['final_atom_mask'])
  aatype = per_residue(features['aatype'])
  if b_factors is None:
    b_factors = np.zeros_like(atom_mask)
  b_factors = np.asarray(b_factors)
  if b_factors.ndim == 1:
    b_factors = np.repeat(b_factors[:, None], rc.atom_type_num, axis=1)
  chain_index = (per_residue(features['asym_id']) if 'asym_id' in features
                 else np.zeros_like(aatype))
  return Protein(atom_positions=atom_positions, aatype=aatype, atom_mask=atom_mask,
                 residue_index=per_residue(features['residue_index']) + 1,
                 chain_index=chain_index, b_factors=b_factors)


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------

def _checked_aatype(prot: Protein) -> np.ndarray:
  aatype = np.asarray(prot.aatype)
  bad = aatype[(aatype < 0) | (aatype > rc.unk_restype_index)]
  if bad.size:
    raise ValueError(f'aatype values {sorted(set(bad.tolist()))} are outside 0..'
                     f'{rc.unk_restype_index}.')
  return aatype


def _present_atoms(prot: Protein, residue: int):
  """(atom name, position, B-factor) of each atom of `residue` whose mask is set."""
  for name, position, present, b_factor in zip(rc.atom_types, prot.atom_positions[residue],
                                               prot.atom_mask[residue], prot.b_factors[residue]):
    if present >= 0.5:
      yield name, position, b_factor


def to_pdb(prot: Protein) -> str:
  """PDB text of `prot`: one MODEL, ATOM records, TER after each chain, ENDMDL and END.

  Chains are labelled by chain_index: 0 -> 'A', 1 -> 'B', ... (`PDB_CHAIN_IDS`). Every line
  is padded to 80 columns. Serial numbers count TER records too, as the format requires.
  """
  aatype = _checked_aatype(prot)
  residue_index = prot.residue_index.astype(np.int32)
  chain_index = prot.chain_index.astype(np.int32)
  if chain_index.size and chain_index.max() >= PDB_MAX_CHAINS:
    raise ValueError(f'chain index {chain_index.max()} cannot be written: the PDB format '
                     f'supports at most {PDB_MAX_CHAINS} chains.')

  def ter(serial: int, residue: int) -> str:
    return (f'TER   {serial:>5}      {rc.resnames[aatype[residue]]:>3} '
            f'{PDB_CHAIN_IDS[chain_index[residue]]:>1}{residue_index[residue]:>4}')

  lines = ['MODEL     1']
  serial = 1
  for i in range(len(aatype)):
    if i and chain_index[i] != chain_index[i - 1]:
      lines.append(ter(serial, i - 1))
      serial += 1
    chain = PDB_CHAIN_IDS[chain_index[i]]
    for name, (x, y, z), b_factor in _present_atoms(prot, i):
      # Columns 13-16 hold the name; names shorter than 4 start in column 14 so the element
      # stays right-aligned in 13-14. Elements are C, N, O or S: the name's first letter.
      padded_name = name if len(name) == 4 else f' {name}'
      lines.append(f'ATOM  {serial:>5} {padded_name:<4} {rc.resnames[aatype[i]]:>3} {chain:>1}'
                   f'{residue_index[i]:>4}    {x:>8.3f}{y:>8.3f}{z:>8.3f}{1.0:>6.2f}'
                   f'{b_factor:>6.2f}          {name[0]:>2}  ')
      serial += 1
  if len(aatype):
    lines.append(ter(serial, len(aatype) - 1))
  lines += ['ENDMDL', 'END']
  return '\n'.join(line.ljust(80) for line in lines) + '\n'


def _mmcif_chain_id(chain: int) -> str:
  """0 -> 'A', 25 -> 'Z', 26 -> 'AA', 27 -> 'BA', ...: mmCIF's usual reverse-spreadsheet IDs."""
  letters = []
  number = chain
  while number >= 0:
    letters.append(chr(ord('A') + number % 26))
    number = number // 26 - 1
  return ''.join(letters)


def _entity_poly_seq(aatype: np.ndarray, residue_index: np.ndarray,
                     chain_index: np.ndarray) -> dict[int, list[tuple[int, int]]]:
  """Per chain, (residue number, aatype) from min(1, first) to the last residue, gaps as UNK,
  so the sequence numbering of _atom_site stays valid."""
  observed = collections.defaultdict(dict)
  for chain, number, restype in zip(chain_index, residue_index, aatype):
    observed[int(chain)][int(number)] = int(restype)
  return {chain: [(n, residues.get(n, rc.unk_restype_index))
                  for n in range(min(1, min(residues)), max(residues) + 1)]
          for chain, residues in observed.items()}


def to_mmcif(prot: Protein, file_id: str = 'jaxfold') -> str:
  """mmCIF text of `prot`: one entity and struct_asym per chain, _entity_poly_seq (gaps as
  UNK), _chem_comp and _atom_site with B-factors. Chains are labelled A, B, ... (both label
  and author IDs). Written by Biopython's MMCIFIO, so MMCIFParser reads it back.
  """
  aatype = _checked_aatype(prot)
  residue_index = prot.residue_index.astype(np.int32)
  chain_index = prot.chain_index.astype(np.int32)
  cif = collections.defaultdict(list)
  cif['data_'] = file_id.upper()
  cif['_entry.id'] = file_id.upper()

  for chain in np.unique(chain_index):
    entity, label = str(chain), _mmcif_chain_id(int(chain))
    cif['_entity.id'].append(entity)
    cif['_entity.type'].append(rc.POLYMER_CHAIN)
    cif['_entity_poly.entity_id'].append(entity)
    cif['_entity_poly.type'].append(rc.PROTEIN_CHAIN)
    cif['_entity_poly.pdbx_strand_id'].append(label)
    cif['_struct_asym.id'].append(label)
    cif['_struct_asym.entity_id'].append(entity)
  for chain, residues in _entity_poly_seq(aatype, residue_index, chain_index).items():
    for number, restype in residues:
      cif['_entity_poly_seq.entity_id'].append(str(chain))
      cif['_entity_poly_seq.num'].append(str(number))
      cif['_entity_poly_seq.mon_id'].append(rc.resnames[restype])
  for resname, chem_type, name in _CHEM_COMP:
    cif['_chem_comp.id'].append(resname)
    cif['_chem_comp.type'].append(chem_type)
    cif['_chem_comp.name'].append(name)

  serial = 1
  for i in range(len(aatype)):
    label = _mmcif_chain_id(int(chain_index[i]))
    for name, (x, y, z), b_factor in _present_atoms(prot, i):
      for key, value in (
          ('group_PDB', 'ATOM'), ('id', str(serial)), ('type_symbol', rc.atom_id_to_type(name)),
          ('label_atom_id', name), ('label_alt_id', '.'), ('label_comp_id', rc.resnames[aatype[i]]),
          ('label_asym_id', label), ('label_entity_id', str(chain_index[i])),
          ('label_seq_id', str(residue_index[i])), ('pdbx_PDB_ins_code', '.'),
          ('Cartn_x', f'{x:.3f}'), ('Cartn_y', f'{y:.3f}'), ('Cartn_z', f'{z:.3f}'),
          ('occupancy', '1.00'), ('B_iso_or_equiv', f'{b_factor:.2f}'),
          ('auth_seq_id', str(residue_index[i])), ('auth_asym_id', label),
          ('pdbx_PDB_model_num', '1')):
        cif[f'_atom_site.{key}'].append(value)
      serial += 1

  writer = MMCIFIO()
  writer.set_dict(dict(cif))
  with io.StringIO() as handle:
    writer.save(handle)
    return handle.getvalue()
