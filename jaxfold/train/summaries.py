"""Training summaries: TensorBoard event files, a JSON-lines metrics log, a loss-curve PNG, a
progress bar.

Layout under the workdir: `tensorboard/` (train scalars), `tensorboard/validation/` (validation
scalars, a second TensorBoard run beside the first) and `metrics.jsonl`, one line per call:
{"step": 10, "split": "train", "time": 1700000000.0, "loss": 1.5, ...}, non-finite values as null.
"""

import json
import math
import os
import sys
import time
from collections.abc import Mapping

import numpy as np
import tqdm
from etils import epath
from matplotlib.figure import Figure

from jaxfold.common.atomic_file import atomic_write, is_remote, run_path
from jaxfold.common.errors import described_os_error


def _import_tensorboardx():
  """tensorboardX, imported without torch.

  Its writer imports torch whenever torch is installed (jaxfold's torch extra), only to name a
  tensor type: seconds of start-up and torch's own CUDA libraries loaded into a JAX process.
  """
  if 'torch' in sys.modules:
    import tensorboardX  # pylint: disable=import-outside-toplevel
    return tensorboardX
  sys.modules['torch'] = None  # `import torch` raises ImportError, which tensorboardX expects
  try:
    import tensorboardX  # pylint: disable=import-outside-toplevel
  finally:
    del sys.modules['torch']
  return tensorboardX


tensorboardX = _import_tensorboardx()

SPLITS = ('train', 'validation')
# Train scalars that are not loss terms; the learning rate gets its own panel.
NOT_LOSS_TERMS = frozenset(
    {'learning_rate', 'grad_norm', 'skipped', 'skipped_steps', 'examples_per_second',
     'num_recycle'})
_RECORD_KEYS = ('step', 'split', 'time')
# On object storage, which cannot append, the metrics log is uploaded whole at most this often
# (and at every flush and close).
REMOTE_LOG_UPLOAD_S = 60.0
_LABELS = {'loss': 'loss', 'terms': 'loss terms', 'lddt_ca': 'validation lDDT-Cα',
           'learning_rate': 'learning rate'}


class SummaryWriter:
  """Writes every scalar to TensorBoard and to `metrics.jsonl`; process 0 alone should own one.

  On resuming from the checkpoint of step `resume_step`, log lines of later steps are dropped
  (the file is rewritten atomically) and TensorBoard is told to hide events after that step.
  A gs:// workdir works the same; there the log is kept in memory and uploaded whole every
  `REMOTE_LOG_UPLOAD_S` seconds and on `flush` and `close`.
  """

  def __init__(self, workdir: str | os.PathLike, resume_step: int | None = None):
    workdir = run_path(workdir)
    self.metrics_path = workdir / 'metrics.jsonl'
    workdir.mkdir(parents=True, exist_ok=True)
    if resume_step is not None and self.metrics_path.exists():
      _truncate_log(self.metrics_path, resume_step)
    self._remote_lines = None
    if is_remote(workdir):
      self._remote_lines = (self.metrics_path.read_text(encoding='utf-8').splitlines(True)
                            if self.metrics_path.exists() else [])
      self._uploaded = time.monotonic()
    purge_step = None if resume_step is None else resume_step + 1
    # Event file names carry only the second and host; a nanosecond suffix keeps a resume within
    # the same second from overwriting the earlier file, and keeps the files in time order.
    self._writers = {
        split: tensorboardX.SummaryWriter(
            str(workdir / 'tensorboard' / ('' if split == 'train' else split)),
            purge_step=purge_step, filename_suffix=f'.{time.time_ns()}')
        for split in SPLITS}

  def scalars(self, step: int, values: Mapping[str, float], split: str = 'train') -> None:
    """Writes `values` (numbers, numpy or jax scalars) of `split` at `step`."""
    if split not in SPLITS:
      raise ValueError(f'split {split!r}: expected one of {SPLITS}')
    reserved = set(values) & set(_RECORD_KEYS)
    if reserved:
      raise ValueError(f'scalar names {sorted(reserved)} are reserved for the metrics log')
    now = time.time()
    floats = {name: float(value) for name, value in values.items()}
    for name, value in floats.items():
      self._writers[split].add_scalar(name, value, global_step=int(step), walltime=now)
    record = {'step': int(step), 'split': split, 'time': now}
    record.update({name: v if math.isfinite(v) else None for name, v in floats.items()})
    line = json.dumps(record, allow_nan=False) + '\n'
    if self._remote_lines is None:
      # One write of one whole line: a crash leaves at most a torn last line.
      try:
        with open(self.metrics_path, 'a', encoding='utf-8') as f:
          f.write(line)
      except OSError as e:  # a full disk names no file
        raise described_os_error(e, self.metrics_path) from e
    else:
      self._remote_lines.append(line)
      if time.monotonic() - self._uploaded > REMOTE_LOG_UPLOAD_S:
        self._upload_log()

  def _upload_log(self) -> None:
    with atomic_write(self.metrics_path, 'w') as f:
      f.writelines(self._remote_lines)
    self._uploaded = time.monotonic()

  def flush(self) -> None:
    """Writes out what is buffered (TensorBoard events; on object storage, the log)."""
    for writer in self._writers.values():
      writer.flush()
    if self._remote_lines is not None:
      self._upload_log()

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    if self._remote_lines is not None:
      self._upload_log()

  def __enter__(self) -> 'SummaryWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _truncate_log(path: epath.Path, resume_step: int) -> None:
  """Keeps the lines of `path` with step <= `resume_step`, and drops a torn last line."""
  lines = path.read_text(encoding='utf-8').splitlines(keepends=True)
  kept = []
  for number, line in enumerate(lines, 1):
    try:
      step = json.loads(line)['step']
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      if number == len(lines) and not line.endswith('\n'):
        continue
      raise ValueError(f'{path}:{number}: not a metrics record: {line.strip()[:80]!r}') from e
    if step <= resume_step:
      kept.append(line)
  with atomic_write(path, 'w') as f:
    f.writelines(kept)


