"""Amino-acid chemistry as constant tables: residue and atom alphabets, idealised geometry.

The facts (names, orders, literature coordinates and bond statistics) are AlphaFold's, under
AlphaFold's names, so code written against `alphafold.common.residue_constants` reads this
module unchanged. Every array derived from them is computed below with numpy.

Conventions (Jumper et al. (2021) Suppl. 1.2.1 'Representations' and Suppl. 1.8 'Structure
module', Alg. 24 'computeAllAtomCoordinates'):
  * residue types: the 20 standard amino acids in `restypes` order (alphabetical by
    three-letter code), index 20 = unknown ('X' / 'UNK'); tables indexed by residue type
    have 21 rows.
  * atom37: one fixed slot per heavy-atom name over all residues (`atom_types`).
  * atom14: a dense per-residue layout of at most 14 heavy atoms
    (`restype_name_to_atom14_names`).
  * rigid groups (Suppl. Table 2): 0 backbone, 1 pre-omega, 2 phi, 3 psi, 4-7 chi1-chi4;
    `restype_rigid_group_default_frame` [21, 8, 4, 4] maps each group's frame into its parent's
    (backbone for groups 1-4, the previous chi group for 5-7).

Only numpy is imported, so the data pipeline can use this module without jax.
"""

import collections
import functools
import os
from collections.abc import Mapping
from typing import Final, NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------
# Residue alphabets.
# ---------------------------------------------------------------------------------------------

restype_1to3 = {
    'A': 'ALA', 'R': 'ARG', 'N': 'ASN', 'D': 'ASP', 'C': 'CYS', 'Q': 'GLN', 'E': 'GLU',
    'G': 'GLY', 'H': 'HIS', 'I': 'ILE', 'L': 'LEU', 'K': 'LYS', 'M': 'MET', 'F': 'PHE',
    'P': 'PRO', 'S': 'SER', 'T': 'THR', 'W': 'TRP', 'Y': 'TYR', 'V': 'VAL',
}
# A strict one-to-one inverse; Bio.PDB's protein_letters_3to1 also folds modified residues
# onto standard letters, which AlphaFold deliberately does not.
restype_3to1 = {three: one for one, three in restype_1to3.items()}

# Sorting by three-letter code gives AlphaFold's residue order A R N D C Q E G H I L K M F P S T W Y V.
restypes = sorted(restype_1to3, key=restype_1to3.__getitem__)
restype_order = {restype: i for i, restype in enumerate(restypes)}
restype_num = len(restypes)  # 20
unk_restype_index = restype_num  # every non-standard residue maps here
unk_restype = 'UNK'

restypes_with_x = restypes + ['X']
restype_order_with_x = {restype: i for i, restype in enumerate(restypes_with_x)}

resnames = [restype_1to3[r] for r in restypes] + [unk_restype]
resname_to_idx = {resname: i for i, resname in enumerate(resnames)}

# mmCIF entity_poly.type values.
PROTEIN_CHAIN: Final[str] = 'polypeptide(L)'
POLYMER_CHAIN: Final[str] = 'polymer'

# HHblits' alphabet: 20 amino acids alphabetical by one-letter code, then 'X' (any) and '-'
# (gap), so the last two ids are easy to drop. Ambiguity codes fold onto the nearest residue.
_HHBLITS_ALPHABET = 'ACDEFGHIKLMNPQRSTVWYX-'
_HHBLITS_ALIASES = {'B': 'D', 'Z': 'E', 'U': 'C', 'J': 'X', 'O': 'X'}
ID_TO_HHBLITS_AA = dict(enumerate(_HHBLITS_ALPHABET))
HHBLITS_AA_TO_ID = {aa: i for i, aa in ID_TO_HHBLITS_AA.items()}
HHBLITS_AA_TO_ID.update({alias: HHBLITS_AA_TO_ID[aa] for alias, aa in _HHBLITS_ALIASES.items()})

restypes_with_x_and_gap = restypes + ['X', '-']
# Re-indexes an HHblits-coded MSA into our residue order (plus X=20 and gap=21).
MAP_HHBLITS_AATYPE_TO_OUR_AATYPE = tuple(
    restypes_with_x_and_gap.index(ID_TO_HHBLITS_AA[i])
    for i in range(len(restypes_with_x_and_gap)))


def sequence_to_onehot(sequence: str, mapping: Mapping[str, int],
                       map_unknown_to_x: bool = False) -> np.ndarray:
  """One-hot encodes `sequence` with `mapping`: [len(sequence), max(mapping) + 1] int32.

  With `map_unknown_to_x`, upper-case letters missing from `mapping` become 'X' (which the
  mapping must contain) and any other character is rejected; without it, every character must
  be in `mapping`.
  """
  num_classes = max(mapping.values()) + 1
  if sorted(set(mapping.values())) != list(range(num_classes)):
    raise ValueError('The mapping must have values from 0 to num_unique_aas-1 without any '
                     f'gaps. Got: {sorted(mapping.values())}')
  indices = []
  for aa in sequence:
    if not map_unknown_to_x:
      indices.append(mapping[aa])
    elif aa.isalpha() and aa.isupper():
      indices.append(mapping.get(aa, mapping['X']))
    else:
      raise ValueError(f'Invalid character in the sequence: {aa}')
  one_hot = np.zeros((len(sequence), num_classes), dtype=np.int32)
  one_hot[np.arange(len(sequence)), np.asarray(indices, dtype=np.int64)] = 1
  return one_hot


