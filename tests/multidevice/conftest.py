"""These tests need 8 devices: tests/test_multidevice.py runs them in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before JAX starts); a plain pytest
run skips collecting them."""

import os

DEVICES_FLAG = '--xla_force_host_platform_device_count=8'

if DEVICES_FLAG not in os.environ.get('XLA_FLAGS', ''):
  collect_ignore_glob = ['test_*.py']
