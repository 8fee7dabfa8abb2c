"""The training input pipeline: a grain MapDataset over a random-access source of chains.

Element k of the pipeline is what training step k consumes on this process, computed from
(seed, k) alone, so two runs with one seed see the same data, and a run resumed at step k
(`start_step=k`, or an iterator's saved state) continues exactly where it stopped.

Chains are drawn either as a fresh permutation of the source each epoch, or, with `weights`,
i.i.d. with probability proportional to the per-chain weights of Jumper et al. (2021)
Suppl. 1.2.5 (`jaxfold.data.openproteinset.sampling_weights`). The stream of draws is one
global sequence cut into `shard_count` interleaved shards (by default one per JAX process),
so the processes together read every draw once. A per-example `transform(example, rng)` hook
(feature processing, MSA sampling, cropping) gets a numpy Generator derived from the seed and
the draw's global position, independent of sharding and of where a run resumed.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

Example = Mapping[str, Any]
Transform = Callable[[Example, np.random.Generator], Example]


class _WeightedDraw:
  """Global draw position -> source index, with probability proportional to the weights."""

  def __init__(self, weights: np.ndarray, seed: int):
    self._cdf = np.cumsum(weights) / np.sum(weights)
    self._seed = seed

  def __call__(self, position: int, _: int) -> int:
    # Counter-based: draw p is the first word of Philox block p under key seed, so any draw
    # is computed alone (random access, resumption) and cheaply.
    u = np.random.Generator(np.random.Philox(key=self._seed, counter=position)).random()
    # side='right' never lands on a zero-weight chain; min() guards u * rounding at the end.
    return min(int(np.searchsorted(self._cdf, u, side='right')), len(self._cdf) - 1)


class _Read:
  """Source index -> example; a class (not a lambda) so worker processes can unpickle it."""

  def __init__(self, source: Sequence[Example]):
    self._source = source

  def __call__(self, index: int) -> Example:
    return self._source[index]


def _default_shard() -> tuple[int, int]:
  shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return shard.shard_index, shard.shard_count


def training_dataset(source: Sequence[Example], *, seed: int, num_epochs: int | None = None,
                     weights: np.ndarray | None = None, samples_per_epoch: int | None = None,
                     shard_index: int | None = None, shard_count: int | None = None,
                     transform: Transform | None = None, batch_size: int | None = None,
                     start_step: int = 0) -> grain.MapDataset:
  """Random-access pipeline whose element k is this shard's example (or batch) of step k.

  Args:
    source: random-access chains (`len`, `[i]`), e.g. `dataset_builder.load_data_source(...)`.
    seed: seeds the epoch permutations, the weighted draws and the transform's generators.
    num_epochs: passes over the data (None: endless). An epoch is `len(source)` chains, or
      `samples_per_epoch` draws when `weights` are given.
    weights: [len(source)] non-negative sampling weights; None samples without replacement.
    shard_index, shard_count: this process's shard; both None means one shard per JAX process.
    transform: `transform(example, rng) -> example`, applied to every drawn example.
    batch_size: stacks that many consecutive examples (they must share shapes after
      `transform`); the incomplete last batch of a finite run is dropped. None: no batching.
    start_step: the first step to yield (resuming); counts batches when batch_size is set.
  """
  if (shard_index is None) != (shard_count is None):
    raise ValueError(f'give both shard_index and shard_count or neither, got {shard_index=} '
                     f'{shard_count=}')
  if shard_index is None:
    shard_index, shard_count = _default_shard()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, shard_count={shard_count})')
  num_records = len(source)
  if num_records == 0:
    raise ValueError('the source holds no examples')
  if weights is None:
    # Shuffling before repeating draws a new permutation each epoch.
    positions = grain.MapDataset.range(num_records).seed(seed).shuffle().repeat(num_epochs)
  else:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (num_records,) or np.any(weights < 0) or not np.sum(weights) > 0:
      raise ValueError(f'weights must be [{num_records}] non-negative with a positive sum, got '
                       f'shape {weights.shape}, min {weights.min(initial=np.inf)}')
    draws = grain.MapDataset.range(samples_per_epoch or num_records).repeat(num_epochs)
    positions = draws.seed(seed).map_with_index(_WeightedDraw(weights, seed))
  examples = positions.map(_Read(source))
  if transform is not None:
    examples = examples.random_map(transform)
  if num_epochs is not None:
    # Every shard gets the same number of steps, or processes would fall out of step at the end.
    examples = examples[:len(examples) // shard_count * shard_count]
  examples = examples[shard_index::shard_count]
  if batch_size is not None:
    examples = examples.batch(batch_size, drop_remainder=True)
  return examples[start_step:]


def make_iterator(dataset: grain.MapDataset, *, read_threads: int = 4,
                  worker_count: int = 0) -> grain.DatasetIterator:
  """An iterator over `dataset`, read ahead by `read_threads` threads in each of
  `worker_count` processes (0: in this process).

  Its `get_state()` / `set_state(state)` checkpoint and restore the position.
  """
  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads, prefetch_buffer_size=2 * read_threads))
  if worker_count:
    # grain's worker processes read absl flags, which only an absl.app main has parsed;
    # marking them parsed keeps grain's defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_dataset)