# ---------------------------------------------------------------------------------------------
# Atom naming.
# ---------------------------------------------------------------------------------------------

# The atom37 slots: every heavy-atom name that occurs in a standard residue, plus the
# C-terminal OXT.
atom_types = [
    'N', 'CA', 'C', 'CB', 'O', 'CG', 'CG1', 'CG2', 'OG', 'OG1', 'SG', 'CD', 'CD1', 'CD2', 'ND1',
    'ND2', 'OD1', 'OD2', 'SD', 'CE', 'CE1', 'CE2', 'CE3', 'NE', 'NE1', 'NE2', 'OE1', 'OE2',
    'CH2', 'NH1', 'NH2', 'OH', 'CZ', 'CZ2', 'CZ3', 'NZ', 'OXT',
]
atom_order = {atom_type: i for i, atom_type in enumerate(atom_types)}
atom_type_num = len(atom_types)  # 37


def _split_names(table: Mapping[str, str]) -> dict[str, list[str]]:
  return {resname: names.split() for resname, names in table.items()}


# Heavy atoms of each residue in PDB naming (the order is AlphaFold's).
residue_atoms = _split_names({
    'ALA': 'C CA CB N O',
    'ARG': 'C CA CB CG CD CZ N NE O NH1 NH2',
    'ASP': 'C CA CB CG N O OD1 OD2',
    'ASN': 'C CA CB CG N ND2 O OD1',
    'CYS': 'C CA CB N O SG',
    'GLU': 'C CA CB CG CD N O OE1 OE2',
    'GLN': 'C CA CB CG CD N NE2 O OE1',
    'GLY': 'C CA N O',
    'HIS': 'C CA CB CG CD2 CE1 N ND1 NE2 O',
    'ILE': 'C CA CB CG1 CG2 CD1 N O',
    'LEU': 'C CA CB CG CD1 CD2 N O',
    'LYS': 'C CA CB CG CD CE N NZ O',
    'MET': 'C CA CB CG CE N O SD',
    'PHE': 'C CA CB CG CD1 CD2 CE1 CE2 CZ N O',
    'PRO': 'C CA CB CG CD N O',
    'SER': 'C CA CB N O OG',
    'THR': 'C CA CB CG2 N O OG1',
    'TRP': 'C CA CB CG CD1 CD2 CE2 CE3 CZ2 CZ3 CH2 N NE1 O',
    'TYR': 'C CA CB CG CD1 CD2 CE1 CE2 CZ N O OH',
    'VAL': 'C CA CB CG1 CG2 N O',
})

# The atom14 layout: backbone N CA C O first, then side-chain atoms outward from CB; empty
# slots are ''. UNK has no atoms.
restype_name_to_atom14_names = {
    resname: names + [''] * (14 - len(names))
    for resname, names in _split_names({
        'ALA': 'N CA C O CB',
        'ARG': 'N CA C O CB CG CD NE CZ NH1 NH2',
        'ASN': 'N CA C O CB CG OD1 ND2',
        'ASP': 'N CA C O CB CG OD1 OD2',
        'CYS': 'N CA C O CB SG',
        'GLN': 'N CA C O CB CG CD OE1 NE2',
        'GLU': 'N CA C O CB CG CD OE1 OE2',
        'GLY': 'N CA C O',
        'HIS': 'N CA C O CB CG ND1 CD2 CE1 NE2',
        'ILE': 'N CA C O CB CG1 CG2 CD1',
        'LEU': 'N CA C O CB CG CD1 CD2',
        'LYS': 'N CA C O CB CG CD CE NZ',
        'MET': 'N CA C O CB CG SD CE',
        'PHE': 'N CA C O CB CG CD1 CD2 CE1 CE2 CZ',
        'PRO': 'N CA C O CB CG CD',
        'SER': 'N CA C O CB OG',
        'THR': 'N CA C O CB OG1 CG2',
        'TRP': 'N CA C O CB CG CD1 CD2 NE1 CE2 CE3 CZ2 CZ3 CH2',
        'TYR': 'N CA C O CB CG CD1 CD2 CE1 CE2 CZ OH',
        'VAL': 'N CA C O CB CG1 CG2',
        'UNK': '',
    }).items()
}

# Atoms whose names are interchangeable by a symmetry of the side chain (Suppl. 1.9.3,
# Table 3). LEU, VAL and ARG are symmetric too, but their naming is fixed by the positions of
# neighbouring atoms, so only these four need renaming during the loss.
residue_atom_renaming_swaps = {
    'ASP': {'OD1': 'OD2'},
    'GLU': {'OE1': 'OE2'},
    'PHE': {'CD1': 'CD2', 'CE1': 'CE2'},
    'TYR': {'CD1': 'CD2', 'CE1': 'CE2'},
}


def atom_id_to_type(atom_id: str) -> str:
  """Element of a standard protein atom name ('CA' -> 'C'); ValueError for anything else."""
  element = atom_id[:1]
  if element in ('C', 'N', 'O', 'H', 'S'):
    return element
  raise ValueError(f'Atom ID not recognized: {atom_id!r}.')


