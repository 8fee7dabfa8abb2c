"""Measures of one predicted structure against its truth, for following a training run: the
shape of the prediction (how much of its spread lies along each principal axis), its
secondary structure, its TM-score and its contacts by sequence separation. Numpy on
coordinates; masks select the residues.

The shape measures follow the OpenFold paper's trajectory study (Ahdritz et al., 2024), where
early predictions collapse onto a line, then a plane, before filling three dimensions.

Secondary structure is assigned by `jaxfold.common.secondary_structure` (P-SEA, on Cα).
TM-score is TM-align's (Zhang & Skolnick, 2005) through `tmtools`.
"""

from collections.abc import Mapping

import numpy as np
import tmtools

from jaxfold.common.secondary_structure import SECONDARY_STRUCTURE

# Sequence separations |i - j| of the CASP contact categories; None: no upper bound.
CONTACT_RANGES: Mapping[str, tuple[int, int | None]] = {
    'short': (6, 11), 'medium': (12, 23), 'long': (24, None)}
CONTACT_CUTOFF = 8.0  # Å between Cβ atoms (Cα for glycine)


def _selected(points: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
  points = np.asarray(points, dtype=np.float64)
  if points.ndim != 2 or points.shape[1] != 3:
    raise ValueError(f'expected points [N, 3], got {points.shape}')
  return points if mask is None else points[np.asarray(mask) > 0]


def variance_fractions(points: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """[3] fractions of the points' variance along their principal axes, largest first (sum 1).

  A straight line gives (1, 0, 0), a circle (1/2, 1/2, 0), a sphere's surface thirds.
  """
  x = _selected(points, mask)
  if len(x) < 2:
    raise ValueError(f'variance fractions need at least 2 points, got {len(x)}')
  spread = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
  spread = np.pad(spread, (0, 3 - len(spread)))  # fewer than 3 points: the missing axes are 0
  total = spread.sum()
  return spread / total if total > 0 else np.array([1.0, 0.0, 0.0])


def effective_dimension(fractions: np.ndarray) -> float:
  """The participation ratio (Σλ)² / Σλ² of the principal variances: 1 for a line, 2 for a
  circle, 3 for an isotropic cloud, in between for anything else."""
  fractions = np.asarray(fractions, dtype=np.float64)
  return float(fractions.sum() ** 2 / np.sum(fractions ** 2))


def _contacts(points: np.ndarray, cutoff: float) -> np.ndarray:
  distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
  return distances < cutoff


def contact_precision(predicted: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                      residue_index: np.ndarray | None = None, *,
                      cutoff: float = CONTACT_CUTOFF,
                      ranges: Mapping[str, tuple[int, int | None]] = CONTACT_RANGES
                      ) -> dict[str, float]:
  """Of the residue pairs the prediction puts within `cutoff` Å, the fraction that are within
  it in the truth, per range of sequence separation.

  Args:
    predicted, truth: [N, 3] Cβ positions (Cα for glycine), e.g. `transforms.pseudo_beta`.
    mask: [N] residues present in both (unresolved truth residues: 0).
    residue_index: [N] residue numbers for the separation (default 0..N-1).
    cutoff: contact distance in Å.
    ranges: name -> (least, greatest or None) separation |i - j|, inclusive.

  Returns:
    {range name: precision}; NaN where the prediction has no contact in that range.
  """
  predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
  if predicted.shape != truth.shape or predicted.ndim != 2 or predicted.shape[1] != 3:
    raise ValueError(f'predicted {predicted.shape} and truth {truth.shape} must both be [N, 3]')
  index = np.arange(len(predicted)) if residue_index is None else np.asarray(residue_index)
  present = np.asarray(mask) > 0
  pairs = present[:, None] & present[None, :]
  separation = np.abs(index[:, None] - index[None, :])
  made, real = _contacts(predicted, cutoff), _contacts(truth, cutoff)
  precision = {}
  for name, (least, greatest) in ranges.items():
    in_range = pairs & (separation >= least)
    if greatest is not None:
      in_range &= separation <= greatest
    called = made & in_range
    precision[name] = (float(np.sum(called & real) / np.sum(called)) if called.any()
                       else float('nan'))
  return precision


def secondary_structure_scores(predicted: np.ndarray, truth: np.ndarray
                               ) -> dict[str, dict[str, float]]:
  """{'recall'|'precision': {class: value}} of predicted classes against the truth's, over the
  residues assigned in both; NaN where a class is absent from the truth (recall) or the
  prediction (precision)."""
  both = (predicted != '') & (truth != '')
  predicted, truth = predicted[both], truth[both]
  scores = {'recall': {}, 'precision': {}}
  for name in SECONDARY_STRUCTURE.values():
    right = np.sum((predicted == name) & (truth == name))
    for kind, called in (('recall', truth == name), ('precision', predicted == name)):
      scores[kind][name] = float(right / called.sum()) if called.any() else float('nan')
  return scores


def tm_score(predicted: np.ndarray, truth: np.ndarray, sequence: str) -> float:
  """TM-align's TM-score of predicted Cα [N, 3] against the truth's [N, 3] (same residues,
  e.g. those resolved in the truth), normalised by the truth's length."""
  predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
  if predicted.shape != truth.shape or len(sequence) != len(truth):
    raise ValueError(f'predicted {predicted.shape}, truth {truth.shape} and a sequence of '
                     f'{len(sequence)} residues must match')
  if len(truth) < 3:
    raise ValueError(f'a TM-score needs at least 3 residues, got {len(truth)}')
  return float(tmtools.tm_align(predicted, truth, sequence, sequence).tm_norm_chain2)
