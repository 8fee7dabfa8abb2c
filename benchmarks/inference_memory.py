"""Memory of one prediction against the sequence length: jaxfold's settings against AlphaFold.

Both models are compiled for the same shapes on abstract inputs and XLA's plan is read
(`compiled.memory_analysis()`: arguments + outputs + temporaries - aliased); nothing runs, so
lengths far beyond this machine's memory are planned on it. The plans are this CPU compiler's;
a GPU's or TPU's fuse and pad differently, so read the ratios, which compare the same
compiler's plans of the two programs.

Shapes: full-size model_1_ptm (4 templates), one recycling iteration, 512 MSA clusters and
1,024 extra sequences (AlphaFold's base sizes; the template rows are part of the 512), float32
unless --dtype. AlphaFold is its own Haiku `AlphaFold` (alphafold-colabfold, one iteration per
call) with its inference subbatch of 4, the way it predicts; jaxfold is `jaxfold predict`'s
program (`inference.prediction_fn`) with zero recycling iterations under each of
`memory_plan.SETTINGS`. AlphaFold's outputs include the recycled pair (`prev`) and the
heads' logits, which `jaxfold predict` returns only with --save-logits: the column 'lean,
logits' plans that (the settings 'lean' with the logits returned).

The longest length that fits 16 / 40 / 80 GiB is searched by `memory_plan.longest` for
jaxfold's leanest settings, and by the same search over AlphaFold's plans (its `planner`);
every reported length is a compiled plan that fits, with the one 32 residues longer planned
and over.

  python benchmarks/inference_memory.py [--lengths 512 1024 2048 4096 8192]
      [--budgets 16 40 80] [--dtype float32] [--output benchmarks/inference_memory.md]
"""

import argparse
import datetime
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from jaxfold import memory_plan
from jaxfold.common.atomic_file import atomic_write
from jaxfold.parity.alphafold_model import alphafold_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET = 'model_1_ptm'
MSA_CLUSTERS, EXTRA_MSA, TEMPLATES = 512, 1024, 4
ALPHAFOLD_SUBBATCH = 4


def alphafold_plan(length: int, dtype: str) -> int:
  """Total bytes of AlphaFold's plan of one iteration at `length` residues."""
  import haiku as hk  # pylint: disable=import-outside-toplevel
  from alphafold.model import modules as af  # pylint: disable=import-outside-toplevel
  from jaxfold.model import config as config_lib  # pylint: disable=import-outside-toplevel
  from jaxfold.model.alphafold import feature_shapes  # pylint: disable=import-outside-toplevel
  cfg = alphafold_config(PRESET, num_recycle=0)
  cfg.model.global_config.subbatch_size = ALPHAFOLD_SUBBATCH
  cfg.model.global_config.bfloat16 = dtype == 'bfloat16'
  batch = feature_shapes(config_lib.preset(PRESET).model, length, MSA_CLUSTERS - TEMPLATES,
                         EXTRA_MSA, TEMPLATES)
  batch['seq_length'] = jax.ShapeDtypeStruct((1,), np.int32)  # read by AlphaFold only
  evo = cfg.model.embeddings_and_evoformer
  f32 = np.float32
  prev = {'prev_pos': jax.ShapeDtypeStruct((length, 37, 3), f32),
          'prev_msa_first_row': jax.ShapeDtypeStruct((length, evo.msa_channel), f32),
          'prev_pair': jax.ShapeDtypeStruct((length, length, evo.pair_channel), f32)}

  def fn(batch, prev):
    return af.AlphaFold(cfg.model)({**batch, 'prev': prev}, is_training=False)

  transformed = hk.transform(fn)
  params = jax.eval_shape(transformed.init, jax.random.key(0), batch, prev)
  memory = jax.jit(transformed.apply).lower(params, jax.random.key(0), batch,
                                             prev).compile().memory_analysis()
  return (memory.argument_size_in_bytes + memory.output_size_in_bytes
          + memory.temp_size_in_bytes - memory.alias_size_in_bytes)


def shapes(length: int, dtype: str, logits: bool = False) -> memory_plan.Shapes:
  return memory_plan.Shapes(PRESET, length, MSA_CLUSTERS - TEMPLATES, EXTRA_MSA, TEMPLATES,
                            num_recycle=0, dtype=dtype, logits=logits)