# ---------------------------------------------------------------------------------------------
# Geometry facts.
# ---------------------------------------------------------------------------------------------

# CA-CA distance of consecutive residues with a trans peptide bond (omega = 180 deg), in Å.
ca_ca = 3.80209737096

# Van der Waals radii in Å by element (first letter of an atom name).
van_der_waals_radius = {'C': 1.7, 'N': 1.55, 'O': 1.52, 'S': 1.8}

# The four atoms defining chi1..chi4 of each residue. ARG's chi5 is omitted: it stays within
# a few degrees of 0.
chi_angles_atoms = {
    resname: [quad.split() for quad in quads]
    for resname, quads in {
        'ALA': (),
        'ARG': ('N CA CB CG', 'CA CB CG CD', 'CB CG CD NE', 'CG CD NE CZ'),
        'ASN': ('N CA CB CG', 'CA CB CG OD1'),
        'ASP': ('N CA CB CG', 'CA CB CG OD1'),
        'CYS': ('N CA CB SG',),
        'GLN': ('N CA CB CG', 'CA CB CG CD', 'CB CG CD OE1'),
        'GLU': ('N CA CB CG', 'CA CB CG CD', 'CB CG CD OE1'),
        'GLY': (),
        'HIS': ('N CA CB CG', 'CA CB CG ND1'),
        'ILE': ('N CA CB CG1', 'CA CB CG1 CD1'),
        'LEU': ('N CA CB CG', 'CA CB CG CD1'),
        'LYS': ('N CA CB CG', 'CA CB CG CD', 'CB CG CD CE', 'CG CD CE NZ'),
        'MET': ('N CA CB CG', 'CA CB CG SD', 'CB CG SD CE'),
        'PHE': ('N CA CB CG', 'CA CB CG CD1'),
        'PRO': ('N CA CB CG', 'CA CB CG CD'),
        'SER': ('N CA CB OG',),
        'THR': ('N CA CB OG1',),
        'TRP': ('N CA CB CG', 'CA CB CG CD1'),
        'TYR': ('N CA CB CG', 'CA CB CG CD1'),
        'VAL': ('N CA CB CG1',),
    }.items()
}

# Which chi angle (1-based) turns the side chain onto a symmetric copy after a half turn: the
# last chi of the residues in `residue_atom_renaming_swaps`.
_PI_PERIODIC_CHI = {'ASP': 2, 'GLU': 3, 'PHE': 2, 'TYR': 2}

# [20][4] for the standard residues: 1.0 where the chi angle exists.
chi_angles_mask = [
    [1.0 if chi < len(chi_angles_atoms[restype_1to3[r]]) else 0.0 for chi in range(4)]
    for r in restypes
]

# [21][4] (UNK included): 1.0 where the chi angle is pi-periodic.
chi_pi_periodic = [
    [1.0 if chi + 1 == _PI_PERIODIC_CHI.get(resname) else 0.0 for chi in range(4)]
    for resname in resnames
]

