"""A gs:// workdir: the run files jaxfold writes itself (config check, metrics log, loss curves,
atomic files) and `jaxfold analyze trajectory`'s reading of the kept structures go through
etils.epath, which is pointed here at a local folder standing in for the bucket. Object
storage cannot append or rename, so the metrics log is uploaded whole.

What this cannot show without Cloud Storage: orbax's own gs:// checkpoints (tensorstore's GCS
driver) and tensorboardX's GCS event writer, which are those libraries' code paths.
"""

import json
import os
import pathlib

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from jaxfold import cli
from jaxfold.common import atomic_file, protein
from jaxfold.common.atomic_file import atomic_write, is_remote, run_path
from jaxfold.train import config as config_lib, loop, summaries

BUCKET = 'gs://jaxfold-test-bucket'


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """gs://jaxfold-test-bucket/... lives in tmp_path/bucket/...; local paths are untouched."""
  root = tmp_path / 'bucket'
  root.mkdir()

  def local(path):
    path = os.fspath(path)
    return str(root / path[len(BUCKET) + 1:]) if path.startswith(BUCKET) else path

  def redirect(original, path, *args, **kwargs):
    return original(local(path), *args, **kwargs)

  def redirect_two(original, path, dst, *args, **kwargs):
    return original(local(path), local(dst), *args, **kwargs)

  one = {name: redirect for name in ('exists', 'glob', 'isdir', 'listdir', 'makedirs', 'mkdir',
                                     'open', 'remove', 'rmtree', 'stat', 'walk')}
  two = {name: redirect_two for name in ('copy', 'rename', 'replace')}
  # gcsfs itself is not needed: epath's backends are replaced below.
  monkeypatch.setattr(atomic_file, '_REMOTE_PACKAGES', {'gs://': 'etils'})
  # TensorBoard's gs:// writer is tensorboardX's (google-cloud-storage); record where it writes.
  logdirs = []
  monkeypatch.setattr(summaries.tensorboardX, 'SummaryWriter',
                      lambda logdir, **_: logdirs.append(logdir) or _NoEvents())
  with epath_testing.mock_epath(**one, **two):
    yield root, logdirs


class _NoEvents:

  def add_scalar(self, *args, **kwargs):
    pass

  def flush(self):
    pass

  def close(self):
    pass


@pytest.mark.usefixtures('bucket')  # gs:// reachable
def test_remote_paths_are_recognised_and_local_ones_made_absolute():
  assert is_remote('gs://b/run') and is_remote(epath.Path('gs://b/run'))
  assert not is_remote('runs/gs://odd') and not is_remote('/tmp/run')
  assert os.fspath(run_path('gs://b/run/x')) == 'gs://b/run/x'
  assert os.fspath(run_path('rel')) == os.path.abspath('rel')


def test_atomic_write_uploads_once_and_not_on_error(bucket):
  root, _ = bucket
  with atomic_write(f'{BUCKET}/a.txt', 'w') as f:
    f.write('whole')
  assert (root / 'a.txt').read_text() == 'whole'
  with pytest.raises(RuntimeError), atomic_write(f'{BUCKET}/a.txt', 'w') as f:
    f.write('half')
    raise RuntimeError('stopped')
  assert (root / 'a.txt').read_text() == 'whole'


def test_the_metrics_log_is_uploaded_whole_and_truncated_on_resume(bucket, monkeypatch):
  root, logdirs = bucket
  workdir = f'{BUCKET}/run'
  writer = summaries.SummaryWriter(workdir)
  assert logdirs == [f'{workdir}/tensorboard', f'{workdir}/tensorboard/validation']
  writer.scalars(1, {'loss': 3.0})
  assert not (root / 'run' / 'metrics.jsonl').exists()  # buffered: no append on object storage
  monkeypatch.setattr(summaries, 'REMOTE_LOG_UPLOAD_S', 0.0)
  writer.scalars(2, {'loss': 2.0})
  writer.scalars(2, {'lddt_ca': 0.5}, split='validation')
  writer.flush()
  steps = lambda: [json.loads(l)['step'] for l in (root / 'run' / 'metrics.jsonl').open()]
  assert steps() == [1, 2, 2]
  writer.close()

  resumed = summaries.SummaryWriter(workdir, resume_step=1)
  assert steps() == [1]
  resumed.scalars(2, {'loss': 2.5})
  resumed.close()
  assert steps() == [1, 2]
  np.testing.assert_array_equal(summaries.read_metrics(f'{workdir}/metrics.jsonl', 'train')['loss'],
                                [[1, 2], [3.0, 2.5]])
  summaries.plot_loss_curves(f'{workdir}/metrics.jsonl', f'{workdir}/loss_curves.png')
  assert (root / 'run' / 'loss_curves.png').read_bytes()[:4] == b'\x89PNG'


def test_a_rerun_in_a_remote_workdir_is_checked_against_its_config(bucket):
  root, _ = bucket
  workdir = run_path(f'{BUCKET}/run')
  workdir.mkdir(parents=True)
  config = config_lib.TrainConfig(steps=4)
  loop._check_workdir_config(workdir, config, write=True)  # pylint: disable=protected-access
  assert json.loads((root / 'run' / 'config.json').read_text())['steps'] == 4
  with pytest.raises(config_lib.ConfigError, match=r'gs://jaxfold-test-bucket/run: holds a run '
                     r'with another config \(seed differ\)'):
    loop._check_workdir_config(  # pylint: disable=protected-access
        workdir, config_lib.TrainConfig(steps=4, seed=7), write=False)


def test_a_gs_workdir_without_its_package_is_one_line(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(atomic_file, '_REMOTE_PACKAGES', {'gs://': 'jaxfold_no_such_package'})
  tiny = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train' / 'tiny.py'
  assert cli.main(['train', '--config', str(tiny), '--workdir', f'{BUCKET}/run',
                   '--data', str(tmp_path)]) == 2
  error = capsys.readouterr().err.strip()
  assert error == (f'jaxfold: error: {BUCKET}/run: object storage needs the '
                   "jaxfold_no_such_package package (for gs://: pip install 'jaxfold[tpu]')")
  assert not list(tmp_path.iterdir())


def test_analyze_trajectory_reads_and_writes_the_bucket(bucket, shared_dir):
  root, _ = bucket
  truth = protein.from_mmcif_string((shared_dir / 'data' / 'mmcif' / '2q2k.cif').read_text(), 'A')
  folder = root / 'run' / 'predictions' / '2q2k_A'
  folder.mkdir(parents=True)
  for name in ('truth.pdb', 'step_00000001.pdb', 'step_00000002.pdb'):
    (folder / name).write_text(protein.to_pdb(truth))
  assert cli.main(['--quiet', 'analyze', 'trajectory', '--workdir', f'{BUCKET}/run']) == 0
  written = root / 'run' / 'analysis'
  assert sorted(p.name for p in written.iterdir()) == [
      'accuracy.png', 'contacts.png', 'dimensions.png', 'secondary_structure.png',
      'trajectory.csv', 'trajectory.json']
  summary = json.loads((written / 'trajectory.json').read_text())
  assert summary['workdir'] == f'{BUCKET}/run' and summary['chains'] == {'2q2k_A': [1, 2]}
