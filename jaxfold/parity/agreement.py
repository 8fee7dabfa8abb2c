"""Numerical agreement between two output trees, as DESIGN.md's standards state it."""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


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
