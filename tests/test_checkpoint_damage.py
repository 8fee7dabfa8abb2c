"""Damaged, failed and unfinished orbax checkpoints (issue #22), each told in one line.

A training run's newest step that does not read back is moved aside for the step before it;
no intact step is one error; a save that fails in the background is raised at the next check
and leaves no temporary folder; what a killed save left is removed at the next start. Orbax's
background noise (its own error logs, and the abandoned reads of a failed restore printing
`RuntimeError: Event loop is closed` for as long as they run) stays off stderr.

A small tree of 200 arrays stands in for a TrainState (no training: these take seconds); the
runs of `jaxfold train` through the same paths are in test_train_cli.py.
"""

import concurrent.futures
import errno
import logging
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxfold.common.errors import JaxfoldError
from jaxfold.convert import checkpoint as jaxfold_checkpoint
from jaxfold.train import checkpoints as checkpoints_lib

LEAVES = 200  # enough arrays that a failed restore leaves many reads in flight


def _state(step: int) -> dict:
  """A TrainState-like tree whose values say which step saved it."""
  rng = np.random.default_rng(step)
  return {'params': {f'layer_{i}': rng.normal(size=(32, 32)).astype(np.float32)
                     for i in range(LEAVES)},
          'step': np.array(step, np.int32)}


def _data_state(step: int) -> dict:
  return {'position': step}


def _save(workdir: pathlib.Path, steps: tuple[int, ...]) -> None:
  with checkpoints_lib.Checkpoints(workdir, keep=3) as checkpoints:
    for step in steps:
      checkpoints.save(step, _state(step), _data_state(step))


@pytest.fixture
def run(tmp_path) -> pathlib.Path:
  """A workdir whose checkpoints/ holds steps 2 and 4."""
  _save(tmp_path / 'run', (2, 4))
  return tmp_path / 'run'


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((step_dir / 'state').rglob('d/*'), key=lambda path: path.stat().st_size)


def _truncate(step_dir: pathlib.Path) -> None:
  path = _largest_array_file(step_dir)
  path.write_bytes(path.read_bytes()[:1000])


DAMAGE = {
    'truncated array file': _truncate,
    'deleted array file': lambda step_dir: _largest_array_file(step_dir).unlink(),
    'garbled array metadata': lambda step_dir: (step_dir / 'state' / '_METADATA').write_text('{'),
    'garbled data position': lambda step_dir: (step_dir / 'data' / 'metadata').write_text('{'),
    'no state': lambda step_dir: _rmtree(step_dir / 'state'),
    'no data position': lambda step_dir: _rmtree(step_dir / 'data'),
}


def _rmtree(path: pathlib.Path) -> None:
  for child in sorted(path.rglob('*'), reverse=True):
    child.rmdir() if child.is_dir() else child.unlink()
  path.rmdir()


def _assert_equal_trees(got: dict, want: dict) -> None:
  np.testing.assert_array_equal(got['step'], want['step'])
  assert got['params'].keys() == want['params'].keys()
  for key, value in want['params'].items():
    np.testing.assert_array_equal(np.asarray(got['params'][key]), value, err_msg=key)


@pytest.mark.parametrize('damage', DAMAGE)
def test_a_damaged_newest_step_gives_way_to_the_one_before(run, damage, caplog):
  caplog.set_level(logging.WARNING)  # whatever level an earlier `jaxfold --quiet` left
  folder = run / checkpoints_lib.CHECKPOINTS_DIR
  DAMAGE[damage](folder / '4')
  with checkpoints_lib.Checkpoints(run, keep=3) as checkpoints:
    step, state, data_state = checkpoints.restore_latest(_state(0))
    assert step == 2 and data_state == _data_state(2)
    _assert_equal_trees(state, _state(2))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f'{folder / "4"}: cannot be read back (')
    assert warnings[0].endswith('moved to 4.damaged, resuming from step 2')
    assert sorted(os.listdir(folder)) == ['2', '4.damaged']
    # The resumed run saves step 4 again: nothing of the damaged one stands in its way.
    checkpoints.save(4, _state(4), _data_state(4))
  with checkpoints_lib.Checkpoints(run, keep=3) as checkpoints:
    assert checkpoints.all_steps() == [2, 4]
    step, state, _ = checkpoints.restore_latest(_state(0))
    assert step == 4
    _assert_equal_trees(state, _state(4))


def test_no_step_that_reads_back_is_one_error_and_the_steps_stay(run):
  folder = run / checkpoints_lib.CHECKPOINTS_DIR
  _truncate(folder / '4')
  DAMAGE['garbled array metadata'](folder / '2')
  with checkpoints_lib.Checkpoints(run, keep=3) as checkpoints:
    with pytest.raises(JaxfoldError, match=rf'^{folder}: no checkpoint reads back \(steps 4, 2\); '
                                           r'step 4: ValueError: OUT_OF_RANGE: Error reading '):
      checkpoints.restore_latest(_state(0))
  assert sorted(os.listdir(folder)) == ['2', '4']


def test_an_empty_run_has_nothing_to_restore(tmp_path):
  with checkpoints_lib.Checkpoints(tmp_path, keep=3) as checkpoints:
    assert checkpoints.restore_latest(_state(0)) is None


def test_what_unfinished_saves_left_is_removed_at_the_next_start(run, caplog):
  caplog.set_level(logging.WARNING)
  folder = run / checkpoints_lib.CHECKPOINTS_DIR
  for name in ('6.orbax-checkpoint-tmp', '8.orbax-checkpoint-tmp-1712345678'):
    (folder / name / 'state').mkdir(parents=True)
  with checkpoints_lib.Checkpoints(run, keep=3) as checkpoints:
    assert checkpoints.all_steps() == [2, 4]
  assert sorted(os.listdir(folder)) == ['2', '4']
  assert [r.getMessage() for r in caplog.records] == [
      f'{folder}: removed what unfinished saves left (6.orbax-checkpoint-tmp, '
      '8.orbax-checkpoint-tmp-1712345678)']