# Idealised atom coordinates (Å) in the frame of the rigid group that places them:
# (atom name, rigid group index, position). Each group's frame has its origin at the end atom
# of the group's rotation axis, x along that axis, and the atom defining the torsion in the
# xy-plane with positive y. PRO's CD is set 2 degrees wider than the literature angle, as in
# AlphaFold, to close the ring better.
rigid_group_atom_positions = {
    'ALA': (
        ('N', 0, (-0.525, 1.363, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, -0.000, -0.000)),
        ('CB', 0, (-0.529, -0.774, -1.205)),
        ('O', 3, (0.627, 1.062, 0.000)),
    ),
    'ARG': (
        ('N', 0, (-0.524, 1.362, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, -0.000, -0.000)),
        ('CB', 0, (-0.524, -0.778, -1.209)),
        ('O', 3, (0.626, 1.062, 0.000)),
        ('CG', 4, (0.616, 1.390, -0.000)),
        ('CD', 5, (0.564, 1.414, 0.000)),
        ('NE', 6, (0.539, 1.357, -0.000)),
        ('NH1', 7, (0.206, 2.301, 0.000)),
        ('NH2', 7, (2.078, 0.978, -0.000)),
        ('CZ', 7, (0.758, 1.093, -0.000)),
    ),
    'ASN': (
        ('N', 0, (-0.536, 1.357, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, -0.000, -0.000)),
        ('CB', 0, (-0.531, -0.787, -1.200)),
        ('O', 3, (0.625, 1.062, 0.000)),
        ('CG', 4, (0.584, 1.399, 0.000)),
        ('ND2', 5, (0.593, -1.188, 0.001)),
        ('OD1', 5, (0.633, 1.059, 0.000)),
    ),
    'ASP': (
        ('N', 0, (-0.525, 1.362, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.527, 0.000, -0.000)),
        ('CB', 0, (-0.526, -0.778, -1.208)),
        ('O', 3, (0.626, 1.062, -0.000)),
        ('CG', 4, (0.593, 1.398, -0.000)),
        ('OD1', 5, (0.610, 1.091, 0.000)),
        ('OD2', 5, (0.592, -1.101, -0.003)),
    ),
    'CYS': (
        ('N', 0, (-0.522, 1.362, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.524, 0.000, 0.000)),
        ('CB', 0, (-0.519, -0.773, -1.212)),
        ('O', 3, (0.625, 1.062, -0.000)),
        ('SG', 4, (0.728, 1.653, 0.000)),
    ),
    'GLN': (
        ('N', 0, (-0.526, 1.361, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, 0.000, 0.000)),
        ('CB', 0, (-0.525, -0.779, -1.207)),
        ('O', 3, (0.626, 1.062, -0.000)),
        ('CG', 4, (0.615, 1.393, 0.000)),
        ('CD', 5, (0.587, 1.399, -0.000)),
        ('NE2', 6, (0.593, -1.189, -0.001)),
        ('OE1', 6, (0.634, 1.060, 0.000)),
    ),
    'GLU': (
        ('N', 0, (-0.528, 1.361, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, -0.000, -0.000)),
        ('CB', 0, (-0.526, -0.781, -1.207)),
        ('O', 3, (0.626, 1.062, 0.000)),
        ('CG', 4, (0.615, 1.392, 0.000)),
        ('CD', 5, (0.600, 1.397, 0.000)),
        ('OE1', 6, (0.607, 1.095, -0.000)),
        ('OE2', 6, (0.589, -1.104, -0.001)),
    ),
    'GLY': (
        ('N', 0, (-0.572, 1.337, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.517, -0.000, -0.000)),
        ('O', 3, (0.626, 1.062, -0.000)),
    ),
    'HIS': (
        ('N', 0, (-0.527, 1.360, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, 0.000, 0.000)),
        ('CB', 0, (-0.525, -0.778, -1.208)),
        ('O', 3, (0.625, 1.063, 0.000)),
        ('CG', 4, (0.600, 1.370, -0.000)),
        ('CD2', 5, (0.889, -1.021, 0.003)),
        ('ND1', 5, (0.744, 1.160, -0.000)),
        ('CE1', 5, (2.030, 0.851, 0.002)),
        ('NE2', 5, (2.145, -0.466, 0.004)),
    ),
    'ILE': (
        ('N', 0, (-0.493, 1.373, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.527, -0.000, -0.000)),
        ('CB', 0, (-0.536, -0.793, -1.213)),
        ('O', 3, (0.627, 1.062, -0.000)),
        ('CG1', 4, (0.534, 1.437, -0.000)),
        ('CG2', 4, (0.540, -0.785, -1.199)),
        ('CD1', 5, (0.619, 1.391, 0.000)),
    ),
    'LEU': (
        ('N', 0, (-0.520, 1.363, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, -0.000, -0.000)),
        ('CB', 0, (-0.522, -0.773, -1.214)),
        ('O', 3, (0.625, 1.063, -0.000)),
        ('CG', 4, (0.678, 1.371, 0.000)),
        ('CD1', 5, (0.530, 1.430, -0.000)),
        ('CD2', 5, (0.535, -0.774, 1.200)),
    ),
    'LYS': (
        ('N', 0, (-0.526, 1.362, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, 0.000, 0.000)),
        ('CB', 0, (-0.524, -0.778, -1.208)),
        ('O', 3, (0.626, 1.062, -0.000)),
        ('CG', 4, (0.619, 1.390, 0.000)),
        ('CD', 5, (0.559, 1.417, 0.000)),
        ('CE', 6, (0.560, 1.416, 0.000)),
        ('NZ', 7, (0.554, 1.387, 0.000)),
    ),
    'MET': (
        ('N', 0, (-0.521, 1.364, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, 0.000, 0.000)),
        ('CB', 0, (-0.523, -0.776, -1.210)),
        ('O', 3, (0.625, 1.062, -0.000)),
        ('CG', 4, (0.613, 1.391, -0.000)),
        ('SD', 5, (0.703, 1.695, 0.000)),
        ('CE', 6, (0.320, 1.786, -0.000)),
    ),
    'PHE': (
        ('N', 0, (-0.518, 1.363, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.524, 0.000, -0.000)),
        ('CB', 0, (-0.525, -0.776, -1.212)),
        ('O', 3, (0.626, 1.062, -0.000)),
        ('CG', 4, (0.607, 1.377, 0.000)),
        ('CD1', 5, (0.709, 1.195, -0.000)),
        ('CD2', 5, (0.706, -1.196, 0.000)),
        ('CE1', 5, (2.102, 1.198, -0.000)),
        ('CE2', 5, (2.098, -1.201, -0.000)),
        ('CZ', 5, (2.794, -0.003, -0.001)),
    ),
    'PRO': (
        ('N', 0, (-0.566, 1.351, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.527, -0.000, 0.000)),
        ('CB', 0, (-0.546, -0.611, -1.293)),
        ('O', 3, (0.621, 1.066, 0.000)),
        ('CG', 4, (0.382, 1.445, 0.000)),
        ('CD', 5, (0.477, 1.424, 0.000)),
    ),
    'SER': (
        ('N', 0, (-0.529, 1.360, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, -0.000, -0.000)),
        ('CB', 0, (-0.518, -0.777, -1.211)),
        ('O', 3, (0.626, 1.062, -0.000)),
        ('OG', 4, (0.503, 1.325, 0.000)),
    ),
    'THR': (
        ('N', 0, (-0.517, 1.364, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.526, 0.000, -0.000)),
        ('CB', 0, (-0.516, -0.793, -1.215)),
        ('O', 3, (0.626, 1.062, 0.000)),
        ('CG2', 4, (0.550, -0.718, -1.228)),
        ('OG1', 4, (0.472, 1.353, 0.000)),
    ),
    'TRP': (
        ('N', 0, (-0.521, 1.363, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.525, -0.000, 0.000)),
        ('CB', 0, (-0.523, -0.776, -1.212)),
        ('O', 3, (0.627, 1.062, 0.000)),
        ('CG', 4, (0.609, 1.370, -0.000)),
        ('CD1', 5, (0.824, 1.091, 0.000)),
        ('CD2', 5, (0.854, -1.148, -0.005)),
        ('CE2', 5, (2.186, -0.678, -0.007)),
        ('CE3', 5, (0.622, -2.530, -0.007)),
        ('NE1', 5, (2.140, 0.690, -0.004)),
        ('CH2', 5, (3.028, -2.890, -0.013)),
        ('CZ2', 5, (3.283, -1.543, -0.011)),
        ('CZ3', 5, (1.715, -3.389, -0.011)),
    ),
    'TYR': (
        ('N', 0, (-0.522, 1.362, 0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.524, -0.000, -0.000)),
        ('CB', 0, (-0.522, -0.776, -1.213)),
        ('O', 3, (0.627, 1.062, -0.000)),
        ('CG', 4, (0.607, 1.382, -0.000)),
        ('CD1', 5, (0.716, 1.195, -0.000)),
        ('CD2', 5, (0.713, -1.194, -0.001)),
        ('CE1', 5, (2.107, 1.200, -0.002)),
        ('CE2', 5, (2.104, -1.201, -0.003)),
        ('OH', 5, (4.168, -0.002, -0.005)),
        ('CZ', 5, (2.791, -0.001, -0.003)),
    ),
    'VAL': (
        ('N', 0, (-0.494, 1.373, -0.000)),
        ('CA', 0, (0.000, 0.000, 0.000)),
        ('C', 0, (1.527, -0.000, -0.000)),
        ('CB', 0, (-0.533, -0.795, -1.213)),
        ('O', 3, (0.627, 1.062, -0.000)),
        ('CG1', 4, (0.540, 1.429, -0.000)),
        ('CG2', 4, (0.533, -0.776, 1.203)),
    ),
}

