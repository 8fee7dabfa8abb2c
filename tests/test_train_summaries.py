"""Training summaries (jaxfold.train.summaries): scalars read back from TensorBoard's own event
reader and from metrics.jsonl, resume truncation, NaN handling, the loss-curve PNG, the bar."""

import io
import json
import math
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image
from tensorboard.backend.event_processing import event_accumulator

from jaxfold.train import summaries


def _events(logdir) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value)]} as TensorBoard's Python loader reads `logdir` (purges included)."""
  accumulator = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.SCALARS: 0})
  accumulator.Reload()
  return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
          for tag in accumulator.Tags()['scalars']}


def _log(workdir) -> list[dict]:
  with open(workdir / 'metrics.jsonl', encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _train_values(step: int, scale: float = 1.) -> dict:
  return {'loss': scale * 10. / step, 'fape': np.float32(scale * 2. / step),
          'distogram': jnp.asarray(scale * 5. / step), 'learning_rate': 1e-3 * min(step, 3) / 3,
          'grad_norm': 1.5, 'examples_per_second': 4.}


def test_scalars_read_back_from_event_files_and_log(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    for step in (1, 2, 3):
      writer.scalars(step, _train_values(step))
    writer.scalars(3, {'lddt_ca': np.float64(0.25), 'loss': 2.}, split='validation')
  train = _events(tmp_path / 'tensorboard')
  assert set(train) == {'loss', 'fape', 'distogram', 'learning_rate', 'grad_norm',
                        'examples_per_second'}
  assert [s for s, _ in train['loss']] == [1, 2, 3]
  np.testing.assert_allclose([v for _, v in train['fape']], [2., 1., 2. / 3], rtol=1e-6)
  assert _events(tmp_path / 'tensorboard' / 'validation') == {'lddt_ca': [(3, 0.25)],
                                                               'loss': [(3, 2.)]}
  records = _log(tmp_path)
  assert [(r['step'], r['split']) for r in records] == [
      (1, 'train'), (2, 'train'), (3, 'train'), (3, 'validation')]
  assert records[1]['distogram'] == pytest.approx(2.5) and records[2]['loss'] == 10. / 3
  assert all(isinstance(r['time'], float) and r['time'] > 1.6e9 for r in records)


def test_resume_drops_later_log_lines_and_hides_later_events(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    for step in range(1, 6):
      writer.scalars(step, {'loss': float(step)})
    writer.scalars(4, {'lddt_ca': 0.5}, split='validation')
  with open(tmp_path / 'metrics.jsonl', 'a', encoding='utf-8') as f:
    f.write('{"step": 6, "split": "tr')  # killed mid-write
  # Restarted from the checkpoint of step 3: steps 4 and 5 are run again.
  with summaries.SummaryWriter(tmp_path, resume_step=3) as writer:
    assert [r['step'] for r in _log(tmp_path)] == [1, 2, 3]
    for step in (4, 5):
      writer.scalars(step, {'loss': 10. * step})
    writer.scalars(4, {'lddt_ca': 0.75}, split='validation')
  assert [(r['step'], r['loss']) for r in _log(tmp_path) if r['split'] == 'train'] == [
      (1, 1.), (2, 2.), (3, 3.), (4, 40.), (5, 50.)]
  assert _events(tmp_path / 'tensorboard')['loss'] == [(1, 1.), (2, 2.), (3, 3.), (4, 40.),
                                                       (5, 50.)]
  assert _events(tmp_path / 'tensorboard' / 'validation')['lddt_ca'] == [(4, 0.75)]
  assert not list(tmp_path.glob('.metrics.jsonl*'))  # no temporary file left behind


def test_resume_rejects_a_corrupt_line_that_is_not_the_last(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "split": "train"}\nnot json\n'
                                          '{"step": 2, "split": "train"}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl:2: not a metrics record'):
    summaries.SummaryWriter(tmp_path, resume_step=1)


def test_non_finite_values_are_null_in_the_log_and_kept_in_tensorboard(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    writer.scalars(1, {'loss': jnp.float32(jnp.nan), 'grad_norm': np.inf, 'fape': 1.})
  line = (tmp_path / 'metrics.jsonl').read_text()
  assert 'NaN' not in line and 'Infinity' not in line
  record = json.loads(line)
  assert record['loss'] is None and record['grad_norm'] is None and record['fape'] == 1.
  events = _events(tmp_path / 'tensorboard')
  assert math.isnan(events['loss'][0][1]) and events['grad_norm'][0][1] == math.inf


def test_bad_split_and_reserved_names_are_rejected(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    with pytest.raises(ValueError, match='split'):
      writer.scalars(1, {'loss': 1.}, split='test')
    with pytest.raises(ValueError, match='reserved'):
      writer.scalars(1, {'step': 1.})


def test_loss_curve_png(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    for step in range(1, 41):
      writer.scalars(step, _train_values(step))
      if step % 10 == 0:
        writer.scalars(step, {'lddt_ca': step / 50, 'loss': 20. / step}, split='validation')
    writer.scalars(41, {**_train_values(41), 'loss': np.nan})  # a gap, not a failure
  png = tmp_path / 'loss_curves.png'
  summaries.plot_loss_curves(tmp_path / 'metrics.jsonl', png)
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  pixels = image.imread(png)
  # Panels loss, terms, lDDT-Cα (3 units each) and learning rate (1 unit) at 100 dpi.
  assert pixels.shape[1] == 1000 and pixels.shape[0] == 1000 and pixels.shape[2] in (3, 4)
  rgb = pixels[..., :3]
  assert rgb.std() > 0.05 and (rgb < 0.5).mean() > 0.005  # lines and text on a white page


def test_loss_curve_without_validation_or_learning_rate(tmp_path):
  with summaries.SummaryWriter(tmp_path) as writer:
    for step in range(1, 5):
      writer.scalars(step, {'loss': 1. / step, 'fape': -1. + step})  # terms not all positive
  summaries.plot_loss_curves(tmp_path / 'metrics.jsonl', tmp_path / 'curves.png')
  assert image.imread(tmp_path / 'curves.png').shape[:2] == (600, 1000)


def test_loss_curve_needs_a_train_loss(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "split": "validation", "lddt_ca": 0.5}\n')
  with pytest.raises(ValueError, match='no train "loss"'):
    summaries.plot_loss_curves(tmp_path / 'metrics.jsonl', tmp_path / 'curves.png')


def test_progress_bar_shows_step_loss_and_rate(monkeypatch):
  stream = io.StringIO()
  monkeypatch.setattr('sys.stderr', stream)
  with summaries.Progress(steps=100, resume_step=40) as progress:
    progress.update(45, jnp.float32(1.25), np.float64(12.))
  text = stream.getvalue()
  assert '45/100' in text and 'loss=1.25' in text and 'examples/s=12' in text
  quiet = io.StringIO()
  monkeypatch.setattr('sys.stderr', quiet)
  with summaries.Progress(steps=100, disable=True) as progress:
    progress.update(1, 1., 1.)
  assert quiet.getvalue() == ''


def test_import_leaves_torch_out():
  script = ('import sys; import jaxfold.train.summaries; '
            'print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          check=True)
  assert result.stdout.strip() == '[]'
