"""The training input pipeline: grain MapDatasets over random-access sources of chains.

Element k of the pipeline is what training step k consumes on this process, computed from
(seed, k) alone, so two runs with one seed see the same data, and a run resumed at step k
(`start_step=k`, or an iterator's saved state) continues exactly where it stopped.

A pipeline is built in three stages, each random-access:
  - `source_stream`: one source's global stream of drawn chains. Chains are drawn either as a
    fresh permutation of the source each epoch, or, with `weights`, i.i.d. with probability
    proportional to the per-chain weights of Jumper et al. (2021) Suppl. 1.2.5
    (`jaxfold.data.openproteinset.sampling_weights`). A per-example `transform(example, rng)`
    hook (feature processing, MSA sampling, cropping) gets a numpy Generator derived from the
    seed and the draw's global position.
  - `mixture` (several sources, e.g. PDB and self-distillation, Suppl. 1.3): position p takes
    source s's element p with probability weights[s], drawn from (seed, p) alone.
  - `steps`: the global stream cut into global batches, each split into `shard_count`
    contiguous blocks (by default one per JAX process), so the processes together read every
    draw once. Random choices depend on global positions only, never on sharding or on where
    a run resumed.
`training_dataset` is the one-source pipeline.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

Example = Mapping[str, Any]
Transform = Callable[[Example, np.random.Generator], Example]

# Second Philox key word of each kind of counter-based draw, so that a source's chain draws
# and the mixture's source draws are independent under one seed.
_CHAIN_DRAWS, _SOURCE_DRAWS = 0, 1


def _checked_weights(weights: Sequence[float] | np.ndarray, count: int, what: str) -> np.ndarray:
  weights = np.asarray(weights, dtype=np.float64)
  if (weights.shape != (count,) or not np.all(np.isfinite(weights)) or np.any(weights < 0)
      or not np.sum(weights) > 0):
    raise ValueError(f'{what} must be [{count}] non-negative and finite with a positive sum, '
                     f'got shape {weights.shape}, values {weights.ravel()[:8].tolist()}')
  return weights


class _WeightedDraw:
  """Global position (and, ignored, the element there) -> index drawn in proportion to weights."""

  def __init__(self, weights: np.ndarray, seed: int, kind: int):
    self._cdf = np.cumsum(weights) / np.sum(weights)
    self._key = (seed, kind)

  def __call__(self, position: int, _: Any = None) -> int:
    # Counter-based: draw p is the first word of Philox block p under the key (seed, kind), so
    # any draw is computed alone (random access, resumption) and cheaply.
    u = np.random.Generator(np.random.Philox(key=self._key, counter=position)).random()
    # side='right' never lands on a zero weight; min() guards u * rounding at the end.
    return min(int(np.searchsorted(self._cdf, u, side='right')), len(self._cdf) - 1)


class _Read:
  """Source index -> example; a class (not a lambda) so worker processes can unpickle it."""

  def __init__(self, source: Sequence[Example]):
    self._source = source

  def __call__(self, index: int) -> Example:
    return self._source[index]


class _SourceAt(grain.transforms.DatasetSelectionMap):
  """Mixture position p -> (the source drawn for p, p): each source keeps its own positions."""

  def __init__(self, draw: _WeightedDraw, length: int):
    self._draw = draw
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, position: int) -> tuple[int, int]:
    return self._draw(position), position


def _default_shard() -> tuple[int, int]:
  shard = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return shard.shard_index, shard.shard_count


def source_stream(source: Sequence[Example], *, seed: int, num_epochs: int | None = None,
                  weights: np.ndarray | None = None, samples_per_epoch: int | None = None,
                  transform: Transform | None = None) -> grain.MapDataset:
  """One source's global stream, before sharding: element p is the p-th drawn chain.

  Args:
    source: random-access chains (`len`, `[i]`), e.g. `dataset_builder.load_data_source(...)`.
    seed: seeds the epoch permutations, the weighted draws and the transform's generators.
    num_epochs: passes over the data (None: endless). An epoch is `len(source)` chains, or
      `samples_per_epoch` draws when `weights` are given.
    weights: [len(source)] non-negative sampling weights; None samples without replacement.
    transform: `transform(example, rng) -> example`, applied to every drawn example.
  """
  num_records = len(source)
  if num_records == 0:
    raise ValueError('the source holds no examples')
  if weights is None:
    # Shuffling before repeating draws a new permutation each epoch.
    positions = grain.MapDataset.range(num_records).seed(seed).shuffle().repeat(num_epochs)
  else:
    draw = _WeightedDraw(_checked_weights(weights, num_records, 'weights'), seed, _CHAIN_DRAWS)
    draws = grain.MapDataset.range(samples_per_epoch or num_records).repeat(num_epochs)
    positions = draws.seed(seed).map_with_index(draw)
  examples = positions.map(_Read(source))
  return examples if transform is None else examples.random_map(transform)


def component_seed(seed: int, index: int) -> int:
  """The seed of a mixture's source `index`: apart from the other sources' and the mixture's."""
  return int(np.random.SeedSequence((seed, index)).generate_state(1)[0])