# Peptide-bond geometry between consecutive residues (Suppl. 1.9.11). The C-N bond length
# (Å) and its stddev are [general, next residue is proline]; the angle cosines are
# [mean, stddev] of cos(C-N-CA) (121.352 +- 2.315 deg) and cos(CA-C-N) (116.568 +- 1.995 deg).
between_res_bond_length_c_n = [1.329, 1.341]
between_res_bond_length_stddev_c_n = [0.014, 0.016]
between_res_cos_angles_c_n_ca = [-0.5203, 0.0353]
between_res_cos_angles_ca_c_n = [-0.4473, 0.0311]


# ---------------------------------------------------------------------------------------------
# Stereochemistry (Engh & Huber literature values) for the violation losses, Suppl. 1.9.11.
# ---------------------------------------------------------------------------------------------

stereo_chemical_props_path = os.path.join(os.path.dirname(__file__),
                                          'stereo_chemical_props.txt')


class Bond(NamedTuple):
  atom1_name: str
  atom2_name: str
  length: float
  stddev: float


class BondAngle(NamedTuple):
  atom1_name: str
  atom2_name: str
  atom3name: str  # AlphaFold's spelling, kept so attribute access matches.
  angle_rad: float
  stddev: float


def _stereo_sections(text: str) -> list[list[list[str]]]:
  """Splits the data file into its '-'-terminated tables of whitespace-separated rows.

  Each table starts with one header row (after any blank lines), which is dropped.
  """
  sections, rows = [], []
  for line in text.splitlines():
    if line.strip() == '-':
      sections.append(rows[1:])
      rows = []
    elif line.strip():
      rows.append(line.split())
  return sections


def _virtual_bond(angle: BondAngle, bond1: Bond, bond2: Bond) -> Bond:
  """The atom1-atom3 distance implied by two bonds and the angle between them.

  Law of cosines for the length; first-order propagation of the three independent
  uncertainties for its stddev.
  """
  a, b, gamma = bond1.length, bond2.length, angle.angle_rad
  length = np.sqrt(a**2 + b**2 - 2 * a * b * np.cos(gamma))
  d_gamma = a * b * np.sin(gamma) / length
  d_a = (a - b * np.cos(gamma)) / length
  d_b = (b - a * np.cos(gamma)) / length
  stddev = np.sqrt((d_gamma * angle.stddev)**2 + (d_a * bond1.stddev)**2
                   + (d_b * bond2.stddev)**2)
  return Bond(angle.atom1_name, angle.atom3name, length, stddev)


