"""The structures a training run kept, measured step by step against their truth.

A run that validates keeps the predictions of a few held-out chains at every validation step
(`jaxfold.train.validation.write_predictions`):

  <workdir>/predictions/<chain>/step_<step:08d>.pdb   prediction, pLDDT in the B-factors
  <workdir>/predictions/<chain>/truth.pdb             the experimental atoms

`read_kept` lists what is there (a run still training is read as far as it got); `measure_chain`
scores one chain's predictions, every measure of every step, as rows of a tidy table (chain,
step, measure, value); `first_step_reaching` finds when a measure got within 90% of its final
value. The measures, over the residues resolved in the truth:

  accuracy     lddt_ca, gdt_ts, gdt_ha, rmsd_ca, drmsd_ca (as validation scores them) and
               tm_score (TM-align, normalised by the truth's length); mean_plddt
  shape        pc1/pc2/pc3_fraction (variance along the principal axes of the Cα) and
               effective_dimension, beside the truth's (truth_pc1_fraction, ...)
  secondary    helix/strand/coil_recall and _precision against the truth's classes, the
  structure    predicted class fractions (helix_fraction, ...) beside the truth's
  contacts     contact_precision_short/medium/long (Cβ within 8 Å)

The truth's own measures repeat at every step so that each row stands alone.
"""

import dataclasses
import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from etils import epath

from jaxfold.analysis import measures
from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common import secondary_structure
from jaxfold.common.atomic_file import run_path
from jaxfold.data import transforms
from jaxfold.train import validation

ACCURACY = ('lddt_ca', 'gdt_ts', 'gdt_ha', 'tm_score', 'rmsd_ca', 'drmsd_ca')
SHAPE = ('pc1_fraction', 'pc2_fraction', 'pc3_fraction', 'effective_dimension')
CLASSES = tuple(secondary_structure.SECONDARY_STRUCTURE.values())
CONTACTS = tuple(f'contact_precision_{name}' for name in measures.CONTACT_RANGES)
# Measures where smaller is better; the shape measures and class fractions have no better side.
LOWER_IS_BETTER = frozenset({'rmsd_ca', 'drmsd_ca'})
UNDIRECTED = frozenset(SHAPE + tuple(f'{name}_fraction' for name in CLASSES))

_STEP_FILE = re.compile(r'step_(\d+)\.pdb')


@dataclasses.dataclass(frozen=True)
class KeptChain:
  """A chain's kept structures: its truth and its prediction at each step."""
  name: str
  truth: epath.Path
  steps: Mapping[int, epath.Path]


def read_kept(workdir: str) -> list[KeptChain]:
  """The kept chains of a run, by name, with their prediction files by step.

  Raises:
    FileNotFoundError: `workdir` does not exist.
    ValueError: it holds no kept prediction with its truth.
  """
  root = run_path(workdir)
  if not root.is_dir():
    raise FileNotFoundError(f'{workdir}: no such directory')
  folder = root / validation.PREDICTIONS_DIR
  chains = []
  for chain_dir in sorted(folder.iterdir()) if folder.is_dir() else ():
    steps = {int(match.group(1)): path for path in chain_dir.iterdir()
             if (match := _STEP_FILE.fullmatch(path.name))}
    truth = chain_dir / validation.TRUTH_FILE
    if steps and truth.exists():
      chains.append(KeptChain(chain_dir.name, truth, dict(sorted(steps.items()))))
  if not chains:
    raise ValueError(f'{workdir}: no kept predictions ({validation.PREDICTIONS_DIR}/<chain>/'
                     f'step_*.pdb beside {validation.TRUTH_FILE}); a run keeps them when it '
                     'validates (--set validation.data=... , validation.keep)')
  return chains


def _read_structure(path: epath.Path) -> protein.Protein:
  try:
    return protein.from_pdb_string(path.read_text())
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from e


@dataclasses.dataclass(frozen=True)
class _Truth:
  """The truth laid out on the prediction's residues (unresolved: mask 0)."""
  residue_index: np.ndarray  # [N]
  aatype: np.ndarray  # [N]
  atom_positions: np.ndarray  # [N, 37, 3]
  atom_mask: np.ndarray  # [N, 37]

  @functools.cached_property
  def resolved(self) -> np.ndarray:  # [N] bool: Cα resolved
    return self.atom_mask[:, rc.atom_order['CA']] > 0

  @functools.cached_property
  def ca(self) -> np.ndarray:
    return self.atom_positions[:, rc.atom_order['CA']]

  @functools.cached_property
  def classes(self) -> np.ndarray:
    return secondary_structure.assign(self.ca, self.residue_index, self.resolved)

  @functools.cached_property
  def labels(self) -> dict[str, np.ndarray]:  # as `validation.structure_scores` reads them
    return {'all_atom_positions': self.atom_positions.astype(np.float32),
            'all_atom_mask': self.atom_mask.astype(np.float32)}

  @functools.cached_property
  def sequence(self) -> str:  # of the resolved residues
    return ''.join(rc.restypes_with_x[kind] for kind in self.aatype[self.resolved])

  @functools.cached_property
  def pseudo_beta(self) -> tuple[np.ndarray, np.ndarray]:  # [N, 3] Cβ (Cα for Gly), [N] mask
    return transforms.pseudo_beta(self.aatype, self.atom_positions, self.atom_mask)