def mixture(streams: Sequence[grain.MapDataset], weights: Sequence[float],
            seed: int) -> grain.MapDataset:
  """Mixed global stream: element p is `streams[s][p]`, s drawn in proportion to weights[s].

  The draw of p depends on (seed, p) alone, so the mixture is random-access and resumable like
  its sources. Each source keeps its own order and transform; it is read only at the positions
  drawn for it (a permuted source shows each chain at most once per `len(source)` positions).
  Give each stream its own seed (`component_seed`); the mixture's draws are independent of
  the sources' draws under any seeds. Its length is the shortest stream's (endless streams:
  endless).

  Args:
    streams: global streams, e.g. of `source_stream`, one per source.
    weights: [len(streams)] non-negative, with a positive sum; normalised here.
    seed: seeds the choice of source at each position.
  """
  if not streams:
    raise ValueError('a mixture needs at least one stream')
  weights = _checked_weights(weights, len(streams), 'mixture weights')
  selection = _SourceAt(_WeightedDraw(weights, seed, _SOURCE_DRAWS),
                        min(len(stream) for stream in streams))
  return grain.MapDataset.select_from_datasets(list(streams), selection)


def steps(stream: grain.MapDataset, *, shard_index: int | None = None,
          shard_count: int | None = None, batch_size: int | None = None,
          start_step: int = 0) -> grain.MapDataset:
  """This shard's part of a global stream: element k is its example (or batch) of step k.

  Step k's global batch is positions [k * G, (k + 1) * G) of the stream, G = batch_size *
  shard_count, and shard i holds the i-th block of batch_size of them. The global batch of a
  step, examples and order, is therefore the same on any number of shards with the same G
  (a run may resume on another number of processes), and the shards' blocks laid side by side
  (`jax.make_array_from_process_local_data`) are it.

  Args:
    stream: a global stream (`source_stream`, `mixture`).
    shard_index, shard_count: this process's shard; both None means one shard per JAX process.
      A finite stream is cut to a multiple of G so every shard gets the same number of steps.
    batch_size: stacks that many consecutive examples (they must share shapes); the
      incomplete last batch of a finite stream is dropped. None: no batching (blocks of one).
    start_step: the first step to yield (resuming); counts batches when batch_size is set.
  """
  if (shard_index is None) != (shard_count is None):
    raise ValueError(f'give both shard_index and shard_count or neither, got {shard_index=} '
                     f'{shard_count=}')
  if shard_index is None:
    shard_index, shard_count = _default_shard()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} is not in [0, shard_count={shard_count})')
  block = batch_size or 1
  # Equal steps on every shard, or processes would fall out of step at the end (a no-op on an
  # endless stream).
  stream = stream[:len(stream) // (block * shard_count) * (block * shard_count)]
  if batch_size is None:
    return stream[shard_index::shard_count][start_step:]
  return stream.batch(batch_size, drop_remainder=True)[shard_index::shard_count][start_step:]


def training_dataset(source: Sequence[Example], *, seed: int, num_epochs: int | None = None,
                     weights: np.ndarray | None = None, samples_per_epoch: int | None = None,
                     shard_index: int | None = None, shard_count: int | None = None,
                     transform: Transform | None = None, batch_size: int | None = None,
                     start_step: int = 0) -> grain.MapDataset:
  """One source's pipeline: `steps` of its `source_stream` (see both for the arguments)."""
  stream = source_stream(source, seed=seed, num_epochs=num_epochs, weights=weights,
                         samples_per_epoch=samples_per_epoch, transform=transform)
  return steps(stream, shard_index=shard_index, shard_count=shard_count,
               batch_size=batch_size, start_step=start_step)


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
