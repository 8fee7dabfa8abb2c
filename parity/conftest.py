"""Parity suite set-up: float32 CPU numerics, the live reference, and a table of measured errors.

Every comparison goes through the `parity` fixture, which asserts the tolerance and records
the measured figures; the table is printed at the end of the run so CI logs carry it.
"""

import json
import pathlib

import jax
import pytest

jax.config.update('jax_default_matmul_precision', 'highest')

# AlphaFold-level tolerance of DESIGN.md: max|Δ| / max|ref| in float32, same backend.
ALPHAFOLD_TOLERANCE = 1e-5

from jaxfold.parity.agreement import agreement

try:  # the live reference comes with the test extra: pip install -e '.[test]'
  import alphafold.model.modules  # noqa: F401
  import haiku  # noqa: F401
except ImportError:
  collect_ignore_glob = ['test_*.py']

_ROWS = []


class _Parity:
  """check(name, ours, ref, tol): per-output agreement within tol, recorded for the report."""

  def check(self, name, ours, ref, tol=ALPHAFOLD_TOLERANCE):
    rows = agreement(name, ours, ref)
    _ROWS.extend(rows)
    bad = [r.row() for r in rows if not r.relative <= tol]
    assert not bad, f'beyond tolerance {tol:g}:\n' + '\n'.join(bad)
    return rows

  def record(self, rows):
    """Rows measured elsewhere (jaxfold.parity.agreement.Row), each with its tolerance."""
    _ROWS.extend(rows)
    bad = [r.row() for r in rows if not r.passed]
    assert not bad, 'beyond tolerance:\n' + '\n'.join(bad)
    return rows


@pytest.fixture
def parity():
  return _Parity()


def pytest_terminal_summary(terminalreporter, config):
  if not _ROWS:
    return
  terminalreporter.section('parity with AlphaFold and OpenFold: measured errors (float32)')
  for row in _ROWS:
    terminalreporter.write_line(row.row())
  path = config.getoption('--parity-report')
  if path:
    report = [{'name': r.name, 'max_abs_diff': r.max_abs_diff, 'max_abs_ref': r.max_abs_ref,
               'relative': r.relative} for r in _ROWS]
    tmp = pathlib.Path(path).with_suffix('.tmp')
    tmp.write_text(json.dumps({'tolerance': ALPHAFOLD_TOLERANCE, 'rows': report}, indent=1))
    tmp.replace(path)  # atomic: a reader never sees half a report
    terminalreporter.write_line(f'parity report: {path} ({len(report)} rows)')