def read_metrics(metrics_path: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
  """The scalars of `split` in a metrics log as {name: [2, n] array of (step, value)}; null=NaN."""
  series = {}
  with run_path(metrics_path).open(encoding='utf-8') as f:
    for line in f:
      record = json.loads(line)
      if record['split'] != split:
        continue
      for name, value in record.items():
        if name not in _RECORD_KEYS:
          series.setdefault(name, []).append((record['step'], np.nan if value is None else value))
  return {name: np.array(points, dtype=np.float64).T for name, points in series.items()}


def plot_loss_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
  """Plots a metrics log to a PNG: loss, loss terms, validation lDDT-Cα, learning rate."""
  train = read_metrics(metrics_path, 'train')
  validation = read_metrics(metrics_path, 'validation')
  if 'loss' not in train:
    raise ValueError(f'{metrics_path}: no train "loss" to plot')
  terms = sorted(set(train) - NOT_LOSS_TERMS - {'loss'})
  panels = ['loss'] + ['terms'] * bool(terms) + ['lddt_ca'] * ('lddt_ca' in validation)
  panels += ['learning_rate'] * ('learning_rate' in train)
  heights = [1 if panel == 'learning_rate' else 3 for panel in panels]
  figure = Figure(figsize=(10, sum(heights)), dpi=100, layout='constrained')
  axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False,
                         gridspec_kw={'height_ratios': heights})[:, 0]
  for ax, panel in zip(axes, panels):
    if panel == 'loss':
      ax.plot(*train['loss'], label='train')
      if 'loss' in validation:
        ax.plot(*validation['loss'], 'o-', label='validation')
    elif panel == 'terms':
      for name in terms:
        ax.plot(*train[name], label=name, linewidth=1)
      values = np.concatenate([train[name][1] for name in terms])
      if np.all(values[np.isfinite(values)] > 0):
        ax.set_yscale('log')
    elif panel == 'lddt_ca':
      ax.plot(*validation['lddt_ca'], 'o-')
    else:
      ax.plot(*train['learning_rate'])
    ax.set_ylabel(_LABELS[panel])
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small', ncols=1 + len(ax.lines) // 8)
  axes[-1].set_xlabel('step')
  with atomic_write(png_path, 'wb') as f:
    figure.savefig(f, format='png')


class Progress:
  """A tqdm bar over training steps: step, loss, examples/s and tqdm's own ETA."""

  def __init__(self, steps: int, resume_step: int = 0, disable: bool = False):
    self._bar = tqdm.tqdm(total=steps, initial=resume_step, unit='step', dynamic_ncols=True,
                          disable=disable)

  def update(self, step: int, loss: float, examples_per_second: float) -> None:
    self._bar.set_postfix(
        {'loss': f'{float(loss):.4g}', 'examples/s': f'{float(examples_per_second):.3g}'},
        refresh=False)
    self._bar.update(int(step) - self._bar.n)

  def close(self) -> None:
    self._bar.close()

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
