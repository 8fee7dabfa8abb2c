"""Repository-wide test settings: where the shared data and recorded references live."""

import os
import pathlib

import pytest

# The shared folder sits beside the checkout (../shared); JAXFOLD_SHARED overrides it.
SHARED = pathlib.Path(os.environ.get('JAXFOLD_SHARED',
                                     pathlib.Path(__file__).resolve().parent.parent / 'shared'))


@pytest.fixture(scope='session')
def shared_dir() -> pathlib.Path:
  if not SHARED.is_dir():
    pytest.skip(f'shared data folder not found at {SHARED} (set JAXFOLD_SHARED)')
  return SHARED


def pytest_addoption(parser):
  parser.addoption('--parity-report', metavar='PATH', default=None,
                   help='write every agreement measured by the parity suite to PATH as JSON')
