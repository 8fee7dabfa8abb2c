"""`jaxfold analyze trajectory`: measure every kept structure of a run and write the table and
figures.

  <output>/trajectory.csv    chain, step, measure, value (one row per measure per step)
  <output>/trajectory.json   the same rows (NaN as null), the kept steps per chain, and per
                             chain and measure the first step within 90% of its final value
                             ('reaching_step', `trajectory.first_step_reaching`)
  <output>/{accuracy,dimensions,secondary_structure,contacts}.png

Every file is written whole or not at all; analysing again (e.g. a run that has validated
since) replaces them.
"""

import csv
import io
import json
import math
import sys

import tqdm

from jaxfold.analysis import figures, trajectory
from jaxfold.common.atomic_file import atomic_write, run_path

TABLE = 'trajectory.csv'
SUMMARY = 'trajectory.json'
OUTPUT_DIR = 'analysis'  # under the workdir, by default


def _finite_or_none(row: dict) -> dict:
  value = row['value']
  return {**row, 'value': value if math.isfinite(value) else None}


def analyze(workdir: str, output: str | None = None, *, quiet: bool = False,
            fraction: float = 0.9) -> list[str]:
  """Measures the run in `workdir` and writes the table and figures to `output` (default
  `<workdir>/analysis`); returns the files written."""
  chains = trajectory.read_kept(workdir)
  rows = []
  with tqdm.tqdm(total=sum(len(chain.steps) for chain in chains), unit='structure',
                 desc='measuring', disable=quiet, file=sys.stderr) as bar:
    for chain in chains:
      for step_rows in trajectory.measure_chain(chain):
        rows.extend(step_rows)
        bar.update()
  by_chain = trajectory.series(rows)
  reached = trajectory.reaching_steps(by_chain, fraction)

  folder = run_path(output) if output else run_path(workdir) / OUTPUT_DIR
  folder.mkdir(parents=True, exist_ok=True)
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=('chain', 'step', 'measure', 'value'),
                          lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  summary = {'workdir': str(workdir),
             'chains': {chain.name: sorted(chain.steps) for chain in chains},
             'reaching_fraction': fraction, 'reaching_step': reached,
             'rows': [_finite_or_none(row) for row in rows]}  # NaN (no contact called): null
  contents = {TABLE: table.getvalue(),
              SUMMARY: json.dumps(summary, indent=1, allow_nan=False) + '\n',
              **{name: figures.render(name, by_chain, reached) for name in figures.FIGURES}}
  written = []
  for name, content in contents.items():
    with atomic_write(folder / name, 'w' if isinstance(content, str) else 'wb') as f:
      f.write(content)
    written.append(str(folder / name))
  return written
