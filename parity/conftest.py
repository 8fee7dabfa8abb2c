"""Parity suite set-up: float32 CPU numerics, the live reference, and a table of measured errors.

Every comparison goes through the `parity` fixture, which asserts the tolerance and records
the measured figures; the table is printed at the end of the run so CI logs carry it.
"""

import jax
import pytest

jax.config.update('jax_default_matmul_precision', 'highest')

# AlphaFold-level tolerance of DESIGN.md: max|Δ| / max|ref| in float32, same backend.
ALPHAFOLD_TOLERANCE = 1e-5

pytest.importorskip('haiku', reason='the parity suite needs the test extra: pip install -e .[test]')
pytest.importorskip('alphafold.model.modules', reason='the parity suite needs alphafold-colabfold')

from jaxfold.parity.agreement import agreement  # noqa: E402

_ROWS = []


class _Parity:
  """check(name, ours, ref, tol): per-output agreement within tol, recorded for the report."""

  def check(self, name, ours, ref, tol=ALPHAFOLD_TOLERANCE):
    rows = agreement(name, ours, ref)
    _ROWS.extend(rows)
    bad = [r.row() for r in rows if not r.relative <= tol]
    assert not bad, f'beyond tolerance {tol:g}:\n' + '\n'.join(bad)
    return rows


@pytest.fixture
def parity():
  return _Parity()


def pytest_terminal_summary(terminalreporter):
  if _ROWS:
    terminalreporter.section('parity with AlphaFold: measured errors (float32)')
    for row in _ROWS:
      terminalreporter.write_line(row.row())
