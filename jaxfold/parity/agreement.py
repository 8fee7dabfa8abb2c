"""Numerical agreement between two output trees, as DESIGN.md's standards state it, and the
table of judged rows every parity command prints."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

# DESIGN.md: max|Δ| / max|ref| of one module in float32, fed the reference's own inputs.
ALPHAFOLD_MODULE_TOLERANCE = 1e-5
OPENFOLD_MODULE_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Agreement:
  """max|ours - ref| against max|ref| for one named output."""
  name: str
  max_abs_diff: float
  max_abs_ref: float

  @property
  def relative(self) -> float:
    return self.max_abs_diff / self.max_abs_ref if self.max_abs_ref > 0 else self.max_abs_diff

  def row(self) -> str:
    return (f'{self.name:<60s} max|Δ| {self.max_abs_diff:9.3e}  max|ref| {self.max_abs_ref:9.3e}'
            f'  rel {self.relative:9.3e}')


def _flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
  if isinstance(tree, Mapping):
    out = {}
    for key in sorted(tree):
      out.update(_flatten(tree[key], f'{prefix}/{key}' if prefix else str(key)))
    return out
  if isinstance(tree, (tuple, list)):
    out = {}
    for i, item in enumerate(tree):
      out.update(_flatten(item, f'{prefix}[{i}]'))
    return out
  return {prefix: np.asarray(tree)}


def agreement(name: str, ours: Any, ref: Any) -> list[Agreement]:
  """One Agreement per leaf; the two trees must have the same leaves and shapes."""
  ours_flat, ref_flat = _flatten(ours, name), _flatten(ref, name)
  if ours_flat.keys() != ref_flat.keys():
    raise ValueError(f'{name}: output names differ: ours only {sorted(ours_flat.keys() - ref_flat.keys())}, '
                     f'reference only {sorted(ref_flat.keys() - ours_flat.keys())}')
  rows = []
  for key, r in ref_flat.items():
    o = ours_flat[key]
    if o.shape != r.shape:
      raise ValueError(f'{key}: shape {o.shape} differs from the reference {r.shape}')
    o64, r64 = o.astype(np.float64), r.astype(np.float64)
    if not (np.all(np.isfinite(o64)) and np.all(np.isfinite(r64))):
      raise ValueError(f'{key}: non-finite values (ours finite: {np.all(np.isfinite(o64))}, '
                       f'reference finite: {np.all(np.isfinite(r64))})')
    rows.append(Agreement(key, float(np.max(np.abs(o64 - r64), initial=0.0)),
                          float(np.max(np.abs(r64), initial=0.0))))
  return rows


@dataclasses.dataclass(frozen=True)
class Row:
  """One compared output: its error, the tolerance on `measure` ('relative'/'absolute')."""
  name: str
  max_abs_diff: float
  max_abs_ref: float
  tolerance: float | None  # None: measured and reported, not judged
  measure: str = 'relative'
  values: tuple[float, float] | None = None  # (ours, reference) of a compared scalar
  # Beyond its tolerance, but accounted for by a cause shown to hold (e.g. recycled-bin
  # flips, jaxfold.parity.recycling): the row passes and says why.
  explained_by: str | None = None

  @property
  def relative(self) -> float:
    return self.max_abs_diff / self.max_abs_ref if self.max_abs_ref > 0 else self.max_abs_diff

  @property
  def within_tolerance(self) -> bool:
    if self.tolerance is None:
      return True
    value = self.relative if self.measure == 'relative' else self.max_abs_diff
    return bool(value <= self.tolerance)

  @property
  def passed(self) -> bool:
    return self.within_tolerance or self.explained_by is not None

  def row(self) -> str:
    return format_table([self]).splitlines()[1]

  def as_dict(self) -> dict[str, Any]:
    values = {} if self.values is None else dict(zip(('ours', 'reference'), self.values))
    return {'name': self.name, **values, 'max_abs_diff': self.max_abs_diff,
            'max_abs_ref': self.max_abs_ref, 'relative': self.relative,
            'tolerance': self.tolerance, 'measure': self.measure, 'passed': self.passed,
            **({} if self.explained_by is None else {'explained_by': self.explained_by})}


def scalar_row(name: str, ours: float, reference: float, tolerance: float | None,
               measure: str = 'relative') -> Row:
  """One compared scalar (a loss term), its two values kept for the table."""
  ours, reference = float(ours), float(reference)
  return Row(name, abs(ours - reference), abs(reference), tolerance, measure, (ours, reference))


def rows(name: str, ours: Any, ref: Any, tolerance: float | None = ALPHAFOLD_MODULE_TOLERANCE,
         measure: str = 'relative') -> list[Row]:
  return [Row(a.name, a.max_abs_diff, a.max_abs_ref, tolerance, measure)
          for a in agreement(name, ours, ref)]


def format_table(table: list[Row]) -> str:
  """The rows as a fixed-width text table: max|Δ|, max|Δ|/max|ref|, tolerance, pass ('expl':
  beyond tolerance, explained); the two values first when every row is a compared scalar."""
  width = max(len(r.name) for r in table)
  scalars = all(r.values is not None for r in table)
  head = f'{"ours":>14}  {"reference":>14}  ' if scalars else ''

  def values(r: Row) -> str:
    return f'{r.values[0]:>14.7g}  {r.values[1]:>14.7g}  ' if scalars else ''

  lines = [f'{"output":<{width}}  {head}{"max|Δ|":>9}  {"max|ref|":>9}  {"max|Δ|/max|ref|":>15}  '
           f'{"tolerance":>11}  pass']
  for r in table:
    if r.tolerance is None:
      tol, verdict = 'measured', '-'
    else:
      tol = f'{r.tolerance:.0e} {"rel" if r.measure == "relative" else "abs"}'
      verdict = 'yes' if r.within_tolerance else 'expl' if r.passed else 'NO'
    lines.append(f'{r.name:<{width}}  {values(r)}{r.max_abs_diff:9.2e}  {r.max_abs_ref:9.2e}  '
                 f'{r.relative:15.2e}  {tol:>11}  {verdict}')
  return '\n'.join(lines)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """What a parity run measured: the table, and against what and on what it was measured."""
  reference: str  # e.g. 'AlphaFold (live)', 'OpenFold (recorded in DIR)'
  preset: str
  num_recycle: int
  num_residues: int
  rows: list[Row]
  seconds: dict[str, float]
  # Findings beside the rows, printed under the table (one line each) and kept in the report.
  notes: tuple[str, ...] = ()
  details: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def passed(self) -> bool:
    return all(r.passed for r in self.rows)

  def report(self) -> dict[str, Any]:
    return {'reference': self.reference, 'preset': self.preset, 'num_recycle': self.num_recycle,
            'num_residues': self.num_residues, 'passed': self.passed, 'seconds': self.seconds,
            'rows': [r.as_dict() for r in self.rows], 'notes': list(self.notes), **self.details}
