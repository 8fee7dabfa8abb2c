"""Memory of one training step on one device: jaxfold's lean settings against AlphaFold's.

`jaxfold plan --train`'s program (`memory_plan.plan` with `Shapes.train`): the whole step of
`jaxfold train` on one example (forward and backward pass through the drawn recycling
iterations, every Evoformer, extra-MSA and template block rematerialised, dropout, the
fine-tuning loss, gradient clipping, Adam and the parameter average), compiled on abstract
inputs; XLA's plan is read (arguments + outputs + temporaries - aliased). Nothing runs.

Settings (`memory_plan.TRAIN_SETTINGS`): 'alphafold', each attention's logits whole as
AlphaFold trains; 'lean', attention in 256 x 256 blocks whose backward pass recomputes the
logits, 64 rows at a time (the settings configs/train/finetune.py uses). The plans are this
CPU compiler's; read the ratios.

Crops: AlphaFold's two training stages (Jumper et al. 2021, Suppl. Table 4): 256 residues,
128 MSA clusters, 1,024 extra sequences (initial training, model_1); 384 residues, 512
clusters, 5,120 extra sequences (fine-tuning, model_1_ptm). The clusters include the 4
template rows, float32, up to 3 recycling iterations.

  python benchmarks/train_memory.py [--output benchmarks/train_memory.md]
"""

import argparse
import datetime
import pathlib
import platform
import sys
import time

import jax

from jaxfold import memory_plan
from jaxfold.common.atomic_file import atomic_write

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEMPLATES = 4
STAGES = (('initial training', 'model_1', 256, 128, 1024),
          ('fine-tuning', 'model_1_ptm', 384, 512, 5120))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--output', type=pathlib.Path,
                      default=ROOT / 'benchmarks' / 'train_memory.md')
  args = parser.parse_args()
  start = time.perf_counter()
  rows = []
  for stage, preset, crop, clusters, extra in STAGES:
    shapes = memory_plan.preset_shapes(preset, crop, msa_clusters=clusters - TEMPLATES,
                                       extra_msa=extra, templates=TEMPLATES, num_recycle=3,
                                       train=True)
    plans = {}
    for settings in memory_plan.TRAIN_SETTINGS:
      plans[settings] = memory_plan.plan(shapes, settings)
      print(f'{stage}, {settings}: {memory_plan.gib(plans[settings].total_bytes)} '
            f'({plans[settings].compile_seconds:.0f} s to compile)', file=sys.stderr, flush=True)
    reference = plans['alphafold'].total_bytes
    for settings, result in plans.items():
      rows.append(f'| {stage} | {preset} | {crop} | {clusters} | {extra:,} | {settings} | '
                  f'{result.argument_bytes / 2**30:.2f} | {result.temp_bytes / 2**30:.2f} | '
                  f'{result.total_bytes / 2**30:.2f} | {result.total_bytes / reference:.2f}x |')
  text = '\n'.join([
      '# Memory of one training step on one device',
      '',
      '`python benchmarks/train_memory.py`',
      '',
      f'Measured {datetime.date.today()} on {platform.processor() or platform.machine()}, '
      f'jax {jax.__version__}, in {time.perf_counter() - start:.0f} s. ' + ' '.join(
          __doc__.split('\n\n')[1:4]).replace('\n', ' '),
      '',
      '| stage | preset | crop | MSA clusters | extra sequences | settings | arguments GiB | '
      'temporaries GiB | total GiB | x alphafold |',
      '|---|---|---|---|---|---|---|---|---|---|',
      *rows, ''])
  with atomic_write(args.output, 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  main()