@functools.lru_cache(maxsize=None)
def load_stereo_chemical_props() -> tuple[Mapping[str, list[Bond]],
                                          Mapping[str, list[Bond]],
                                          Mapping[str, list[BondAngle]]]:
  """Reads `stereo_chemical_props.txt` into per-residue bond and angle lists.

  Returns:
    residue_bonds: resname -> [Bond] (lengths in Å).
    residue_virtual_bonds: resname -> [Bond], one per bond angle: the distance between the
      angle's outer atoms, so angles can be checked as distances.
    residue_bond_angles: resname -> [BondAngle] (radians).
    Each mapping also has an empty 'UNK' entry.
  """
  with open(stereo_chemical_props_path, 'rt') as f:
    bond_rows, angle_rows = _stereo_sections(f.read())[:2]

  residue_bonds = collections.defaultdict(list)
  for atoms, resname, length, stddev in bond_rows:
    residue_bonds[resname].append(Bond(*atoms.split('-'), float(length), float(stddev)))
  residue_bond_angles = collections.defaultdict(list)
  for atoms, resname, degrees, stddev_degrees in angle_rows:
    residue_bond_angles[resname].append(BondAngle(
        *atoms.split('-'), np.deg2rad(float(degrees)), np.deg2rad(float(stddev_degrees))))
  residue_bonds = dict(residue_bonds, UNK=[])
  residue_bond_angles = dict(residue_bond_angles, UNK=[])

  residue_virtual_bonds = {}
  for resname, angles in residue_bond_angles.items():
    by_atoms = {frozenset((b.atom1_name, b.atom2_name)): b for b in residue_bonds[resname]}
    residue_virtual_bonds[resname] = [
        _virtual_bond(angle, by_atoms[frozenset((angle.atom1_name, angle.atom2_name))],
                      by_atoms[frozenset((angle.atom2_name, angle.atom3name))])
        for angle in angles]
  return residue_bonds, residue_virtual_bonds, residue_bond_angles


# ---------------------------------------------------------------------------------------------
# Derived per-residue-type arrays. Row 20 (UNK) is all zeros unless stated otherwise.
# ---------------------------------------------------------------------------------------------

def _atom14_index(resname: str, atom_name: str) -> int:
  return restype_name_to_atom14_names[resname].index(atom_name)


def _make_atom_layout_maps() -> tuple[np.ndarray, ...]:
  """atom37 mask (int32, from `residue_atoms`) and the atom14 <-> atom37 index maps.

  Slots with no atom map to index 0; use the masks to ignore them.
  """
  standard_mask = np.zeros([restype_num + 1, atom_type_num], dtype=np.int32)
  atom14_to_atom37 = np.zeros([restype_num + 1, 14], dtype=np.int32)
  atom37_to_atom14 = np.zeros([restype_num + 1, atom_type_num], dtype=np.int32)
  for restype, resname in enumerate(resnames[:restype_num]):
    standard_mask[restype, [atom_order[a] for a in residue_atoms[resname]]] = 1
    for slot14, name in enumerate(restype_name_to_atom14_names[resname]):
      if name:
        atom14_to_atom37[restype, slot14] = atom_order[name]
        atom37_to_atom14[restype, atom_order[name]] = slot14
  return standard_mask, atom14_to_atom37, atom37_to_atom14


# STANDARD_ATOM_MASK [21, 37] int32; restype_atom14_to_atom37 [21, 14] int32;
# restype_atom37_to_atom14 [21, 37] int32.
STANDARD_ATOM_MASK, restype_atom14_to_atom37, restype_atom37_to_atom14 = (
    _make_atom_layout_maps())


def _make_chi_atom_indices(num_restypes: int) -> np.ndarray:
  """[num_restypes, 4 chis, 4 atoms] atom37 indices of each chi angle's atoms; 0 if absent."""
  indices = np.zeros([num_restypes, 4, 4], dtype=np.int64)
  for restype, resname in enumerate(resnames[:min(num_restypes, restype_num)]):
    for chi, quad in enumerate(chi_angles_atoms[resname]):
      indices[restype, chi] = [atom_order[a] for a in quad]
  return indices


# [20, 4, 4] over the standard residues (as `residue_constants.chi_angles_atom_indices`)...
chi_angles_atom_indices = _make_chi_atom_indices(restype_num)
# ...and [21, 4, 4] with a zero UNK row (as `all_atom.get_chi_atom_indices()`).
chi_atom_indices = _make_chi_atom_indices(restype_num + 1)


def chi_angle_atom(atom_index: int) -> np.ndarray:
  """[21, 37, 4] one-hot over atom37 of atom `atom_index` (0-3) of each chi angle.

  Absent chi angles of standard residues are one-hot on the last atom type (OXT), the
  wrap-around of AlphaFold's -1 padding, kept so the table is AlphaFold's; UNK is all zeros.
  """
  present = np.asarray(chi_angles_mask, dtype=bool)  # [20, 4]
  indices = np.where(present, chi_angles_atom_indices[:, :, atom_index], atom_type_num - 1)
  one_hot = np.concatenate([np.eye(atom_type_num)[indices], np.zeros([1, 4, atom_type_num])])
  return np.transpose(one_hot, [0, 2, 1])


# The two atoms spanning each chi rotation axis.
chi_atom_1_one_hot = chi_angle_atom(1)
chi_atom_2_one_hot = chi_angle_atom(2)

