"""Examples per second of the data pipeline on the 6KWC example (191 residues), beside AlphaFold's.

Measured in this one run, on the same raw features:
  * making raw features from the files (FASTA, BFD .a3m, MGnify .sto; HHsearch hits against
    the shared mmCIF folder): jaxfold's `pipeline.raw_features`;
  * training-mode processing at crop 256 (OpenFold's `data.train`: 128 clusters, 1024 extra
    rows, masking, one recycling slice), with ground truth from OpenFold's predicted 6KWC
    structure standing in for an experimental one: jaxfold's `process_features`;
  * eval-mode processing with model_1_ptm's sizes (512 clusters, 5120 extra, 4 slices) by
    jaxfold and by AlphaFold's own `np_example_to_features` (AlphaFold released no training
    pipeline, so eval is the like-for-like comparison); the ratio is printed.

  python benchmarks/data_pipeline.py [--repeats 5]
"""

import argparse
import logging
import pathlib
import time

from alphafold.model import config as af_config
from alphafold.model import features as af_features

from jaxfold.common import protein
from jaxfold.data import ground_truth, pipeline, processing
from jaxfold.model.config import preset

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'


def _per_second(fn, repeats: int) -> float:
  fn()  # warm caches and imports
  start = time.perf_counter()
  for seed in range(repeats):
    fn(seed)
  return repeats / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  logging.disable(logging.WARNING)  # template hits without mmCIF files here
  example = SHARED / 'examples' / '6KWC_1'
  made = lambda seed=0: pipeline.raw_features(example / '6kwc.fasta', example, SHARED / 'mmcif')
  raw = made().features
  structure = protein.from_pdb_string(
      (example / 'openfold_6KWC_1_model_1_ptm_relaxed.pdb').read_text())
  labelled = {**raw, **ground_truth.from_protein(structure, resolution=2.0)}
  num_res, num_seq = raw['aatype'].shape[0], raw['msa'].shape[0]
  print(f'6KWC: {num_res} residues, {num_seq} MSA rows, '
        f'{raw["template_aatype"].shape[0]} templates')

  data = preset('model_1_ptm').data
  train = processing.TrainingDataConfig(crop_size=256)
  rates = {
      'raw features from files (jaxfold)': _per_second(made, args.repeats),
      'training batch, crop 256 (jaxfold)': _per_second(
          lambda seed=0: processing.process_features(labelled, data, mode='train', seed=seed,
                                                     num_recycle=0, train_config=train),
          args.repeats),
  }
  af_cfg = af_config.model_config('model_1_ptm')
  af_cfg.data.eval.num_ensemble = 1
  eval_rates = {
      'jaxfold': _per_second(lambda seed=0: processing.process_features(
          raw, data, mode='eval', seed=seed), args.repeats),
      'AlphaFold': _per_second(lambda seed=0: af_features.np_example_to_features(
          dict(raw), af_cfg, random_seed=seed), args.repeats),
  }
  for name, rate in rates.items():
    print(f'{name:40s} {rate:8.2f} examples/s')
  for name, rate in eval_rates.items():
    print(f'{"eval batch, model_1_ptm (" + name + ")":40s} {rate:8.2f} examples/s')
  print(f'eval processing: jaxfold is {eval_rates["jaxfold"] / eval_rates["AlphaFold"]:.2f}x '
        f'AlphaFold\'s rate')


if __name__ == '__main__':
  main()
