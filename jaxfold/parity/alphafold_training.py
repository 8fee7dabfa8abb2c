"""A real training example for the loss and gradient parity with AlphaFold.

PDB 2q2k chain A (70 residues, 45 resolved) from `shared/data`: its OpenProteinSet-style
alignments and mmCIF through jaxfold's data pipeline (`pipeline.training_example`, then
`processing.process_features` in training mode), cropped to 64 residues, with its ground
truth under AlphaFold's names and a leading recycling axis of one slice per iteration.
"""

import pathlib

import numpy as np

from jaxfold.data import mmcif, openproteinset, pipeline, processing
from jaxfold.model import config as model_config

CHAIN = '2q2k_A'


def training_batch(shared: str | pathlib.Path, preset: str = 'model_1_ptm', *,
                   crop_size: int = 64, max_msa_clusters: int = 32, max_extra_msa: int = 128,
                   num_recycle: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
  """The processed training batch of 2q2k chain A: [num_recycle + 1, ...] per feature."""
  data = pathlib.Path(shared) / 'data'
  source = openproteinset.OpenProteinSet.open(data / 'alignments', data / 'mmcif')
  raw = pipeline.training_example(CHAIN, source.alignments.paths(CHAIN),
                                  mmcif.read(data / 'mmcif' / '2q2k.cif'), data / 'mmcif')
  train = processing.TrainingDataConfig(crop_size=crop_size, max_msa_clusters=max_msa_clusters,
                                        max_extra_msa=max_extra_msa)
  return processing.process_features(raw, model_config.preset(preset).data, mode='train',
                                     seed=seed, num_recycle=num_recycle, train_config=train,
                                     source=CHAIN)
