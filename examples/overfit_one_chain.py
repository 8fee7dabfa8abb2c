"""Over-fit one real chain with the tiny config: the loss must fall clearly.

Builds a one-chain training set (PDB 2q2k chain A, its OpenProteinSet-style alignments in
../shared/data), trains `configs/train/tiny.py` on it with `jaxfold train` (random 32-residue
crops, 0-1 recycling iterations, dropout on, as in training), validates the whole chain with
the averaged parameters every `--validate-every` steps, and prints the loss curve (mean of each
window of steps) and the validation lDDT-Cα. The run's own loss_curves.png is in the workdir.
Then `jaxfold analyze trajectory` measures the structure kept at every validation (accuracy,
shape, secondary structure, contacts) and draws its figures into <workdir>/run/analysis/; the
README's figure is this script's with --steps 600 --validate-every 10 --ema-decay 0.99.

  python examples/overfit_one_chain.py [--steps 200] [--workdir runs/overfit] [--shared ../shared]
"""

import argparse
import json
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
  parser.add_argument('--checkpoint-every', type=int, default=100)
  parser.add_argument('--ema-decay', type=float,
                      help='decay of the averaged parameters that validation uses (default: the '
                           'config\'s 0.999, which lags a run of a few hundred steps)')
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
                   '--checkpoint-every', str(args.checkpoint_every),
                   '--set', f'validation.data={built}',
                   '--set', f'validation.every={args.validate_every}',
                   *(['--set', f'optimizer.ema_decay={args.ema_decay}'] if args.ema_decay else [])])
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

  code = cli.main(['analyze', 'trajectory', '--workdir', str(workdir / 'run')])
  if code:
    raise SystemExit(code)
  analysis = json.loads((workdir / 'run' / 'analysis' / 'trajectory.json').read_text())
  for chain, reached in analysis['reaching_step'].items():
    print(f'{chain}: first step within 90% of the final value: ' + ', '.join(
        f'{measure} {reached[measure]}' for measure in ('lddt_ca', 'tm_score', 'pc3_fraction',
                                                        'helix_recall', 'strand_recall')))
  print(f'trajectory figures: {workdir / "run" / "analysis"}')


if __name__ == '__main__':
  main()