def alphafold_record(s: memory_plan.Shapes, settings: str = 'alphafold-reference'
                     ) -> memory_plan.Plan:
  """AlphaFold's plan as a `memory_plan.Plan` (its total only), for the same search."""
  return memory_plan.Plan(s, settings, memory_plan.global_config('alphafold'),
                          alphafold_plan(s.length, s.dtype), 0, 0, 0, 0.0)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--lengths', type=int, nargs='+', default=[512, 1024, 2048, 4096, 8192])
  parser.add_argument('--budgets', type=float, nargs='*', default=[16, 40, 80],
                      help='GiB; empty: no longest-length search')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  parser.add_argument('--output', default=str(ROOT / 'benchmarks' / 'inference_memory.md'))
  args = parser.parse_args(argv)
  log = lambda message: print(message, file=sys.stderr, flush=True)
  settings = [s for s in memory_plan.SETTINGS if s != 'one_piece']
  started = time.perf_counter()

  # Plans by length, shared by the table and the searches for the longest lengths.
  reference_plans, leanest_plans = {}, {}
  rows = []
  for length in args.lengths:
    reference_plans[length] = alphafold_record(shapes(length, args.dtype))
    reference = reference_plans[length].total_bytes
    ours = {s: memory_plan.plan(shapes(length, args.dtype), s) for s in settings}
    leanest_plans[length] = ours['leanest']
    ours = {s: p.total_bytes for s, p in ours.items()}
    # What AlphaFold's result holds besides: the heads' logits (predict --save-logits).
    ours['lean, logits'] = memory_plan.plan(shapes(length, args.dtype, logits=True),
                                            'lean').total_bytes
    rows.append((length, reference, ours))
    log(f'{length}: AlphaFold {memory_plan.gib(reference)}, '
        + ', '.join(f'{s} {memory_plan.gib(v)}' for s, v in ours.items()))

  longest = []
  for budget_gib in args.budgets:
    budget = int(budget_gib * 2**30)
    start = shapes(memory_plan.LENGTH_STEP, args.dtype)
    reference = memory_plan.longest(start, budget, progress=log, plans=reference_plans,
                                    planner=alphafold_record).shapes.length
    ours = memory_plan.longest(start, budget, progress=log, plans=leanest_plans).shapes.length
    longest.append((budget_gib, reference, ours))
    log(f'{budget_gib:g} GiB: AlphaFold {reference}, jaxfold {ours}')

  lines = [
      f'# Inference memory against length: jaxfold / AlphaFold ({args.dtype})', '',
      f'Measured {datetime.date.today()} by `python benchmarks/inference_memory.py` on '
      f'{platform.processor() or platform.machine()} (jax {jax.__version__}, CPU compiler), '
      f'{time.perf_counter() - started:.0f} s. {PRESET}, one iteration, {MSA_CLUSTERS} MSA '
      f'clusters ({TEMPLATES} of them template rows), {EXTRA_MSA:,} extra sequences, '
      f'{TEMPLATES} templates. Totals of XLA\'s compiled plans (arguments + outputs + '
      f'temporaries - aliased), GiB; AlphaFold with its inference subbatch of '
      f'{ALPHAFOLD_SUBBATCH}. Ratio: jaxfold / AlphaFold.', '',
      '| N_res | AlphaFold | ' + ' | '.join(f'jaxfold {s}' for s in rows[0][2]) + ' |',
      '|---|---|' + '---|' * len(rows[0][2])]
  for length, reference, ours in rows:
    lines.append(f'| {length:,} | {reference / 2**30:.1f} | ' + ' | '.join(
        f'{v / 2**30:.1f} ({v / reference:.2f}x)' for v in ours.values()) + ' |')
  if longest:
    lines += ['', f'Longest sequence whose plan fits (to {memory_plan.LENGTH_STEP} residues; '
              'jaxfold: leanest settings):', '',
              '| budget | AlphaFold | jaxfold | ratio |', '|---|---|---|---|']
    lines += [f'| {b:g} GiB | {r:,} | {o:,} | {o / r:.2f}x |' for b, r, o in longest]
  text = '\n'.join(lines) + '\n'
  print(text)
  with atomic_write(args.output, 'w') as f:
    f.write(text)


if __name__ == '__main__':
  main()
