"""Two processes on localhost (jax.distributed, gloo, 4 CPU devices each) train as one: three
steps of the step machinery on a data x fsdp x res mesh over all 8 devices, each process
feeding only its block of the batch, equal those of one process with 8 devices; the
checkpoint the two processes write together is restored by one process exactly, on its 8
devices and on one."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from jaxfold.train import checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / 'tests' / 'multidevice' / 'processes.py'


def _env(devices):
  return {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
          'JAX_PLATFORMS': 'cpu'}


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one_and_one_restores_their_checkpoint(tmp_path):
  together, alone = tmp_path / 'together', tmp_path / 'alone'
  together.mkdir(), alone.mkdir()
  port = _free_port()
  workers = [subprocess.Popen(
      [sys.executable, str(WORKER), str(together), '--process-id', str(i),
       '--num-processes', '2', '--port', str(port)],
      env=_env(4), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  for i, worker in enumerate(workers):
    output, _ = worker.communicate(timeout=900)
    assert worker.returncode == 0, f'process {i}:\n{output[-5000:]}'
  single = subprocess.run(
      [sys.executable, str(WORKER), str(alone), '--restore-from', str(together / 'run')],
      env=_env(8), cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

  reference = np.load(alone / 'params_0.npz')
  restored = np.load(alone / 'restored.npz')
  for i in range(2):
    got = np.load(together / f'params_{i}.npz')
    assert sorted(got.files) == sorted(reference.files)
    scale = max(np.abs(reference[k]).max() for k in reference.files)
    delta = max(np.abs(got[k] - reference[k]).max() for k in reference.files)
    assert delta / scale <= 1e-5, (i, delta / scale)
  together_params = np.load(together / 'params_0.npz')
  for k in together_params.files:  # the two processes' checkpoint, read back by one
    np.testing.assert_array_equal(restored[k], together_params[k])
  # ... and by this process, on one device, as `jaxfold convert` and `--init` read it.
  (together / 'run' / checkpoints.CONFIG_FILE).write_text('{}')
  state = checkpoints.read_state(together / 'run' / checkpoints.CHECKPOINTS_DIR / '3')
  on_one_device = {jax.tree_util.keystr(k): v
                   for k, v in jax.tree_util.tree_flatten_with_path(state['params'])[0]}
  assert on_one_device.keys() == set(together_params.files)
  for k in together_params.files:
    np.testing.assert_array_equal(on_one_device[k], together_params[k])
