"""`jaxfold train` as a user runs it: the tiny config on a mini OpenProteinSet built from
../shared/data, what the run leaves in its workdir, resumption after SIGTERM and after kill -9
(bit-identical to an uninterrupted run), exporting the trained weights, and bad input: a start
that fails leaves the workdir as it was, a damaged newest checkpoint gives way to the one before
(still bit-identical), and a checkpoint that fails to save stops the run in one line.

The runs are subprocesses sharing one XLA compilation cache, so only the first compiles the
training step (~2-3 minutes on 2 cores); the others start in about a minute. The resumption
test (three runs), the damaged-checkpoint and failed-save runs (their library checks are in
tests/test_checkpoint_damage.py) are in the slow tier; the fast tier runs the uninterrupted
run and its checks, and the failed starts.
"""

import csv
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cli_checks import assert_fails
from jaxfold import cli, inference
from jaxfold.convert import alphafold_npz
from jaxfold.data import training_set
from jaxfold.model.alphafold import AlphaFold
from jaxfold.model.global_config import GlobalConfig
from jaxfold.train import checkpoints, summaries

TINY = str(pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train' / 'tiny.py')
STEPS = 8
VALIDATE_EVERY = 2  # the uninterrupted run's: a trajectory of kept structures to analyse


@pytest.fixture(scope='module')
def dataset(tmp_path_factory, shared_dir):
  data = shared_dir / 'data'
  out = tmp_path_factory.mktemp('tfds')
  summary = training_set.build(data / 'alignments', data / 'mmcif', out,
                               chains=['2q2k_A', '2q2k_B'])
  return summary.dataset_dir


@pytest.fixture(scope='module')
def environment(tmp_path_factory):
  env = dict(os.environ)
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path_factory.mktemp('xla_cache'))
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  return env


def _command(workdir, dataset, validate, validate_every=STEPS):
  """The run; validation reads nothing the training state depends on, so the interrupted
  runs leave it out and compile less (and must still equal the uninterrupted run)."""
  validation = ['--set', f'validation.data={dataset}',
                '--set', f'validation.every={validate_every}',
                '--set', 'validation.max_chains=1'] if validate else []
  return [sys.executable, '-m', 'jaxfold.cli', 'train', '--config', TINY, '--workdir',
          str(workdir), '--data', dataset, '--steps', str(STEPS), '--checkpoint-every', '2',
          *validation]


