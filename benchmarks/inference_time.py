"""Time of one prediction, jaxfold's settings against AlphaFold, in the same run.

One recycling iteration of full-size model_1_ptm (4 templates) on synthetic features of each
length (random residues, MSA features and template coordinates: the values do not change
the work), with AlphaFold's perturbed random weights shared by both: AlphaFold's own Haiku
`AlphaFold` with its inference subbatch of 4, the way it predicts, and `jaxfold predict`'s
program (`inference.prediction_fn`) under `memory_plan.SETTINGS`. Each is compiled first;
then the runs alternate (AlphaFold, then each setting) `--repeats` times and the medians are
compared. On a CPU shared with other work read the ratios, not the times.

  python benchmarks/inference_time.py [--lengths 64 128 256] [--msa-clusters 128]
      [--extra-msa 256] [--repeats 3] [--settings alphafold lean]
"""

import argparse
import platform
import statistics
import time

import haiku as hk
import jax
import numpy as np
from alphafold.model import modules as af

from jaxfold import inference, memory_plan
from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.model import config as config_lib
from jaxfold.model.alphafold import AlphaFold, feature_shapes
from jaxfold.parity.alphafold_model import alphafold_config, perturbed_weights

PRESET = 'model_1_ptm'


def synthetic_batch(length: int, msa_clusters: int, extra_msa: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """Features of the model's shapes (one slice) with plausible random values."""
  rng = np.random.default_rng(seed)
  shapes = feature_shapes(config_lib.preset(PRESET).model, length, msa_clusters, extra_msa)
  batch = {}
  for key, spec in shapes.items():
    if 'mask' in key or key.endswith('exists'):
      batch[key] = np.ones(spec.shape, spec.dtype)
    elif spec.dtype == np.int32:
      batch[key] = rng.integers(0, 20, spec.shape).astype(np.int32)
    else:
      batch[key] = rng.random(spec.shape).astype(np.float32)
  batch['residue_index'] = np.arange(length, dtype=np.int32)[None]
  batch['residx_atom37_to_atom14'] = np.zeros(shapes['residx_atom37_to_atom14'].shape, np.int32)
  batch['template_all_atom_positions'] *= 30.0
  batch['template_pseudo_beta'] *= 30.0
  batch['seq_length'] = np.array([length], np.int32)  # read by AlphaFold only
  return batch


def _seconds(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--lengths', type=int, nargs='+', default=[64, 128, 256])
  parser.add_argument('--msa-clusters', type=int, default=128)
  parser.add_argument('--extra-msa', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--settings', nargs='+', default=['alphafold', 'lean'],
                      choices=list(memory_plan.SETTINGS))
  args = parser.parse_args(argv)
  cfg = alphafold_config(PRESET, num_recycle=0)
  cfg.model.global_config.subbatch_size = 4
  model_config = config_lib.preset(PRESET).model
  print(f'{PRESET}, one iteration, {args.msa_clusters} MSA clusters, {args.extra_msa} extra '
        f'sequences, 4 templates, float32; {platform.machine()}, jax {jax.__version__}, '
        f'{jax.devices()[0].device_kind}; medians of {args.repeats} alternating runs')
  for length in args.lengths:
    batch = synthetic_batch(length, args.msa_clusters, args.extra_msa)
    ours_batch = {k: v for k, v in batch.items() if k != 'seq_length'}
    params = perturbed_weights(cfg, batch)
    tree = from_haiku(params, root='alphafold')
    prev = {'prev_pos': np.zeros((length, 37, 3), np.float32),
            'prev_msa_first_row': np.zeros((length, 256), np.float32),
            'prev_pair': np.zeros((length, length, 128), np.float32)}
    reference = jax.jit(hk.transform(
        lambda b, p: af.AlphaFold(cfg.model)({**b, 'prev': p}, is_training=False)).apply)
    runs = {'AlphaFold': lambda: reference(params, jax.random.key(0), batch, prev)}
    for settings in args.settings:
      model = AlphaFold(model_config, memory_plan.global_config(settings))
      fn = jax.jit(inference.prediction_fn(model, num_recycle=0))
      runs[settings] = lambda fn=fn: fn(tree, ours_batch)
    for run in runs.values():
      jax.block_until_ready(run())  # compile
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
      for name, run in runs.items():
        times[name].append(_seconds(run))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f'{length} residues: AlphaFold {medians["AlphaFold"]:.2f} s; ' + ', '.join(
        f'jaxfold {s} {medians[s]:.2f} s ({medians[s] / medians["AlphaFold"]:.2f}x)'
        for s in args.settings), flush=True)


if __name__ == '__main__':
  main()
