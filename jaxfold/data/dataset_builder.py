"""A tensorflow-datasets builder that writes per-chain raw features as ArrayRecord shards.

Training reads features at random access (grain, `jaxfold.data.loader`), so each chain's raw
features (Jumper et al. (2021) Suppl. 1.2.9 inputs before processing: `[N_res, ...]`,
`[N_msa, N_res]`, `[N_templ, N_res, 37, 3]`, object arrays of bytes for names) are stored once
as one ArrayRecord example. TFDS writes and reads ArrayRecord without TensorFlow.

Every array is stored with its dtype and every axis declared variable keeps its length, so an
example reads back equal in dtype, shape and value. A chain whose `make_example` raises, or
whose arrays do not fit the feature spec, is logged and skipped; the build's summary (examples
per split, the failed chains and why) is returned and written beside the shards as
`build_summary.json`.

When examples carry AlphaFold's `domain_name` and `seq_length`, the build also writes
`chains.json`: each split's chain IDs and sequence lengths in record order (record i of
`load_data_source` is chain i), so per-chain sampling weights need no pass over the records.
TFDS stores a split's records sorted by the md5 hash of (split name, example key), not in the
order they were generated; that order is computed from the keys and checked against the
first and last record of every shard.
"""

import collections
import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from array_record.python import array_record_module
from tensorflow_datasets.core import hashing as tfds_hashing

from jaxfold.common.errors import JaxfoldError

SUMMARY_FILE = 'build_summary.json'
CHAINS_FILE = 'chains.json'
# The features `chains.json` records: the chain's ID and its number of residues.
_INDEX_FEATURES = ('domain_name', 'seq_length')

MakeExample = Callable[[str], Mapping[str, Any]]


class DatasetError(JaxfoldError):
  """A dataset to build or read is ill-defined or missing."""


class FeatureSpecError(DatasetError):
  """An example, or the feature spec itself, does not fit what the builder can store."""


@dataclasses.dataclass(frozen=True)
class ArraySpec:
  """dtype and shape of one feature; None marks an axis whose length varies per chain."""
  dtype: np.dtype
  shape: tuple[int | None, ...]


FeatureSpec = Mapping[str, ArraySpec]


def feature_spec_from_example(example: Mapping[str, Any]) -> dict[str, ArraySpec]:
  """A spec with the example's dtypes and ranks and every axis variable.

  Object (bytes) arrays keep all but their first axis fixed: TFDS stores byte strings with
  at most one axis of unknown length.
  """
  spec = {}
  for key, value in example.items():
    array = np.asarray(value)
    variable = array.ndim if array.dtype != object else min(array.ndim, 1)
    spec[key] = ArraySpec(array.dtype, (None,) * variable + array.shape[variable:])
  return spec


def _tfds_feature(key: str, spec: ArraySpec) -> tfds.features.Tensor:
  if spec.dtype == object:
    if not spec.shape:
      raise FeatureSpecError(f'feature {key!r}: a 0-d object array cannot be stored with its '
                             'dtype; make it a [1] object array of bytes')
    if spec.shape[1:].count(None):
      raise FeatureSpecError(f'feature {key!r}: object arrays may vary along their first axis '
                             f'only, got shape {spec.shape}')
    return tfds.features.Tensor(shape=spec.shape, dtype=np.object_)
  if spec.dtype.kind not in 'biuf':
    raise FeatureSpecError(f'feature {key!r}: dtype {spec.dtype} is not bool, int, float or '
                           'object (bytes)')
  # Serialized bytes (zlib-compressed) is the encoding that keeps several unknown axes;
  # MSAs of small alphabets compress well under it.
  return tfds.features.Tensor(shape=spec.shape, dtype=spec.dtype.type, encoding='zlib')


