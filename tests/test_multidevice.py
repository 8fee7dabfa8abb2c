"""Runs tests/multidevice/ on 8 simulated CPU devices, in a subprocess: the device count is
fixed when JAX starts, and the rest of the suite runs on one. The slow tier runs its slow
tests (two tiny-config training steps under every layout)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _pytest_on_8_devices(marker: str) -> None:
  env = {**os.environ,
         'XLA_FLAGS': (os.environ.get('XLA_FLAGS', '') +
                       ' --xla_force_host_platform_device_count=8').strip()}
  result = subprocess.run(
      [sys.executable, '-m', 'pytest', 'tests/multidevice', '-q', '-p', 'no:cacheprovider',
       '-m', marker, '-o', 'addopts=', '-ra'],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  print(result.stdout[-20000:], result.stderr[-5000:])
  assert result.returncode == 0, result.stdout[-5000:]


def test_layouts_on_8_devices():
  _pytest_on_8_devices('not slow')


@pytest.mark.slow
def test_tiny_training_on_8_devices():
  _pytest_on_8_devices('slow')
