"""Mixing data sources (jaxfold.data.loader.mixture, training_set.mixed_batches) and the
per-chain sampling weights of a built set (training_set.chain_weights, Suppl. 1.2.5): the
mixture's frequencies, each source's intact stream, determinism, resumption and sharding on
synthetic sources; record order, weights and the mixed batches on the mini OpenProteinSet of
../shared/data."""

import json
import logging
import shutil
import types

import numpy as np
import pytest

from jaxfold.data import dataset_builder as db
from jaxfold.data import loader, openproteinset, processing, training_set
from jaxfold.model.config import preset

_SIZES = (23, 7, 11)  # records per synthetic source: coprime, and not multiples of the shards


def _source(tag: int) -> list[dict[str, np.ndarray]]:
  return [{'src': np.int64(tag), 'i': np.int64(i)} for i in range(_SIZES[tag])]


def _add_noise(example, rng):
  return {**example, 'noise': rng.random()}


def _streams(seed: int, num_epochs=None, weighted=False):
  """One stream per synthetic source: permuted, or drawn by uniform per-chain weights (faster:
  grain's permutation of a few records costs ~2 ms an element)."""
  return [loader.source_stream(_source(s), seed=loader.component_seed(seed, s),
                               num_epochs=num_epochs, transform=_add_noise,
                               weights=np.ones(size) if weighted else None)
          for s, size in enumerate(_SIZES)]


def _pairs(dataset, count: int | None = None) -> list[tuple[int, int]]:
  """(source, record) of the first `count` elements (all by default), read by index: faster
  than grain's iterator, which reads ahead in threads."""
  elements = (dataset[k] for k in range(len(dataset) if count is None else count))
  return [(int(x['src']), int(x['i'])) for x in elements]


def test_mixture_frequencies_follow_the_weights():
  mixed = loader.mixture(_streams(seed=3, weighted=True), [1.0, 3.0, 0.0], seed=3)
  counts = np.bincount([src for src, _ in _pairs(mixed, 4000)], minlength=3)
  assert counts[2] == 0  # a zero weight is never drawn
  # Binomial standard deviation of the count of source 1: sqrt(4000 * 0.25 * 0.75) ~ 27; 4 sigma.
  assert abs(counts[1] - 3000) < 110


def test_each_source_keeps_its_own_stream():
  streams = _streams(seed=4)
  mixed = loader.mixture(streams, [2.0, 1.0, 1.0], seed=4)
  for position in range(200):
    got = mixed[position]
    want = streams[int(got['src'])][position]  # the source's own element, transform included
    assert (got['i'], got['noise']) == (want['i'], want['noise'])
  # A permuted source shows each chain at most once per len(source) positions.
  pairs = _pairs(mixed, 200)
  for src, size in enumerate(_SIZES):
    for start in range(0, 200 - size, size):
      drawn = [i for s, i in pairs[start:start + size] if s == src]
      assert len(drawn) == len(set(drawn))


def test_source_draws_are_independent_of_the_mixture_draws():
  """Under one seed, the chains a source draws by weight do not depend on being chosen."""
  weights = np.ones(_SIZES[0])
  streams = [loader.source_stream(_source(0), seed=5, weights=weights),
             loader.source_stream(_source(1), seed=5, weights=np.ones(_SIZES[1]))]
  mixed = loader.mixture(streams, [1.0, 1.0], seed=5)
  drawn = [i for src, i in _pairs(mixed, 4000) if src == 0]
  counts = np.bincount(drawn, minlength=_SIZES[0])
  # ~87 draws per chain (Poisson sd ~9); correlated draws would leave half the chains unseen.
  assert counts.min() > 40 and counts.max() < 140


def test_same_seed_same_mixture_other_seed_other():
  make = lambda seed: _pairs(loader.mixture(_streams(seed), [1.0, 1.0, 1.0], seed), 60)
  assert make(6) == make(6)
  assert make(6) != make(7)


def test_resuming_from_step_k_continues_the_mixed_run():
  kwargs = dict(shard_index=1, shard_count=2, batch_size=3)
  stream = lambda: loader.mixture(_streams(seed=8), [1.0, 2.0, 1.0], seed=8)
  full = loader.steps(stream(), **kwargs)
  resumed = loader.steps(stream(), start_step=13, **kwargs)
  for step in range(10):
    want, got = full[13 + step], resumed[step]
    for key in ('src', 'i', 'noise'):
      np.testing.assert_array_equal(got[key], want[key])
  iterator = loader.make_iterator(full)
  for _ in range(5):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)['noise'].tolist() for _ in range(4)]
  restored = loader.make_iterator(full)
  restored.set_state(state)
  assert [next(restored)['noise'].tolist() for _ in range(4)] == expected