def check_example(chain_id: str, example: Mapping[str, Any],
                  spec: FeatureSpec) -> dict[str, np.ndarray]:
  """The example's arrays, checked against `spec` so the stored copy reads back identical."""
  if set(example) != set(spec):
    raise FeatureSpecError(f'chain {chain_id}: keys missing {sorted(set(spec) - set(example))}, '
                           f'unexpected {sorted(set(example) - set(spec))}')
  arrays = {}
  for key, expected in spec.items():
    array = np.asarray(example[key])
    fits = len(array.shape) == len(expected.shape) and all(
        want is None or want == got for want, got in zip(expected.shape, array.shape))
    if array.dtype != expected.dtype or not fits:
      raise FeatureSpecError(f'chain {chain_id}: feature {key!r} is {array.dtype}{list(array.shape)}, '
                             f'spec says {expected.dtype}{list(expected.shape)}')
    if array.dtype == object and not all(isinstance(x, bytes) for x in array.flat):
      raise FeatureSpecError(f'chain {chain_id}: object feature {key!r} holds non-bytes items')
    arrays[key] = array
  return arrays


class ChainFeatures(tfds.core.GeneratorBasedBuilder):
  """One example per chain: the dict `make_example(chain_id)` returns, keyed by chain ID.

  Built without `make_example` (as `tfds.data_source('chain_features', data_dir=...)` does),
  it reads an existing build, taking the features from its `features.json`.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Raw per-chain features, ArrayRecord shards.'}

  def __init__(self, *, make_example: MakeExample | None = None,
               splits: Mapping[str, Sequence[str]] | None = None,
               feature_spec: FeatureSpec | None = None, **kwargs):
    splits = splits or {}
    for split, chain_ids in splits.items():
      repeated = sorted(c for c, n in collections.Counter(chain_ids).items() if n > 1)
      if repeated:
        raise DatasetError(f'split {split!r} lists chains more than once: {repeated[:10]}')
    self._make_example = make_example
    self._splits = {split: list(chain_ids) for split, chain_ids in splits.items()}
    self._feature_spec = feature_spec
    self.failures: dict[str, dict[str, str]] = {split: {} for split in splits}
    # split -> chain ID -> N_res of every chain written (when examples have `seq_length`)
    self.seq_lengths: dict[str, dict[str, int]] = {split: {} for split in splits}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self._feature_spec is None:
      features = tfds.features.FeatureConnector.from_config(os.fspath(self.data_path))
    else:
      features = tfds.features.FeaturesDict(
          {key: _tfds_feature(key, spec) for key, spec in self._feature_spec.items()})
    return tfds.core.DatasetInfo(
        builder=self, features=features,
        description='Raw per-chain AlphaFold features (jaxfold.data.dataset_builder).')

  def _split_generators(self, dl_manager):
    del dl_manager  # Inputs are local; nothing is downloaded.
    if self._make_example is None or self._feature_spec is None or not self._splits:
      raise DatasetError(f'{self.data_path}: building needs make_example, splits and feature_spec')
    return {split: self._generate_examples(split, chain_ids)
            for split, chain_ids in self._splits.items()}

  def _generate_examples(self, split: str, chain_ids: Sequence[str]):
    failures = self.failures[split]
    progress = tqdm.tqdm(chain_ids, desc=f'{split} chains', unit='chain')
    for chain_id in progress:
      try:
        example = check_example(chain_id, self._make_example(chain_id), self._feature_spec)
      except Exception as e:  # pylint: disable=broad-except  # one bad chain must not end a build
        failures[chain_id] = f'{type(e).__name__}: {e}'
        logging.warning('skipping chain %s of split %s: %s', chain_id, split, failures[chain_id])
        progress.set_postfix(failed=len(failures))
        continue
      if 'seq_length' in example:
        self.seq_lengths[split][chain_id] = _seq_length(example)
      yield chain_id, example
    if len(failures) == len(chain_ids):
      first = next(iter(failures.items()))
      raise DatasetError(f'split {split!r}: all {len(chain_ids)} chains failed, e.g. {first[0]}: '
                         f'{first[1]}')


@dataclasses.dataclass(frozen=True)
class BuildSummary:
  """What a build wrote: examples per split and the chains skipped, with their error."""
  dataset_dir: str
  num_examples: dict[str, int]
  failed: dict[str, dict[str, str]]  # split -> chain ID -> 'ErrorType: message'

  @property
  def num_failed(self) -> int:
    return sum(len(chains) for chains in self.failed.values())

  @classmethod
  def load(cls, dataset_dir: str | pathlib.Path) -> 'BuildSummary':
    return cls(**json.loads((pathlib.Path(dataset_dir) / SUMMARY_FILE).read_text()))


def build_dataset(data_dir: str | pathlib.Path, make_example: MakeExample,
                  splits: Mapping[str, Sequence[str]], feature_spec: FeatureSpec,
                  num_shards: int | None = None) -> BuildSummary:
  """Writes `<data_dir>/chain_features/<version>/` (ArrayRecord shards) and its summary.

  A dataset already built there is kept and its summary returned, so re-running is cheap.
  `num_shards` None lets TFDS size shards (64 MiB to 1 GiB, never more shards than examples);
  a fixed count applies to every split, and TFDS fails a split left with fewer good chains.
  """
  builder = ChainFeatures(data_dir=data_dir, file_format='array_record',
                          make_example=make_example, splits=splits, feature_spec=feature_spec)
  dataset_dir = pathlib.Path(builder.data_dir)
  if builder.is_prepared() and (dataset_dir / SUMMARY_FILE).exists():
    return BuildSummary.load(dataset_dir)
  needed = num_shards or 1
  short = [s for s, ids in splits.items() if len(ids) < needed]
  if short:
    raise DatasetError(f'{dataset_dir}: splits {short} list fewer than {needed} chains '
                       f'(num_shards={num_shards})')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      num_shards=num_shards, try_download_gcs=False))
  summary = BuildSummary(
      dataset_dir=str(dataset_dir),
      num_examples={split: builder.info.splits[split].num_examples for split in splits},
      failed=builder.failures)
  (dataset_dir / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(summary), indent=1))
  if all(key in feature_spec for key in _INDEX_FEATURES):
    index = {split: _record_index(dataset_dir, split, builder.seq_lengths[split],
                                  builder.info.splits[split].shard_lengths) for split in splits}
    (dataset_dir / CHAINS_FILE).write_text(json.dumps(index))
  return summary


def _seq_length(example: Mapping[str, np.ndarray]) -> int:
  # AlphaFold's raw `seq_length` is N_res repeated N_res times; a scalar is accepted too.
  return int(np.ravel(example['seq_length'])[0])


def _read_index(source: Sequence[Mapping[str, np.ndarray]], what: str) -> dict[str, list]:
  """Chain IDs and lengths of every record, read in record order (a full pass)."""
  chain_ids, lengths = [], []
  for example in tqdm.tqdm(source, desc=f'reading {what}', unit='chain'):
    chain_ids.append(example['domain_name'][0].decode())
    lengths.append(_seq_length(example))
  return {'chain_id': chain_ids, 'seq_length': lengths}


def _record_index(dataset_dir: pathlib.Path, split: str, seq_lengths: Mapping[str, int],
                  shard_lengths: Sequence[int]) -> dict[str, list]:
  """`chains.json`'s entry of a split just written: its chains in record order, and lengths."""
  hasher = tfds_hashing.Hasher(split)  # TFDS salts a split's key hashes with its name
  chain_ids = sorted(seq_lengths, key=hasher.hash_key)
  source = load_data_source(dataset_dir, split)
  ends = np.cumsum(shard_lengths)
  probes = sorted({*(ends - np.asarray(shard_lengths)).tolist(), *(ends - 1).tolist()})
  if len(source) != len(chain_ids) or any(
      source[i]['domain_name'][0].decode() != chain_ids[i] for i in probes):
    logging.warning('%s: split %r is not stored in the record order expected of TFDS; reading '
                    'its %d records to list their chains', dataset_dir, split, len(source))
    return _read_index(source, f'{split} chain IDs')
  return {'chain_id': chain_ids, 'seq_length': [seq_lengths[c] for c in chain_ids]}