def _train(workdir, dataset, environment, validate=True, validate_every=STEPS):
  done = subprocess.run(_command(workdir, dataset, validate, validate_every), env=environment,
                        capture_output=True, text=True, timeout=1500, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _logged_step(workdir):
  log = workdir / 'metrics.jsonl'
  lines = log.read_text().splitlines() if log.exists() else []
  return max((json.loads(line)['step'] for line in lines if line.endswith('}')), default=0)


def _interrupt(workdir, dataset, environment, sig, after_step):
  """Starts the run and sends `sig` once it has logged `after_step`."""
  process = subprocess.Popen(_command(workdir, dataset, validate=False), env=environment,
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 1500
  while (_logged_step(workdir) < after_step and process.poll() is None
         and time.monotonic() < deadline):
    time.sleep(0.02)
  process.send_signal(sig)
  _, stderr = process.communicate(timeout=600)
  return process.returncode, stderr


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, dataset, environment):
  workdir = tmp_path_factory.mktemp('run') / 'uninterrupted'
  _train(workdir, dataset, environment, validate_every=VALIDATE_EVERY)
  return workdir


def _state(workdir, step):
  return checkpoints.read_state(workdir / checkpoints.CHECKPOINTS_DIR / str(step))


def _leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _train_lines(workdir):
  lines = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [line for line in lines if line['split'] == 'train']


def test_a_run_leaves_checkpoints_summaries_curves_and_structures(uninterrupted):
  steps = sorted(int(p.name) for p in (uninterrupted / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == STEPS and len(steps) <= 3 + 1  # the last 3, and the best
  lines = _train_lines(uninterrupted)
  assert [line['step'] for line in lines] == list(range(1, STEPS + 1))
  for key in ('loss', 'fape', 'distogram', 'masked_msa', 'plddt', 'aligned_error',
              'learning_rate', 'grad_norm', 'skipped_steps', 'examples_per_second'):
    assert all(np.isfinite(line[key]) for line in lines), key
  assert lines[-1]['loss'] < lines[0]['loss']  # six steps on two chains already learn
  scores = summaries.read_metrics(uninterrupted / 'metrics.jsonl', 'validation')
  validated = list(range(VALIDATE_EVERY, STEPS + 1, VALIDATE_EVERY))
  assert scores['lddt_ca'][0].tolist() == validated and np.all(0 < scores['lddt_ca'][1])
  assert np.all(scores['lddt_ca'][1] < 1)
  assert list((uninterrupted / 'tensorboard').glob('events.out.tfevents.*'))
  assert (uninterrupted / 'loss_curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  kept = list((uninterrupted / 'predictions').iterdir())
  assert len(kept) == 1
  assert sorted(p.name for p in kept[0].iterdir()) == [
      *(f'step_{step:08d}.pdb' for step in validated), 'truth.pdb']


@pytest.mark.slow  # three more runs (~5-7 min on 2 cores); -m slow runs it
def test_resuming_after_sigterm_and_kill_is_bit_identical(tmp_path, dataset, environment,
                                                          uninterrupted):
  workdir = tmp_path / 'interrupted'
  code, stderr = _interrupt(workdir, dataset, environment, signal.SIGTERM, after_step=2)
  assert code == 0, stderr[-3000:]
  assert 'stopped by SIGTERM' in stderr
  # A stop saves the step it stopped at, whether or not a checkpoint was due.
  stopped_at = _logged_step(workdir)
  assert max(checkpoints.Checkpoints(workdir, 3).all_steps()) == stopped_at < STEPS - 3
  # Then killed outright after an odd step, between two checkpoints (every 2 steps); the
  # rerun resumes from the last one written.
  odd = stopped_at + 3 - stopped_at % 2
  code, _ = _interrupt(workdir, dataset, environment, signal.SIGKILL, after_step=odd)
  assert code == -signal.SIGKILL
  killed_at = max(checkpoints.Checkpoints(workdir, 3).all_steps())
  assert stopped_at <= killed_at <= _logged_step(workdir) < STEPS
  done = _train(workdir, dataset, environment, validate=False)
  assert f'resuming from {workdir / "checkpoints" / str(killed_at)}' in done.stderr

  ours, reference = _leaves(_state(workdir, STEPS)), _leaves(_state(uninterrupted, STEPS))
  assert ours.keys() == reference.keys()
  assert any(key.startswith("['opt_state']") for key in ours)
  for key, value in ours.items():
    np.testing.assert_array_equal(value, reference[key], err_msg=key)
  # The log reads as one run: every step once, with the uninterrupted run's losses.
  assert [(l['step'], l['loss']) for l in _train_lines(workdir)] == [
      (l['step'], l['loss']) for l in _train_lines(uninterrupted)]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _relative(ours, reference):
  """max |Δ| / max |reference| over every leaf of two flattened states."""
  delta = max(float(np.abs(ours[k] - reference[k]).max()) for k in reference)
  return delta / max(float(np.abs(v).max()) for v in reference.values())


@pytest.mark.slow  # two processes compile the step side by side, then one resumes (~8 min)
def test_two_processes_train_as_one_and_one_process_resumes_their_run(
    tmp_path, dataset, environment, uninterrupted):
  # The same command on two processes of one CPU device each (the default mesh data=-1 spans
  # both); each process reads only its half of every global batch. Then one process resumes
  # their run to the end: the global batches do not depend on the number of processes.
  workdir, half = tmp_path / 'two_processes', STEPS // 2
  command = [*_command(workdir, dataset, validate=True), '--steps', str(half),
             '--coordinator', f'localhost:{_free_port()}', '--num-processes', '2']
  env = {**environment, 'JAX_PLATFORMS': 'cpu'}
  processes = [subprocess.Popen([*command, '--process-id', str(i)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(2)]
  outputs = [process.communicate(timeout=1500) for process in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert 'mesh data=2' in outputs[0][1] and 'training from step' not in outputs[1][1]
  steps = [(l['step'], l['loss']) for l in _train_lines(workdir)]
  reference = [(l['step'], l['loss']) for l in _train_lines(uninterrupted)]
  assert [step for step, _ in steps] == list(range(1, half + 1))  # logged once, by process 0
  np.testing.assert_allclose([loss for _, loss in steps],
                             [loss for _, loss in reference[:half]], rtol=1e-5)
  scores = summaries.read_metrics(workdir / 'metrics.jsonl', 'validation')
  assert scores['lddt_ca'][0].tolist() == [half] and 0 < scores['lddt_ca'][1, 0] < 1
  assert _relative(_leaves(_state(workdir, half)), _leaves(_state(uninterrupted, half))) <= 1e-4

  done = _train(workdir, dataset, environment)
  assert f'resuming from {workdir / "checkpoints" / str(half)}' in done.stderr
  assert 'mesh data=1' in done.stderr
  steps = [(l['step'], l['loss']) for l in _train_lines(workdir)]
  assert [step for step, _ in steps] == list(range(1, STEPS + 1))
  np.testing.assert_allclose([loss for _, loss in steps], [loss for _, loss in reference],
                             rtol=1e-5)
  assert _relative(_leaves(_state(workdir, STEPS)), _leaves(_state(uninterrupted, STEPS))) <= 1e-4


def test_convert_exports_the_averaged_or_the_trained_weights(uninterrupted, tmp_path):
  step = uninterrupted / 'checkpoints' / str(STEPS)
  state = _state(uninterrupted, STEPS)
  for flag, name in (([], 'ema_params'), (['--no-ema'], 'params')):
    out = tmp_path / f'{name}.npz'
    assert cli.main(['--quiet', 'convert', str(step), str(out), *flag]) == 0
    written = dict(np.load(out))
    expected = alphafold_npz.flat_keys(state[name])
    assert written.keys() == expected.keys()
    for key, value in expected.items():
      np.testing.assert_array_equal(written[key], value, err_msg=key)


def test_a_rerun_with_another_config_or_bad_input_fails_with_one_line(uninterrupted, dataset,
                                                                     tmp_path, capsys):
  def error(*args):
    assert cli.main(['train', '--config', TINY, *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('jaxfold: error: '), lines
    return lines[0]

  common = ['--data', dataset, '--steps', str(STEPS), '--checkpoint-every', '2',
            '--set', f'validation.data={dataset}',
            '--set', f'validation.every={VALIDATE_EVERY}',
            '--set', 'validation.max_chains=1']
  assert 'another config (optimizer differ)' in error(
      '--workdir', str(uninterrupted), *common, '--set', 'optimizer.learning_rate=0.5')
  assert 'data source is not a directory' in error(
      '--workdir', str(tmp_path / 'w'), '--data', str(tmp_path / 'nothing'))
  assert 'no field' in error('--workdir', str(tmp_path / 'w'), '--data', dataset,
                             '--set', 'optimiser.learning_rate=1')
  assert 'no such file or directory (--init)' in error(
      '--workdir', str(tmp_path / 'w'), '--data', dataset, '--init', str(tmp_path / 'x.npz'))
  assert not (tmp_path / 'w').exists()


def test_analyze_trajectory_of_the_run_agrees_with_its_validation(uninterrupted, tmp_path):
  assert cli.main(['--quiet', 'analyze', 'trajectory', '--workdir', str(uninterrupted),
                   '--output', str(tmp_path)]) == 0
  (chain,) = (p.name for p in (uninterrupted / 'predictions').iterdir())
  with open(tmp_path / 'trajectory.csv', newline='') as f:
    rows = [row for row in csv.DictReader(f) if row['chain'] == chain]
  table = {(row['measure'], int(row['step'])): float(row['value']) for row in rows}
  steps, lddt = summaries.read_metrics(uninterrupted / 'metrics.jsonl', 'validation')['lddt_ca']
  assert sorted({step for _, step in table}) == steps.tolist()
  # The kept PDB files (3 decimals) score as validation scored the model's own coordinates.
  np.testing.assert_allclose([table['lddt_ca', step] for step in steps.astype(int)], lddt,
                             atol=2e-3)
  for name in ('accuracy', 'dimensions', 'secondary_structure', 'contacts'):
    assert (tmp_path / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def _truncate_largest_array_file(step_dir):
  path = max((step_dir / 'state').rglob('d/*'), key=lambda path: path.stat().st_size)
  path.write_bytes(path.read_bytes()[:1000])


def test_exporting_a_damaged_checkpoint_is_one_line(uninterrupted, environment, tmp_path):
  """None of the reads orbax abandons print after it, as they did until the process exited."""
  step = tmp_path / 'run' / 'checkpoints' / str(STEPS)
  shutil.copytree(uninterrupted / 'checkpoints' / str(STEPS), step)
  shutil.copy(uninterrupted / checkpoints.CONFIG_FILE, tmp_path / 'run')
  _truncate_largest_array_file(step)
  done = subprocess.run([sys.executable, '-m', 'jaxfold.cli', '--quiet', 'convert', str(step),
                         str(tmp_path / 'out.npz')],
                        env=environment, capture_output=True, text=True, timeout=600)
  assert done.returncode == 2
  assert done.stderr.startswith(f'jaxfold: error: {step}: cannot read the checkpoint: '
                                'ValueError: OUT_OF_RANGE: Error reading ')
  assert len(done.stderr.splitlines()) == 1 and not (tmp_path / 'out.npz').exists()


@pytest.mark.slow  # tests/test_checkpoint_damage.py checks it in the library, fast
def test_a_damaged_newest_checkpoint_gives_way_to_the_one_before(uninterrupted, dataset,
                                                                 environment, tmp_path):
  workdir = tmp_path / 'damaged'
  shutil.copytree(uninterrupted, workdir)
  folder = workdir / 'checkpoints'
  steps = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
  newest, before = steps[-1], steps[-2]
  _truncate_largest_array_file(folder / str(newest))
  (folder / f'{STEPS + 2}.orbax-checkpoint-tmp' / 'state').mkdir(parents=True)  # a killed save

  done = _train(workdir, dataset, environment, validate_every=VALIDATE_EVERY)
  warnings = [line for line in done.stderr.splitlines() if line.startswith('jaxfold: ')]
  assert len(warnings) == 2, warnings
  assert warnings[0] == (f'jaxfold: warning: {folder}: removed what unfinished saves left '
                         f'({STEPS + 2}.orbax-checkpoint-tmp)')
  assert warnings[1].startswith(f'jaxfold: warning: {folder / str(newest)}: cannot be read back '
                                '(ValueError: OUT_OF_RANGE: ')
  assert warnings[1].endswith(f'); moved to {newest}.damaged, resuming from step {before}')
  assert f'resuming from {folder / str(before)}' in done.stderr
  assert 'Traceback' not in done.stderr
  assert (folder / f'{newest}.damaged').is_dir()
  # The steps after `before` computed again are the uninterrupted run's, bit for bit.
  ours, reference = _leaves(_state(workdir, STEPS)), _leaves(_state(uninterrupted, STEPS))
  assert ours.keys() == reference.keys()
  for key, value in ours.items():
    np.testing.assert_array_equal(value, reference[key], err_msg=key)
  assert [(l['step'], l['loss']) for l in _train_lines(workdir)] == [
      (l['step'], l['loss']) for l in _train_lines(uninterrupted)]


def test_a_start_that_fails_on_bad_input_leaves_the_workdir_as_it_was(dataset, environment,
                                                                      tmp_path, capsys):
  """Before, a failed start wrote config.json, and the rerun with the flag corrected then
  failed: 'holds a run with another config'."""
  workdir = tmp_path / 'run'
  empty = tmp_path / 'empty'
  empty.mkdir()
  garbage = tmp_path / 'weights.npz'
  garbage.write_bytes(b'not an npz')
  damaged = tmp_path / 'damaged'
  shutil.copytree(dataset, damaged)
  shard = next(damaged.glob('*-train.array_record-*'))
  data = bytearray(shard.read_bytes())
  data[100:200] = bytes(b ^ 0xff for b in data[100:200])  # the first record's chunk
  shard.write_bytes(data)
  for flags, names in ((['--data', empty], empty),
                       (['--data', damaged], shard),
                       (['--data', dataset, '--init', garbage], garbage)):
    assert_fails(capsys, ['train', '--config', TINY, '--workdir', workdir, *flags], names)
    assert not workdir.exists()
  done = subprocess.run([*_command(workdir, dataset, validate=False), '--steps', '2'],
                        env=environment, capture_output=True, text=True, timeout=1500)
  assert done.returncode == 0, done.stderr[-3000:]
  assert _logged_step(workdir) == 2


# `jaxfold train` whose every background write of a TrainState fails as on a full disk.
_DISK_FULL = f"""
import sys
import orbax.checkpoint as ocp
sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
from test_checkpoint_damage import failing_like_a_full_disk
from jaxfold import cli
ocp.StandardCheckpointHandler.async_save = failing_like_a_full_disk(
    ocp.StandardCheckpointHandler.async_save)
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow  # tests/test_checkpoint_damage.py checks it in the library, fast
def test_a_checkpoint_that_fails_to_save_stops_the_run_in_one_line(dataset, environment,
                                                                   tmp_path):
  workdir = tmp_path / 'run'
  command = _command(workdir, dataset, validate=False)
  done = subprocess.run([sys.executable, '-c', _DISK_FULL, '--quiet', *command[3:]],
                        env=environment, capture_output=True, text=True, timeout=1500)
  assert done.returncode == 2
  folder = workdir / 'checkpoints'
  assert done.stderr.splitlines() == [
      f'jaxfold: error: {folder / "2"}: the checkpoint of step 2 was not saved: OSError: '
      f"[Errno 28] No space left on device: '{folder / '2.orbax-checkpoint-tmp'}"
      "/state.orbax-checkpoint-tmp'"]
  # Stopped by the next save at the latest (step 4), not at the end; nothing half-written.
  assert 2 <= _logged_step(workdir) <= 4 < STEPS
  assert os.listdir(folder) == []


def test_a_trained_step_predicts_without_a_preset_as_the_model_does_in_python(
    uninterrupted, shared_dir, tmp_path, capsys):
  """The tiny config is no preset: its training step, and the jaxfold checkpoint `convert`
  makes of it, carry the run's configuration, so `predict` needs no --preset."""
  step = uninterrupted / 'checkpoints' / str(STEPS)
  converted = tmp_path / 'tiny_checkpoint'
  assert cli.main(['--quiet', 'convert', str(step), str(converted)]) == 0
  features = shared_dir / 'data' / 'features' / 'alphafold_feature_dict.pickle'
  argv = ['--features', str(features), '--max-msa-clusters', '16', '--max-extra-msa', '32']
  predicted = {}
  for params in (step, converted):
    out = tmp_path / f'from_{params.name}'
    status = cli.main(['predict', '--params', str(params), *argv, '--output', str(out),
                       '--name', 'q', '--subbatch-size', '0', '--pair-chunk-size', '0'])
    err = capsys.readouterr().err
    assert status == 0, err
    assert 'predicting q: 73 residues, model_3_ptm, 1 recycling iteration,' in err
    with np.load(out / 'outputs.npz') as outputs:
      predicted[params.name] = outputs['final_atom_positions']
  np.testing.assert_array_equal(predicted[step.name], predicted[converted.name])

  # The library's steps, the network applied by hand.
  model = inference.load_model(step)
  assert model.config == checkpoints.run_config(step).model and model.preset == 'model_3_ptm'
  batch = inference.make_batch(inference.read_features(features), model.config,
                               max_msa_clusters=16, max_extra_msa=32)
  network = AlphaFold(model.config.model, GlobalConfig())  # in one piece, as predicted above
  outputs = jax.jit(inference.prediction_fn(network, 1))(model.params, batch)
  positions = np.asarray(outputs['structure_module']['final_atom_positions'])
  mask = batch['atom37_atom_exists'][0][..., None]
  np.testing.assert_allclose(predicted[step.name] * mask, positions * mask, atol=1e-4)
