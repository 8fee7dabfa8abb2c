"""A training set made from OpenProteinSet, and the training batches read from it.

`build` turns an OpenProteinSet-style tree (alignments per PDB chain, as folders or OpenFold's
alignment database, plus an mmCIF folder) into ArrayRecord shards holding each chain's raw
features and ground truth (`pipeline.training_example`); `batches` reads them back through
grain and processes each drawn chain into a training-mode model batch (crops, MSA sampling,
masking), every random choice derived from one seed. `mixed_batches` does the same for several
built sets mixed with configured weights (PDB chains and the self-distillation set of Jumper et
al. (2021) Suppl. 1.3; OpenFold draws the latter with probability 0.75), each drawn uniformly or
by the per-chain weights of Suppl. 1.2.5 (`chain_weights`).

A self-distillation set is built from predicted structures (`build(structures_dir=...,
distillation=True)`): each chain's ground truth is its `<chain>.pdb`, atoms of low-pLDDT
residues masked out as OpenFold does, and its resolution 0, so that the confidence-head losses
skip it (Suppl. 1.9.6, 1.9.10); a distillation source of a mixture also reads as resolution 0.
"""

import dataclasses
import datetime
import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.data import dataset_builder, ground_truth, loader, mmcif, msa_features
from jaxfold.data import openproteinset, parsers, pipeline, processing


def needed_files(file_names: Sequence[str]) -> list[str]:
  """The files of a chain's alignment folder that its raw features read."""
  used = [name for name, _ in msa_features.select_alignments(file_names)]
  return used + [name for name in pipeline.HHR_FILES if name in file_names][:1]


def feature_spec() -> dict[str, dataset_builder.ArraySpec]:
  """The stored schema: every feature of a training example, its dtype, all axes variable."""
  return dataset_builder.feature_spec_from_example(
      {key: np.zeros((0,) * rank, dtype) for key, (dtype, rank) in
       pipeline.TRAINING_FEATURES.items()})


def _query(chain_id: str, files: Mapping[str, bytes]) -> tuple[str, str]:
  """(query sequence, file name) of the chain's first alignment in merge order."""
  selected = msa_features.select_alignments(files)
  if not selected:
    raise FileNotFoundError(f'chain {chain_id}: no alignment file among {sorted(files)}')
  name = selected[0][0]
  source = f'{chain_id}/{name}'
  msa = parsers.parse_msa(parsers.decode_text(files[name], source).splitlines(True), source, 1)
  return msa.sequences[0].replace('-', ''), name


def predicted_example(chain_id: str, alignments: Mapping[str, bytes],
                      structure_path: str | os.PathLike, mmcif_dir: str | os.PathLike | None, *,
                      distillation: bool = False,
                      max_template_date: datetime.date | str | None = None
                      ) -> dict[str, np.ndarray]:
  """Raw features and ground truth of a chain whose structure is a predicted PDB file.

  The sequence is the alignments' query; the structure must have exactly its residues. With
  `distillation`, residues of pLDDT <= 50 lose their atoms (OpenFold's rule); the resolution
  is 0 (the PDB file does not state one). Templates come from `mmcif_dir` (None: none).
  """
  threshold = openproteinset.DISTILLATION_PLDDT_THRESHOLD if distillation else None
  prot = openproteinset.read_predicted_structure(structure_path, threshold)
  query, query_file = _query(chain_id, alignments)
  expected = ''.join(c if c in rc.restype_order else 'X' for c in query.upper())
  found = ''.join(rc.restypes_with_x[a] for a in prot.aatype)
  if found != expected:
    first = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b),
                 min(len(found), len(expected)))
    raise openproteinset.OpenProteinSetError(
        f'{structure_path}: its sequence ({len(found)} residues) is not the query of '
        f'{chain_id}/{query_file} ({len(expected)} residues); they differ at residue {first + 1}')
  features, _ = pipeline.assemble(query, chain_id, alignments, mmcif_dir,
                                  max_template_date=max_template_date, source=chain_id)
  features.update(ground_truth.ground_truth_features(
      np.argmax(features['aatype'], axis=-1), prot.atom_positions, prot.atom_mask, 0.0,
      source=f'{chain_id} ({structure_path})'))
  return features


def build(alignments: str | os.PathLike, mmcif_dir: str | os.PathLike | None,
          output: str | os.PathLike, *, cache: str | os.PathLike | None = None,
          duplicates: str | os.PathLike | None = None, chains: Sequence[str] | None = None,
          split: str = 'train', max_template_date: datetime.date | str | None = None,
          num_shards: int | None = None, structures_dir: str | os.PathLike | None = None,
          distillation: bool = False) -> dataset_builder.BuildSummary:
  """Writes one split of the training set under `output`; bad chains are skipped and counted.

  alignments: OpenProteinSet's folder tree or an alignment database `.index`.
  mmcif_dir: the chains' structures (`<pdb>.cif`) and the templates'; with `structures_dir`,
    the templates' only (None: no templates).
  chains: chain IDs to include (default: every chain with alignments); '<pdb>_<chain>' for
    mmCIF structures, any alignment folder name for predicted ones.
  structures_dir: predicted structures (`<chain>.pdb` or `<chain>_unrelaxed.pdb`) as ground
    truth instead of mmCIF, resolution 0 (`predicted_example`).
  distillation: a self-distillation set: residues of pLDDT <= 50 (B-factor column) lose their
    atoms from the ground truth; needs `structures_dir`.
  """
  if structures_dir is None and mmcif_dir is None:
    raise ValueError(f'{output}: a training set needs structures: an mmCIF folder, or '
                     'predicted structures (structures_dir)')
  if distillation and structures_dir is None:
    raise ValueError(f'{output}: a self-distillation set is built from predicted structures; '
                     'give structures_dir')
  source = openproteinset.OpenProteinSet.open(alignments, mmcif_dir, cache, duplicates,
                                              structures_dir)
  structure = functools.lru_cache(maxsize=8)(mmcif.read)  # chains of one entry come together

  def make_example(chain_id: str) -> dict[str, np.ndarray]:
    store, stored_as = source.alignments, source.alignment_chain(chain_id)
    files = {name: store.read_file(stored_as, name)
             for name in needed_files(store.file_names(stored_as))}
    if structures_dir is not None:
      return predicted_example(chain_id, files, source.structure_path(chain_id), mmcif_dir,
                               distillation=distillation, max_template_date=max_template_date)
    return pipeline.training_example(chain_id, files, structure(source.mmcif_path(chain_id)),
                                     mmcif_dir, max_template_date=max_template_date)

  chain_ids = list(chains) if chains is not None else source.chain_ids()
  return dataset_builder.build_dataset(output, make_example, {split: chain_ids}, feature_spec(),
                                       num_shards=num_shards)