def _laid_out(truth: protein.Protein, predicted: protein.Protein, path: epath.Path) -> _Truth:
  """The truth's residues matched to the prediction's by residue number and type."""
  where = {int(number): i for i, number in enumerate(predicted.residue_index)}
  rows = [where.get(int(number), -1) for number in truth.residue_index]
  mismatched = [int(number) for number, row, kind in
                zip(truth.residue_index, rows, truth.aatype)
                if row < 0 or predicted.aatype[row] != kind]
  if mismatched:
    raise ValueError(f'{path}: residues {mismatched[:5]} of the truth are not in the '
                     'prediction or differ in type')
  num_res = len(predicted.aatype)
  positions = np.zeros((num_res, rc.atom_type_num, 3))
  mask = np.zeros((num_res, rc.atom_type_num))
  positions[rows], mask[rows] = truth.atom_positions, truth.atom_mask
  return _Truth(predicted.residue_index, predicted.aatype, positions, mask)


def _truth_measures(truth: _Truth) -> dict[str, float]:
  fractions = measures.variance_fractions(truth.ca, truth.resolved)
  return {**{f'truth_{name}': float(value) for name, value in zip(SHAPE, fractions)},
          'truth_effective_dimension': measures.effective_dimension(fractions),
          **{f'truth_{name}_fraction': value
             for name, value in secondary_structure.class_fractions(truth.classes).items()}}


def _step_measures(predicted: protein.Protein, truth: _Truth) -> dict[str, float]:
  ca = predicted.atom_positions[:, rc.atom_order['CA']]
  resolved = truth.resolved
  scores = validation.structure_scores(predicted.atom_positions.astype(np.float32),
                                       truth.labels)  # chain_metrics is jitted
  row = {name: float(value) for name, value in scores.items()}
  row['tm_score'] = measures.tm_score(ca[resolved], truth.ca[resolved], truth.sequence)
  row['mean_plddt'] = float(np.mean(predicted.b_factors[resolved, rc.atom_order['CA']]))

  fractions = measures.variance_fractions(ca, resolved)
  row.update(zip(SHAPE, fractions.tolist()))
  row['effective_dimension'] = measures.effective_dimension(fractions)

  classes = secondary_structure.assign(ca, predicted.residue_index)
  classes[~resolved] = ''
  for kind, by_class in measures.secondary_structure_scores(classes, truth.classes).items():
    row.update({f'{name}_{kind}': value for name, value in by_class.items()})
  row.update({f'{name}_fraction': value
              for name, value in secondary_structure.class_fractions(classes).items()})

  predicted_cb, _ = transforms.pseudo_beta(predicted.aatype, predicted.atom_positions,
                                           predicted.atom_mask)
  true_cb, true_cb_mask = truth.pseudo_beta
  precision = measures.contact_precision(predicted_cb, true_cb, true_cb_mask,
                                         truth.residue_index)
  row.update({f'contact_precision_{name}': value for name, value in precision.items()})
  return row


def measure_chain(chain: KeptChain) -> Iterator[list[dict[str, object]]]:
  """The rows {chain, step, measure, value} of every measure at each kept step, a list per
  step."""
  truth_structure = _read_structure(chain.truth)
  truth, truth_row = None, None
  for step, path in chain.steps.items():
    predicted = _read_structure(path)
    if truth is None:
      truth = _laid_out(truth_structure, predicted, chain.truth)
      if truth.resolved.sum() < 3:
        raise ValueError(f'{chain.truth}: fewer than 3 resolved residues to measure against')
      truth_row = _truth_measures(truth)
    elif len(predicted.aatype) != len(truth.aatype) or np.any(predicted.aatype != truth.aatype):
      raise ValueError(f'{path}: its residues differ from the chain\'s earlier predictions')
    yield [{'chain': chain.name, 'step': step, 'measure': measure, 'value': value}
           for measure, value in {**_step_measures(predicted, truth), **truth_row}.items()]


def first_step_reaching(steps: Sequence[int], values: Sequence[float], measure: str,
                        fraction: float = 0.9) -> int | None:
  """The first step at which `measure` came within `fraction` of its final value.

  Scores (lDDT, precision, ...): the first value >= fraction x final. Errors (RMSD): the first
  value <= final / fraction. Undirected measures (shape, class fractions): the first step that
  covered `fraction` of the change from the first value to the final one. NaN values (a range
  with no predicted contact) are skipped; None when no value is finite or the final one is not
  positive for a score or an error.
  """
  kept = [(step, value) for step, value in zip(steps, values) if math.isfinite(value)]
  if not kept:
    return None
  final = kept[-1][1]
  if measure in UNDIRECTED:
    start = kept[0][1]
    reached = (lambda v: abs(v - start) >= fraction * abs(final - start) - 1e-12)
  elif final <= 0:
    return None
  elif measure in LOWER_IS_BETTER:
    reached = (lambda v: v <= final / fraction)
  else:
    reached = (lambda v: v >= fraction * final)
  return next(step for step, value in kept if reached(value))


def series(rows: Sequence[Mapping[str, object]]
           ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
  """{chain: {measure: (steps, values)}} of table rows, in step order."""
  grouped: dict[str, dict[str, list]] = {}
  for row in rows:
    grouped.setdefault(row['chain'], {}).setdefault(row['measure'], []).append(
        (row['step'], row['value']))
  return {chain: {measure: tuple(np.asarray(column, dtype=float)
                                 for column in zip(*sorted(points)))
                  for measure, points in by_measure.items()}
          for chain, by_measure in grouped.items()}


def reaching_steps(by_chain: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                   fraction: float = 0.9) -> dict[str, dict[str, int | None]]:
  """{chain: {measure: first step within `fraction` of its final value}} (truth_* left out)."""
  return {chain: {measure: first_step_reaching(steps.astype(int).tolist(), values.tolist(),
                                               measure, fraction)
                  for measure, (steps, values) in by_measure.items()
                  if not measure.startswith('truth_')}
          for chain, by_measure in by_chain.items()}