def test_two_shards_partition_the_mixture():
  mixed = loader.mixture(_streams(seed=9, num_epochs=3), [1.0, 1.0, 1.0], seed=9)
  assert len(mixed) == 3 * min(_SIZES)  # finite streams: the shortest one's length
  shards = [_pairs(loader.steps(mixed, shard_index=s, shard_count=2)) for s in range(2)]
  whole = _pairs(mixed)
  assert len(shards[0]) == len(shards[1]) == len(whole) // 2
  assert whole[0:len(whole) - 1:2] == shards[0] and whole[1::2] == shards[1]


def test_bad_weights_fail_clearly():
  streams = _streams(seed=0)
  for weights, message in [([1.0, -1.0, 1.0], r'values \[1.0, -1.0, 1.0\]'),
                           ([0.0, 0.0, 0.0], r'values \[0.0, 0.0, 0.0\]'),
                           ([1.0, 1.0], r'must be \[3\].*got shape \(2,\)'),
                           ([1.0, np.nan, 1.0], r'values \[1.0, nan, 1.0\]')]:
    with pytest.raises(ValueError, match='mixture weights .*' + message):
      loader.mixture(streams, weights, seed=0)
  with pytest.raises(ValueError, match='at least one stream'):
    loader.mixture([], [], seed=0)
  with pytest.raises(ValueError, match=r'weights must be \[23\] non-negative'):
    loader.source_stream(_source(0), seed=0, weights=-np.ones(23))


# ---- record order of a build ----------------------------------------------------------------


def _tiny_example(chain_id: str) -> dict[str, np.ndarray]:
  num_res = 5 + sum(chain_id.encode()) % 20
  return {'domain_name': np.array([chain_id.encode()], dtype=object),
          'seq_length': np.full(num_res, num_res, np.int32),
          'aatype': np.zeros((num_res, 21), np.int32)}


_TINY_CHAINS = [f'{pdb}_{chain}' for pdb in ('1abc', '2xyz', '3pqr', '4mno') for chain in 'AB']


def _read_back(dataset_dir, split):
  source = db.load_data_source(dataset_dir, split)
  return ([x['domain_name'][0].decode() for x in source],
          [int(x['seq_length'][0]) for x in source])


def test_chains_json_lists_the_records_in_order(tmp_path):
  spec = db.feature_spec_from_example(_tiny_example('1abc_A'))
  summary = db.build_dataset(tmp_path, _tiny_example,
                             {'train': _TINY_CHAINS, 'val': _TINY_CHAINS[:3]}, spec, num_shards=3)
  for split in ('train', 'val'):
    chain_ids, lengths = db.record_chains(summary.dataset_dir, split)
    assert (chain_ids, lengths.tolist()) == _read_back(summary.dataset_dir, split)
  # Records are not in the order the chains were given.
  assert db.record_chains(summary.dataset_dir, 'train')[0] != _TINY_CHAINS


def test_an_unexpected_record_order_is_read_from_the_records(tmp_path, monkeypatch, caplog):
  class _WrongOrder:
    def __init__(self, salt):
      del salt

    def hash_key(self, key):
      return key

  # Only the builder's prediction of the order changes, not TFDS's writer.
  monkeypatch.setattr(db, 'tfds_hashing', types.SimpleNamespace(Hasher=_WrongOrder))
  spec = db.feature_spec_from_example(_tiny_example('1abc_A'))
  with caplog.at_level(logging.WARNING):
    summary = db.build_dataset(tmp_path, _tiny_example, {'train': _TINY_CHAINS}, spec,
                               num_shards=2)
  assert 'not stored in the record order expected of TFDS' in caplog.text
  chain_ids, lengths = db.record_chains(summary.dataset_dir, 'train')
  assert (chain_ids, lengths.tolist()) == _read_back(summary.dataset_dir, 'train')


# ---- the mini OpenProteinSet ------------------------------------------------------------------