def record_chains(dataset_dir: str | pathlib.Path,
                  split: str = 'train') -> tuple[list[str], np.ndarray]:
  """(chain IDs, [N_records] int64 sequence lengths) of a built split, in record order.

  Read from `chains.json`; a dataset built without it (before jaxfold wrote it) is read
  record by record instead, with a logged note.
  """
  dataset_dir = pathlib.Path(dataset_dir)
  source = load_data_source(dataset_dir, split)
  path = dataset_dir / CHAINS_FILE
  index = json.loads(path.read_text()) if path.exists() else {}
  if split in index:
    entry = index[split]
    if len(entry['chain_id']) != len(source):
      raise DatasetError(f'{path} lists {len(entry["chain_id"])} chains of split {split!r}, '
                         f'which holds {len(source)} records')
  else:
    logging.warning('%s has no %s entry for split %r (built by an older jaxfold): reading the '
                    'chain ID and length of its %d records', dataset_dir, CHAINS_FILE, split,
                    len(source))
    entry = _read_index(source, f'{split} chain IDs')
  return entry['chain_id'], np.asarray(entry['seq_length'], dtype=np.int64)


def load_data_source(dataset_dir: str | pathlib.Path, split: str = 'train') -> 'CheckedSource':
  """Random-access source of a built split (`len`, `[i]` -> dict of arrays); no builder code needed.

  Every shard is opened first: a truncated or missing shard fails here, naming it; a record
  damaged inside a shard fails when read, naming its shard (both DatasetError).
  """
  dataset_dir = pathlib.Path(dataset_dir)
  if not (dataset_dir / 'dataset_info.json').exists():
    raise DatasetError(f'{dataset_dir} holds no built dataset (no dataset_info.json)')
  builder = tfds.builder_from_directory(dataset_dir)
  if split not in builder.info.splits:
    raise DatasetError(f'{dataset_dir}: no split {split!r} (has {sorted(builder.info.splits)})')
  info = builder.info.splits[split]
  shards = [pathlib.Path(os.fspath(path)) for path in info.filepaths]
  for shard, length in zip(shards, info.shard_lengths):
    _check_shard(shard, length)
  return CheckedSource(builder.as_data_source(split=split), shards, info.shard_lengths)


