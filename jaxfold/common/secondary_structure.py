"""Secondary structure of a chain from its Cα positions: Biotite's P-SEA (Labesse et al., 1997).

P-SEA reads Cα distances and angles only, so it needs no plausible backbone carbonyls (which
an early prediction of a training run may not have), and Biotite is a maintained numpy
implementation (pydssp imports torch; DSSP itself is a separate binary). Used to follow the
secondary structure of predictions over training (`jaxfold.analysis`) and to choose training
chains by the secondary structure of their ground truth (`jaxfold.data.subset`).
"""

import biotite.structure
import numpy as np

# P-SEA's letters and the class names they stand for.
SECONDARY_STRUCTURE = {'a': 'helix', 'b': 'strand', 'c': 'coil'}


def assign(ca: np.ndarray, residue_index: np.ndarray,
           mask: np.ndarray | None = None) -> np.ndarray:
  """[N] class of each residue ('helix', 'strand', 'coil'; '' where masked) from its Cα.

  Args:
    ca: [N, 3] Cα positions.
    residue_index: [N] residue numbers; a gap in them is a chain break.
    mask: [N] residues to assign (default all); the others are left out of the assignment.
  """
  ca = np.asarray(ca, np.float64)
  keep = np.ones(len(ca), bool) if mask is None else np.asarray(mask) > 0
  classes = np.full(len(ca), '', dtype=object)
  if not keep.any():
    return classes
  atoms = biotite.structure.AtomArray(int(keep.sum()))
  atoms.coord = ca[keep]
  atoms.res_id = np.asarray(residue_index)[keep]
  atoms.atom_name[:] = 'CA'
  atoms.element[:] = 'C'
  atoms.res_name[:] = 'ALA'  # P-SEA reads geometry only; any amino acid name will do
  atoms.chain_id[:] = 'A'
  # Coincident Cα (a collapsed early prediction) have no angles: NaN, which P-SEA calls coil.
  with np.errstate(invalid='ignore', divide='ignore'):
    letters = biotite.structure.annotate_sse(atoms)
  classes[keep] = [SECONDARY_STRUCTURE[letter] for letter in letters]
  return classes


def class_fractions(classes: np.ndarray) -> dict[str, float]:
  """{class: fraction of the assigned residues}."""
  assigned = classes[classes != '']
  if not len(assigned):
    raise ValueError('class fractions need at least one assigned residue')
  return {name: float(np.mean(assigned == name)) for name in SECONDARY_STRUCTURE.values()}