@pytest.fixture(scope='module')
def data(shared_dir):
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def built(tmp_path_factory, data):
  """The shared alignment folders built: 2q2k_A and 2q2k_B (query73 has no mmCIF entry)."""
  summary = training_set.build(data / 'alignments', data / 'mmcif',
                               tmp_path_factory.mktemp('training_set'))
  assert summary.num_examples == {'train': 2}
  return summary.dataset_dir


@pytest.fixture(scope='module')
def cluster_cache(tmp_path_factory):
  """An OpenFold chain-data cache giving the two chains different cluster sizes."""
  sequence = 'MGSSHHHHHHSSGLVPGSHMDKKETKHLLKIKKEDYPQIFDFLENVPRGTKTAHIREALRRYIEEIGENP'
  path = tmp_path_factory.mktemp('cache') / 'chain_data_cache.json'
  path.write_text(json.dumps({
      '2q2k_A': {'release_date': '2008-02-05', 'seq': sequence, 'resolution': 3.0,
                 'cluster_size': 4},
      '2q2k_B': {'release_date': '2008-02-05', 'seq': sequence, 'resolution': 3.0,
                 'cluster_size': -1}}))
  return path


def _expected_weights(dataset_dir, cache_path):
  """Suppl. 1.2.5 weights computed from each record's own features and the cache."""
  cache = openproteinset.load_chain_cache(cache_path) if cache_path else {}
  chain_ids, lengths = _read_back(dataset_dir, 'train')
  return [openproteinset.sampling_probability(n, cache[c].cluster_size if cache else None)
          for c, n in zip(chain_ids, lengths)]


def test_chain_weights_are_suppl_1_2_5_in_record_order(built, data, cluster_cache):
  assert (db.pathlib.Path(built) / db.CHAINS_FILE).exists()
  for cache in (None, data / 'mmcif' / '2q2k_cache.json', cluster_cache):
    weights = training_set.chain_weights(built, 'train', cache)
    assert weights.dtype == np.float64
    np.testing.assert_array_equal(weights, _expected_weights(built, cache))
  # 70 residues: length factor 256/512; cluster sizes 4 and -1 (unclustered, no factor).
  by_chain = dict(zip(_read_back(built, 'train')[0],
                      training_set.chain_weights(built, 'train', cluster_cache)))
  assert by_chain == {'2q2k_A': 0.125, '2q2k_B': 0.5}


def test_chain_weights_of_an_older_build_read_the_records(built, cluster_cache, tmp_path, caplog):
  old = tmp_path / 'old'
  shutil.copytree(built, old)
  (old / db.CHAINS_FILE).unlink()
  with caplog.at_level(logging.WARNING):
    weights = training_set.chain_weights(old, 'train', cluster_cache)
  assert f'has no {db.CHAINS_FILE} entry' in caplog.text
  np.testing.assert_array_equal(weights, training_set.chain_weights(built, 'train', cluster_cache))


def test_chain_weights_need_every_chain_in_the_cache(built, tmp_path):
  cache = tmp_path / 'cache.json'
  cache.write_text(json.dumps({'2q2k_A': {'seq': 'M' * 70, 'cluster_size': 2}}))
  with pytest.raises(openproteinset.MissingChainError, match=r"no entry for 1 of the 2 chains.*"
                                                             r"\['2q2k_B'\]"):
    training_set.chain_weights(built, 'train', cache)


def test_mixed_batches_of_pdb_and_distillation_sources(built, cluster_cache):
  crop = processing.TrainingDataConfig(crop_size=16, max_msa_clusters=8, max_extra_msa=8)
  sources = [training_set.DataSource(built, weight=1.0, chain_weights=True, cache=cluster_cache),
             training_set.DataSource(built, weight=3.0, distillation=True)]

  def run(start_step=0):
    dataset = training_set.mixed_batches(
        sources, preset('model_1_ptm').data, seed=0, train_config=crop, batch_size=2,
        start_step=start_step, shard_index=0, shard_count=1)
    return [dataset[k] for k in range(4 - start_step)]

  first = run()
  for batch in first:
    assert batch['aatype'].shape == (2, 1, crop.crop_size)
  flags = np.concatenate([batch['is_distillation'][:, 0] for batch in first])
  assert set(flags.tolist()) == {0.0, 1.0}  # both sources appear in 8 draws at this seed
  for a, b in zip(first[1:], run(start_step=1)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_cache_without_chain_weights_is_refused(built, cluster_cache):
  with pytest.raises(ValueError, match='read only for chain_weights=True'):
    training_set.DataSource(built, cache=cluster_cache)