_REBUILD = 'the dataset is damaged: rebuild it with `jaxfold data build`'


def _check_shard(shard: pathlib.Path, length: int) -> None:
  """Raises DatasetError unless `shard` opens as an ArrayRecord file of `length` records."""
  if not shard.is_file():
    raise DatasetError(f'{shard}: shard missing; {_REBUILD}')
  try:
    reader = array_record_module.ArrayRecordReader(os.fspath(shard))
    found = reader.num_records() if reader.ok() else 0
    reader.close()  # raises what opening found wrong (e.g. no footer: a truncated file)
  except RuntimeError as e:  # array_record's C++ errors
    raise DatasetError(f'{shard}: not a readable ArrayRecord shard ({str(e).splitlines()[0]}); '
                       f'{_REBUILD}') from e
  if found != length:
    raise DatasetError(f'{shard}: holds {found} records where dataset_info.json lists {length}; '
                       f'{_REBUILD}')


class CheckedSource(Sequence):
  """A built split's records; one that cannot be read raises DatasetError naming its shard."""

  def __init__(self, source: Sequence, shards: Sequence[pathlib.Path],
               shard_lengths: Sequence[int]):
    self._source = source
    self._shards = list(shards)
    self._ends = np.cumsum(shard_lengths)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    try:
      return self._source[index]
    except (IndexError, TypeError):  # the Sequence protocol's own errors stay as they are
      raise
    except Exception as e:  # pylint: disable=broad-exception-caught
      shard = self._shards[int(np.searchsorted(self._ends, int(index), side='right'))]
      raise DatasetError(f'{shard}: record {index} cannot be read ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""}); {_REBUILD}') from e