def failing_like_a_full_disk(async_save):
  """`StandardCheckpointHandler.async_save` whose background write fails as on a full disk,
  once orbax has begun it (test_train_cli.py runs `jaxfold train` with it too)."""

  async def failing(self, directory, *args, **kwargs):
    futures = await async_save(self, directory, *args, **kwargs)
    failed = concurrent.futures.Future()
    failed.set_exception(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory)))
    return [*(futures or []), failed]

  return failing


@pytest.fixture
def disk_full(monkeypatch):
  """Every background write of a TrainState fails."""
  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'async_save',
                      failing_like_a_full_disk(ocp.StandardCheckpointHandler.async_save))


def test_a_failed_background_save_stops_at_the_next_check_and_leaves_nothing(
    tmp_path, disk_full, caplog):
  caplog.set_level(logging.WARNING)
  folder = tmp_path / checkpoints_lib.CHECKPOINTS_DIR
  with checkpoints_lib.Checkpoints(tmp_path, keep=3) as checkpoints:
    checkpoints.save(2, _state(2), _data_state(2))
    deadline = time.monotonic() + 60
    with pytest.raises(OSError) as raised:
      while time.monotonic() < deadline:  # a step of training between two checks
        checkpoints.check()
        time.sleep(0.01)
    assert str(raised.value) == (
        f'{folder / "2"}: the checkpoint of step 2 was not saved: OSError: [Errno 28] No space '
        f'left on device: \'{folder / "2.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"}\'')
  assert os.listdir(folder) == []
  # Orbax logged it from its threads, with tracebacks; only the raised error tells it now.
  assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_failed_save_is_raised_by_the_next_save_and_by_close(tmp_path, disk_full):
  folder = tmp_path / checkpoints_lib.CHECKPOINTS_DIR
  checkpoints = checkpoints_lib.Checkpoints(tmp_path, keep=3)
  checkpoints.save(2, _state(2), _data_state(2))
  with pytest.raises(OSError, match=f'^{folder / "2"}: the checkpoint of step 2 was not saved'):
    checkpoints.save(4, _state(4), _data_state(4))
  checkpoints.save(4, _state(4), _data_state(4))
  with pytest.raises(OSError, match=f'^{folder / "4"}: the checkpoint of step 4 was not saved'):
    checkpoints.close()
  assert os.listdir(folder) == []


def test_a_save_that_cannot_start_is_one_error(tmp_path):
  folder = tmp_path / checkpoints_lib.CHECKPOINTS_DIR
  with checkpoints_lib.Checkpoints(tmp_path, keep=3) as checkpoints:
    folder.rmdir()
    folder.write_text('not a folder')  # as a folder that cannot be written
    with pytest.raises(OSError, match=f'^{folder / "2"}: the checkpoint of step 2 was not '
                                      'saved: '):
      checkpoints.save(2, _state(2), _data_state(2))
  assert folder.read_text() == 'not a folder'


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_folder_without_write_permission_is_one_error_naming_it(tmp_path):
  folder = tmp_path / checkpoints_lib.CHECKPOINTS_DIR
  with checkpoints_lib.Checkpoints(tmp_path, keep=3) as checkpoints:
    folder.chmod(0o500)
    try:
      with pytest.raises(OSError, match=f'^{folder / "2"}: the checkpoint of step 2 was not '
                                        'saved: .*Permission denied'):
        checkpoints.save(2, _state(2), _data_state(2))
    finally:
      folder.chmod(0o700)
  assert os.listdir(folder) == []


def test_damaged_checkpoints_print_one_line_and_no_noise_from_orbax(tmp_path):
  """In a process of its own, which exits a moment after the failures, as `jaxfold` does: the
  abandoned reads print, if anything, in those last moments."""
  run = tmp_path / 'run'
  _save(run, (2,))
  _truncate(run / checkpoints_lib.CHECKPOINTS_DIR / '2')
  weights = tmp_path / 'weights'
  jaxfold_checkpoint.save_checkpoint(
      weights, {f'alphafold/alphafold_iteration/block_{i}': {'weights': array}
                for i, array in enumerate(_state(0)['params'].values())}, preset='model_1')
  _truncate_params(weights)
  script = textwrap.dedent(f'''
      import sys, time
      import numpy as np
      from jaxfold.convert import checkpoint
      from jaxfold.train import checkpoints
      target = {{'params': {{f'layer_{{i}}': np.zeros((32, 32), np.float32)
                             for i in range({LEAVES})}}, 'step': np.array(0, np.int32)}}
      try:
        checkpoints.Checkpoints({str(run)!r}, keep=3).restore_latest(target)
      except ValueError as error:
        print('error:', error, file=sys.stderr, flush=True)
      try:
        checkpoint.read_checkpoint({str(weights)!r})
      except ValueError as error:
        print('error:', error, file=sys.stderr, flush=True)
      time.sleep(1)
      ''')
  done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=300, check=True)
  lines = done.stderr.splitlines()
  assert len(lines) == 2, done.stderr[-3000:]
  assert lines[0].startswith(f'error: {run / "checkpoints"}: no checkpoint reads back (steps 2)')
  assert lines[1].startswith(f'error: {weights}: damaged jaxfold checkpoint: cannot restore ')


def _truncate_params(weights: pathlib.Path) -> None:
  path = max((weights / jaxfold_checkpoint.PARAMS_DIR).rglob('d/*'),
             key=lambda path: path.stat().st_size)
  path.write_bytes(path.read_bytes()[:1000])