def _make_chi_groups_for_atom() -> dict[tuple[str, str], list[tuple[int, int]]]:
  """(resname, atom name) -> [(chi index, position of the atom among that chi's four atoms)]."""
  groups = collections.defaultdict(list)
  for resname, quads in chi_angles_atoms.items():
    for chi, quad in enumerate(quads):
      for position, atom in enumerate(quad):
        groups[(resname, atom)].append((chi, position))
  return dict(groups)


chi_groups_for_atom = _make_chi_groups_for_atom()


def _frame_4x4(x_direction: np.ndarray, xy_direction: np.ndarray,
               origin: np.ndarray) -> np.ndarray:
  """Homogeneous transform of the frame with x along `x_direction`, `xy_direction` in the
  xy-plane (positive y) and origin `origin` (Gram-Schmidt as in Suppl. Alg. 21 'rigidFrom3Points')."""
  e1 = x_direction / np.linalg.norm(x_direction)
  e2 = xy_direction - np.dot(xy_direction, e1) * e1
  e2 = e2 / np.linalg.norm(e2)
  frame = np.eye(4)
  frame[:3, :3] = np.stack([e1, e2, np.cross(e1, e2)], axis=1)
  frame[:3, 3] = origin
  return frame


def _make_rigid_group_tables() -> dict[str, np.ndarray]:
  """Literature atom positions per rigid group, in atom37 and atom14 layouts, and the
  default frame of each rigid group relative to its parent (Suppl. 1.8.1)."""
  tables = {
      'atom37_to_rigid_group': np.zeros([21, 37], dtype=int),
      'atom37_mask': np.zeros([21, 37], dtype=np.float32),
      'atom37_positions': np.zeros([21, 37, 3], dtype=np.float32),
      'atom14_to_rigid_group': np.zeros([21, 14], dtype=int),
      'atom14_mask': np.zeros([21, 14], dtype=np.float32),
      'atom14_positions': np.zeros([21, 14, 3], dtype=np.float32),
      'default_frame': np.zeros([21, 8, 4, 4], dtype=np.float32),
  }
  for restype, resname in enumerate(resnames[:restype_num]):
    pos = {}
    for name, group, xyz in rigid_group_atom_positions[resname]:
      pos[name] = np.array(xyz)
      for layout, slot in (('atom37', atom_order[name]), ('atom14', _atom14_index(resname, name))):
        tables[f'{layout}_to_rigid_group'][restype, slot] = group
        tables[f'{layout}_mask'][restype, slot] = 1
        tables[f'{layout}_positions'][restype, slot] = xyz

    frames = tables['default_frame'][restype]
    # Backbone and pre-omega groups sit on the backbone frame itself.
    frames[0] = frames[1] = np.eye(4)
    # phi: rotation about CA->N; psi: about CA->C (Suppl. Alg. 24 'computeAllAtomCoordinates').
    frames[2] = _frame_4x4(pos['N'] - pos['CA'], np.array([1.0, 0.0, 0.0]), pos['N'])
    frames[3] = _frame_4x4(pos['C'] - pos['CA'], pos['CA'] - pos['N'], pos['C'])
    quads = chi_angles_atoms[resname]
    if quads:
      a, b, c = (pos[name] for name in quads[0][:3])
      frames[4] = _frame_4x4(c - b, a - b, c)
    # Each later chi axis runs from the previous group's origin to an atom placed by that
    # group, and the previous axis lies along its -x.
    for chi in range(1, len(quads)):
      axis_end = pos[quads[chi][2]]
      frames[4 + chi] = _frame_4x4(axis_end, np.array([-1.0, 0.0, 0.0]), axis_end)
  return tables


_rigid_group_tables = _make_rigid_group_tables()
restype_atom37_to_rigid_group = _rigid_group_tables['atom37_to_rigid_group']  # [21, 37] int
restype_atom37_mask = _rigid_group_tables['atom37_mask']  # [21, 37] float32
restype_atom37_rigid_group_positions = _rigid_group_tables['atom37_positions']  # [21, 37, 3]
restype_atom14_to_rigid_group = _rigid_group_tables['atom14_to_rigid_group']  # [21, 14] int
restype_atom14_mask = _rigid_group_tables['atom14_mask']  # [21, 14] float32
restype_atom14_rigid_group_positions = _rigid_group_tables['atom14_positions']  # [21, 14, 3]
restype_rigid_group_default_frame = _rigid_group_tables['default_frame']  # [21, 8, 4, 4]


def _make_rigid_group_base_atoms() -> tuple[np.ndarray, np.ndarray]:
  """Which rigid groups exist ([21, 8] float32) and the atom37 indices of the three atoms
  that build each group's frame from coordinates ([21, 8, 3] int: point on the -x axis,
  origin, point in the xy-plane; the argument order of Suppl. Alg. 21 'rigidFrom3Points' as
  AlphaFold's all_atom.atom37_to_frames uses it)."""
  names = np.full([21, 8, 3], '', dtype=object)
  names[:, 0] = ['C', 'CA', 'N']
  names[:, 3] = ['CA', 'C', 'O']
  exists = np.zeros([21, 8], dtype=np.float32)
  exists[:, [0, 3]] = 1
  for restype, resname in enumerate(resnames[:restype_num]):
    for chi, quad in enumerate(chi_angles_atoms[resname]):
      names[restype, 4 + chi] = quad[1:]
      exists[restype, 4 + chi] = 1
  indices = np.vectorize(lambda name: atom_order.get(name, 0))(names)
  return indices, exists