def chain_weights(dataset_dir: str | os.PathLike, split: str = 'train',
                  cache: str | os.PathLike | None = None) -> np.ndarray:
  """[N_records] float64 Suppl. 1.2.5 sampling weights of a built split, in record order.

  Each chain's weight is `openproteinset.sampling_probability` of its sequence length (SEQRES,
  as built) and, with an OpenFold chain-data or mmCIF cache, its cluster size; without a cache
  there is no cluster term. Every chain of the split must be in the cache.
  """
  chain_ids, lengths = dataset_builder.record_chains(dataset_dir, split)
  cluster_sizes = [None] * len(chain_ids)
  if cache is not None:
    metadata = openproteinset.load_chain_cache(cache)
    missing = [c for c in chain_ids if c not in metadata]
    if missing:
      raise openproteinset.MissingChainError(
          f'{cache}: no entry for {len(missing)} of the {len(chain_ids)} chains of split '
          f'{split!r} of {dataset_dir}, e.g. {missing[:5]}')
    cluster_sizes = [metadata[c].cluster_size for c in chain_ids]
  return np.array([openproteinset.sampling_probability(int(n), size)
                   for n, size in zip(lengths, cluster_sizes)], dtype=np.float64)


class _Process:
  """Raw chain -> training batch of `processing.process_features` (picklable for workers).

  distillation: marks every example `is_distillation` (self-distillation MSA sampling) and
    sets its resolution to 0, so that the confidence-head losses skip it as AlphaFold does.
  """

  def __init__(self, data_config: Any, train_config: processing.TrainingDataConfig,
               num_recycle: int, distillation: bool = False):
    self._args = (data_config, train_config, num_recycle)
    self._distillation = distillation

  def __call__(self, example: Mapping[str, np.ndarray], rng: np.random.Generator
               ) -> dict[str, np.ndarray]:
    data_config, train_config, num_recycle = self._args
    name = example['domain_name'][0].decode()
    if self._distillation:
      example = {**example, 'is_distillation': np.ones(1, np.float32),
                 'resolution': np.zeros((), np.float32)}
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


@dataclasses.dataclass(frozen=True)
class DataSource:
  """One built set of a training mixture.

  path: the built dataset (`<output>/chain_features/<version>`).
  weight: its share of the mixture, normalised over the sources (AlphaFold trained on 0.25 PDB,
    0.75 self-distillation).
  chain_weights: draw its chains by `chain_weights` (Suppl. 1.2.5, with `cache`'s cluster
    sizes), with replacement; False draws a fresh permutation each epoch.
  cache: an OpenFold chain-data or mmCIF cache JSON; read only with chain_weights.
  distillation: its examples are self-distillation (`is_distillation` set).
  """
  path: str | os.PathLike
  split: str = 'train'
  weight: float = 1.0
  chain_weights: bool = False
  cache: str | os.PathLike | None = None
  distillation: bool = False

  def __post_init__(self):
    if self.cache is not None and not self.chain_weights:
      raise ValueError(f'data source {self.path}: a cache ({self.cache}) is read only for '
                       'chain_weights=True')


def mixed_batches(sources: Sequence[DataSource], data_config: Any, *, seed: int,
                  train_config: processing.TrainingDataConfig = processing.TrainingDataConfig(),
                  num_recycle: int = 0, batch_size: int | None = None, start_step: int = 0,
                  shard_index: int | None = None,
                  shard_count: int | None = None) -> grain.MapDataset:
  """Endless training batches of several built sets: element k is this shard's batch of step k.

  Position p of the global stream is source s's p-th draw with probability proportional to
  `sources[s].weight` (`loader.mixture`); each source draws and processes with a seed of its
  own, derived from `seed`. The arguments after `sources` are those of `batches`.
  """
  streams = []
  for index, source in enumerate(sources):
    weights = None
    if source.chain_weights:
      weights = chain_weights(source.path, source.split, source.cache)
    streams.append(loader.source_stream(
        dataset_builder.load_data_source(source.path, source.split),
        seed=loader.component_seed(seed, index), weights=weights,
        transform=_Process(data_config, train_config, num_recycle, source.distillation)))
  stream = loader.mixture(streams, [source.weight for source in sources], seed)
  return loader.steps(stream, shard_index=shard_index, shard_count=shard_count,
                      batch_size=batch_size, start_step=start_step)
