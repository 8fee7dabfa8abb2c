"""Over-fit one real chain with the tiny config: the loss must fall clearly.

Builds a one-chain training set (PDB 2q2k chain A, its OpenProteinSet-style alignments in
../shared/data), trains `configs/train/tiny.py` on it with `jaxfold train` (random 32-residue
crops, 0-1 recycling iterations, dropout on, as in training), validates the whole chain with
the averaged parameters every `--validate-every` steps, and prints the loss curve (mean of each
window of steps) and the validation lDDT-Cα. The run's own loss_curves.png is in the workdir.

  python examples/overfit_one_chain.py [--steps 200] [--workdir runs/overfit] [--shared ../shared]
"""

import argparse
import os
import pathlib
import tempfile

import numpy as np

from jaxfold import cli
from jaxfold.data import training_set
from jaxfold.train import summaries

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--validate-every', type=int, default=25)
  parser.add_argument('--window', type=int, default=20, help='steps averaged per printed row')
  parser.add_argument('--workdir', help='run directory (default: a new temporary one)')
  parser.add_argument('--shared', default=os.environ.get('JAXFOLD_SHARED', ROOT.parent / 'shared'))
  args = parser.parse_args()

  data = pathlib.Path(args.shared) / 'data'
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='overfit_'))
  built = training_set.build(data / 'alignments', data / 'mmcif', workdir / 'tfds',
                             chains=['2q2k_A']).dataset_dir
  code = cli.main(['train', '--config', str(ROOT / 'configs' / 'train' / 'tiny.py'),
                   '--workdir', str(workdir / 'run'), '--data', built, '--steps', str(args.steps),
                   '--checkpoint-every', str(args.validate_every),
                   '--set', f'validation.data={built}',
                   '--set', f'validation.every={args.validate_every}'])
  if code:
    raise SystemExit(code)

  log = workdir / 'run' / 'metrics.jsonl'
  steps, loss = summaries.read_metrics(log, 'train')['loss']
  validation = summaries.read_metrics(log, 'validation')
  print(f'\n{"steps":>11} {"mean loss":>10}')
  for start in range(0, len(loss), args.window):
    window = slice(start, start + args.window)
    print(f'{int(steps[window][0]):>5}-{int(steps[window][-1]):<5} {np.mean(loss[window]):>10.2f}')
  first, last = np.mean(loss[:args.window]), np.mean(loss[-args.window:])
  print(f'loss: first {args.window} steps {first:.2f}, last {args.window} {last:.2f}, '
        f'ratio {last / first:.3f}')
  print('validation (EMA parameters, whole chain): step, lDDT-Ca, Ca RMSD (A)')
  for step, lddt, rmsd in zip(validation['lddt_ca'][0], validation['lddt_ca'][1],
                              validation['rmsd_ca'][1]):
    print(f'  {int(step):>5} {lddt:.3f} {rmsd:.2f}')
  print(f'curves: {workdir / "run" / "loss_curves.png"}')


if __name__ == '__main__':
  main()
