"""A training set made from OpenProteinSet, and the training batches read from it.

`build` turns an OpenProteinSet-style tree (alignments per PDB chain, as folders or OpenFold's
alignment database, plus an mmCIF folder) into ArrayRecord shards holding each chain's raw
features and ground truth (`pipeline.training_example`); `batches` reads them back through
grain and processes each drawn chain into a training-mode model batch (crops, MSA sampling,
masking), every random choice derived from one seed.
"""

import datetime
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from jaxfold.data import dataset_builder, loader, mmcif, msa_features, openproteinset, pipeline
from jaxfold.data import processing


def needed_files(file_names: Sequence[str]) -> list[str]:
  """The files of a chain's alignment folder that its raw features read."""
  used = [name for name, _ in msa_features.select_alignments(file_names)]
  return used + [name for name in pipeline.HHR_FILES if name in file_names][:1]


def feature_spec() -> dict[str, dataset_builder.ArraySpec]:
  """The stored schema: every feature of a training example, its dtype, all axes variable."""
  return dataset_builder.feature_spec_from_example(
      {key: np.zeros((0,) * rank, dtype) for key, (dtype, rank) in
       pipeline.TRAINING_FEATURES.items()})


def build(alignments: str | os.PathLike, mmcif_dir: str | os.PathLike,
          output: str | os.PathLike, *, cache: str | os.PathLike | None = None,
          duplicates: str | os.PathLike | None = None, chains: Sequence[str] | None = None,
          split: str = 'train', max_template_date: datetime.date | str | None = None,
          num_shards: int | None = None) -> dataset_builder.BuildSummary:
  """Writes one split of the training set under `output`; bad chains are skipped and counted.

  alignments: OpenProteinSet's folder tree or an alignment database `.index`.
  chains: '<pdb>_<chain>' IDs to include (default: every chain with alignments).
  """
  source = openproteinset.OpenProteinSet.open(alignments, mmcif_dir, cache, duplicates)
  structure = functools.lru_cache(maxsize=8)(mmcif.read)  # chains of one entry come together

  def make_example(chain_id: str) -> dict[str, np.ndarray]:
    store, stored_as = source.alignments, source.alignment_chain(chain_id)
    files = {name: store.read_file(stored_as, name)
             for name in needed_files(store.file_names(stored_as))}
    return pipeline.training_example(chain_id, files, structure(source.mmcif_path(chain_id)),
                                     mmcif_dir, max_template_date=max_template_date)

  chain_ids = list(chains) if chains is not None else source.chain_ids()
  return dataset_builder.build_dataset(output, make_example, {split: chain_ids}, feature_spec(),
                                       num_shards=num_shards)


class _Process:
  """Raw chain -> training batch of `processing.process_features` (picklable for workers)."""

  def __init__(self, data_config: Any, train_config: processing.TrainingDataConfig,
               num_recycle: int):
    self._args = (data_config, train_config, num_recycle)

  def __call__(self, example: Mapping[str, np.ndarray], rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    data_config, train_config, num_recycle = self._args
    name = example['domain_name'][0].decode()
    return processing.process_features(
        example, data_config, mode='train', seed=int(rng.integers(2**63)),
        num_recycle=num_recycle, train_config=train_config, source=f'chain {name}')


def batches(dataset_dir: str | os.PathLike, data_config: Any, *, seed: int, split: str = 'train',
            train_config: processing.TrainingDataConfig = processing.TrainingDataConfig(),
            num_recycle: int = 0, weights: np.ndarray | None = None,
            num_epochs: int | None = None, batch_size: int | None = None,
            start_step: int = 0, shard_index: int | None = None,
            shard_count: int | None = None) -> grain.MapDataset:
  """Training batches of a built split: element k is this shard's batch of step k.

  data_config: AlphaFold's `data` config (e.g. `preset('model_1_ptm').data`), read as
  `processing.process_features` reads it; `num_recycle` + 1 slices per example.
  """
  source = dataset_builder.load_data_source(dataset_dir, split)
  return loader.training_dataset(
      source, seed=seed, num_epochs=num_epochs, weights=weights, shard_index=shard_index,
      shard_count=shard_count, transform=_Process(data_config, train_config, num_recycle),
      batch_size=batch_size, start_step=start_step)