# restype_rigidgroup_base_atom37_idx [21, 8, 3]; restype_rigidgroup_mask [21, 8].
restype_rigidgroup_base_atom37_idx, restype_rigidgroup_mask = _make_rigid_group_base_atoms()


def _make_ambiguity_tables() -> dict[str, np.ndarray]:
  """Tables for swapping symmetric atom names (Suppl. Alg. 26
  'renameSymmetricGroundTruthAtoms') and the matching alternative rigid-group frames."""
  permutation = np.tile(np.arange(14, dtype=np.int32), [21, 1])
  is_ambiguous = np.zeros([21, 14], dtype=np.float32)
  group_is_ambiguous = np.zeros([21, 8], dtype=np.float32)
  group_rots = np.tile(np.eye(3, dtype=np.float32), [21, 8, 1, 1])
  for resname, swaps in residue_atom_renaming_swaps.items():
    restype = resname_to_idx[resname]
    for name1, name2 in swaps.items():
      i, j = _atom14_index(resname, name1), _atom14_index(resname, name2)
      permutation[restype, [i, j]] = j, i
      is_ambiguous[restype, [i, j]] = 1
    # The swapped atoms all hang off the last chi group; swapping them is a half turn of
    # that group about its x-axis.
    last_group = 3 + len(chi_angles_atoms[resname])
    group_is_ambiguous[restype, last_group] = 1
    group_rots[restype, last_group] = np.diag([1.0, -1.0, -1.0])
  return {
      'permutation': permutation,
      'matrices': np.eye(14, dtype=np.float32)[permutation],
      'is_ambiguous': is_ambiguous,
      'group_is_ambiguous': group_is_ambiguous,
      'group_rots': group_rots,
  }


_ambiguity_tables = _make_ambiguity_tables()
# [21, 14] int32: atom14 slot holding each atom's symmetry partner (identity if none).
restype_atom14_renaming_permutation = _ambiguity_tables['permutation']
# [21, 14, 14] float32 one-hot of the permutation (AlphaFold's all_atom.RENAMING_MATRICES):
# alt_positions[b] = sum_a positions[a] * matrix[a, b].
renaming_matrices = _ambiguity_tables['matrices']
# [21, 14] float32: 1.0 for atoms with an ambiguous name.
restype_atom14_is_ambiguous = _ambiguity_tables['is_ambiguous']
# [21, 8] float32 and [21, 8, 3, 3]: ambiguous rigid groups and the rotation to their
# alternative frames (as AlphaFold's all_atom.atom37_to_frames builds them).
restype_rigidgroup_is_ambiguous = _ambiguity_tables['group_is_ambiguous']
restype_rigidgroup_rots = _ambiguity_tables['group_rots']

# [37] van der Waals radius of each atom37 slot and [21, 14] of each atom14 slot (0 where no
# atom), for the clash losses.
atom_type_van_der_waals_radius = np.array(
    [van_der_waals_radius[name[0]] for name in atom_types], dtype=np.float32)
restype_atom14_van_der_waals_radius = (
    restype_atom14_mask * atom_type_van_der_waals_radius[restype_atom14_to_atom37])


def make_atom14_dists_bounds(overlap_tolerance: float = 1.5,
                             bond_length_tolerance_factor: float = 15
                             ) -> dict[str, np.ndarray]:
  """Allowed intra-residue atom-pair distances in atom14 layout, each [21, 14, 14] float32.

  Bonded and angle-spanning ('virtual bond') pairs get mean +- factor * stddev; every other
  pair of distinct atoms gets a clash floor of the summed van der Waals radii minus
  `overlap_tolerance` and no ceiling (1e10). Suppl. 1.9.11 eq. 44-46.

  Returns: {'lower_bound', 'upper_bound', 'stddev'}.
  """
  lower = np.zeros([21, 14, 14], np.float32)
  upper = np.zeros([21, 14, 14], np.float32)
  stddev = np.zeros([21, 14, 14], np.float32)
  residue_bonds, residue_virtual_bonds, _ = load_stereo_chemical_props()
  for restype, resname in enumerate(resnames[:restype_num]):
    names = restype_name_to_atom14_names[resname]
    slots = [i for i, name in enumerate(names) if name]
    radius = np.array([van_der_waals_radius[names[i][0]] for i in slots])
    pair = np.ix_(slots, slots)
    off_diagonal = ~np.eye(len(slots), dtype=bool)
    lower[restype][pair] = np.where(
        off_diagonal, radius[:, None] + radius[None, :] - overlap_tolerance, 0.0)
    upper[restype][pair] = np.where(off_diagonal, 1e10, 0.0)
    for bond in residue_bonds[resname] + residue_virtual_bonds[resname]:
      i, j = names.index(bond.atom1_name), names.index(bond.atom2_name)
      spread = bond_length_tolerance_factor * bond.stddev
      lower[restype, [i, j], [j, i]] = bond.length - spread
      upper[restype, [i, j], [j, i]] = bond.length + spread
      stddev[restype, [i, j], [j, i]] = bond.stddev
  return {'lower_bound': lower, 'upper_bound': upper, 'stddev': stddev}
