"""jaxfold.data.dataset_builder and jaxfold.data.loader: ArrayRecord round trips of variable-size
features (made from the real alignment folders), bad-chain accounting, and the grain loader's
determinism, resumption and sharding."""

import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxfold.data import dataset_builder as db
from jaxfold.data import loader
from jaxfold.data import openproteinset as ops

_GOOD = ['2q2k_A', '2q2k_B', 'query73']


def _a3m_rows(a3m: bytes) -> list[bytes]:
  """Aligned rows of an A3M file: sequence lines joined, insertions (lower case) removed."""
  rows = []
  for line in a3m.splitlines():
    if line.startswith(b'>'):
      rows.append(b'')
    elif rows:
      rows[-1] += bytes(c for c in line.strip() if not 97 <= c <= 122)
  return rows


def _example_maker(alignments: ops.AlignmentStore):
  """A synthetic `make_example` with AlphaFold-like raw shapes, built from a chain's real files."""

  def make_example(chain_id: str) -> dict[str, np.ndarray]:
    files = alignments.read(chain_id)
    a3m_name = next(n for n in files if n.endswith('.a3m'))
    msa = np.array([np.frombuffer(r, np.uint8) for r in _a3m_rows(files[a3m_name])], np.int32)
    num_res = msa.shape[1]
    num_templ = len(files) - 1  # varies per chain, 0 allowed
    rng = np.random.default_rng(sum(chain_id.encode()))
    return {
        'msa': msa,  # [N_msa, N_res]
        'deletion_matrix': rng.random(msa.shape).astype(np.float32),
        'residue_index': np.arange(num_res, dtype=np.int64),
        'template_all_atom_positions': rng.random((num_templ, num_res, 37, 3)).astype(np.float32),
        'template_all_atom_masks': rng.random((num_templ, num_res, 37)) > 0.5,
        'template_domain_names': np.array([n.encode() for n in sorted(files)[:num_templ]], dtype=object),
        'alignment_files': np.array([files[n] for n in sorted(files)], dtype=object),
        'domain_name': np.array([chain_id.encode()], dtype=object),
        'seq_length': np.int32(num_res),
        'resolution': np.float64(2.5),
    }

  return make_example


@pytest.fixture(scope='module')
def alignments(shared_dir):
  return ops.AlignmentFolder(shared_dir / 'data' / 'alignments')


@pytest.fixture(scope='module')
def built(alignments, tmp_path_factory):
  """Builds train = the real chains + two bad ones, val = one real chain; 2 shards."""
  make_example = _example_maker(alignments)
  spec = db.feature_spec_from_example(make_example('2q2k_A'))

  def make_with_bad(chain_id):
    example = make_example('2q2k_A' if chain_id == 'wrong_dtype' else chain_id)
    if chain_id == 'wrong_dtype':
      example['msa'] = example['msa'].astype(np.int64)
    return example

  data_dir = tmp_path_factory.mktemp('tfds')
  splits = {'train': _GOOD + ['9xyz_A', 'wrong_dtype'], 'val': ['2q2k_B', '2q2k_A']}
  summary = db.build_dataset(data_dir, make_with_bad, splits, spec, num_shards=2)
  return summary, make_example, spec, data_dir


def _assert_examples_equal(got, want):
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_every_example_reads_back_exactly(built):
  summary, make_example, _, _ = built
  source = db.load_data_source(summary.dataset_dir, 'train')
  assert len(source) == len(_GOOD)
  by_chain = {x['domain_name'][0].decode(): x for x in source}
  assert sorted(by_chain) == _GOOD
  for chain_id in _GOOD:
    _assert_examples_equal(by_chain[chain_id], make_example(chain_id))
  # The real chains differ in size (4 x 70 and 1024 x 73 MSAs), so different shapes round-tripped.
  assert len({x['msa'].shape for x in by_chain.values()}) == 2


def test_bad_chains_are_skipped_and_counted(built):
  summary, _, _, _ = built
  assert summary.num_examples == {'train': 3, 'val': 2}
  assert summary.num_failed == 2
  assert summary.failed['val'] == {}
  assert summary.failed['train']['9xyz_A'].startswith('MissingChainError: chain 9xyz_A')
  assert summary.failed['train']['wrong_dtype'].startswith(
      "FeatureSpecError: chain wrong_dtype: feature 'msa' is int64")
  on_disk = json.loads((db.pathlib.Path(summary.dataset_dir) / db.SUMMARY_FILE).read_text())
  assert db.BuildSummary(**on_disk) == summary


def test_layout_is_tfds_array_record(built):
  summary, make_example, _, data_dir = built
  shards = sorted(p.name for p in db.pathlib.Path(summary.dataset_dir).glob('*.array_record*'))
  assert shards == [f'chain_features-{s}.array_record-0000{i}-of-00002'
                    for s in ('train', 'val') for i in range(2)]
  by_name = tfds.data_source('chain_features', data_dir=data_dir, split='val')
  assert sorted(x['domain_name'][0] for x in by_name) == [b'2q2k_A', b'2q2k_B']


def test_rebuilding_reuses_the_dataset(built):
  summary, _, spec, data_dir = built

  def must_not_run(chain_id):
    raise AssertionError(f'make_example called for {chain_id}')

  assert db.build_dataset(data_dir, must_not_run, {'train': _GOOD}, spec) == summary


def test_spec_and_dataset_errors(built, tmp_path):
  summary, _, spec, _ = built
  with pytest.raises(db.FeatureSpecError, match="'name': a 0-d object array"):
    db.build_dataset(tmp_path, lambda c: {}, {'train': ['a']},
                     db.feature_spec_from_example({'name': np.array(b'x', dtype=object)}))
  with pytest.raises(db.FeatureSpecError, match="'s': dtype <U1"):
    db.build_dataset(tmp_path, lambda c: {}, {'train': ['a']},
                     db.feature_spec_from_example({'s': np.array(['x'])}))
  with pytest.raises(db.DatasetError, match=r"split 'train' lists chains more than once: \['a'\]"):
    db.build_dataset(tmp_path, lambda c: {}, {'train': ['a', 'b', 'a']}, spec)
  with pytest.raises(db.DatasetError, match=r"splits \['val'\] list fewer than 2 chains"):
    db.build_dataset(tmp_path, lambda c: {}, {'train': ['a', 'b'], 'val': ['c']}, spec, num_shards=2)
  with pytest.raises(db.DatasetError, match="no split 'test'"):
    db.load_data_source(summary.dataset_dir, 'test')
  with pytest.raises(db.DatasetError, match='holds no built dataset'):
    db.load_data_source(tmp_path)


def test_a_damaged_shard_is_named_when_opened_or_read(built, tmp_path):
  summary, _, _, _ = built
  damaged = tmp_path / 'chain_features'
  shutil.copytree(summary.dataset_dir, damaged)
  shard = damaged / 'chain_features-train.array_record-00000-of-00002'
  data = bytearray(shard.read_bytes())
  shard.write_bytes(data[:len(data) // 2])  # truncated: no footer
  with pytest.raises(db.DatasetError, match=f'{shard}: not a readable ArrayRecord shard'):
    db.load_data_source(damaged, 'train')
  shard.unlink()
  with pytest.raises(db.DatasetError, match=f'{shard}: shard missing'):
    db.load_data_source(damaged, 'train')
  data[100:200] = bytes(b ^ 0xff for b in data[100:200])  # inside the first record's chunk
  shard.write_bytes(data)
  source = db.load_data_source(damaged, 'train')
  with pytest.raises(db.DatasetError, match=f'{shard}: record 0 cannot be read .*rebuild it'):
    source[0]
  assert source[len(source) - 1]['domain_name'].shape == (1,)  # the other shard reads


def test_a_split_with_no_good_chain_fails_clearly(tmp_path):
  spec = db.feature_spec_from_example({'x': np.zeros(3, np.float32)})

  def broken(chain_id):
    raise RuntimeError(f'cannot parse {chain_id}')

  with pytest.raises(db.DatasetError, match="all 2 chains failed, e.g. a: RuntimeError: cannot parse a"):
    db.build_dataset(tmp_path, broken, {'train': ['a', 'b']}, spec)


def test_check_example_rejects_mismatches():
  spec = {'p': db.ArraySpec(np.dtype(np.float32), (None, 37, 3))}
  db.check_example('c', {'p': np.zeros((5, 37, 3), np.float32)}, spec)
  with pytest.raises(db.FeatureSpecError, match=r"chain c: feature 'p' is float32\[5, 14, 3\]"):
    db.check_example('c', {'p': np.zeros((5, 14, 3), np.float32)}, spec)
  with pytest.raises(db.FeatureSpecError, match=r"chain c: keys missing \['p'\], unexpected \['q'\]"):
    db.check_example('c', {'q': np.zeros(1)}, spec)


# ---- loader -------------------------------------------------------------------------------

_N = 23  # records in the synthetic source: not a multiple of the shard or batch counts


def _source():
  return [{'i': np.int64(i), 'x': np.full((3,), i, np.float32)} for i in range(_N)]


def _add_noise(example, rng):
  return {**example, 'noise': rng.random()}


def _ids(dataset) -> list[int]:
  return [int(np.asarray(x['i']).ravel()[0]) for x in dataset]


def test_same_seed_same_sequence_other_seed_other():
  make = lambda seed: loader.training_dataset(_source(), seed=seed, num_epochs=3, shard_index=0,
                                              shard_count=1, transform=_add_noise)
  first, again, other = make(7), make(7), make(8)
  assert [(x['i'], x['noise']) for x in first] == [(x['i'], x['noise']) for x in again]
  assert _ids(first) != _ids(other)
  # Each epoch is a permutation of the whole source, and epochs are shuffled differently.
  epochs = [_ids(first)[e * _N:(e + 1) * _N] for e in range(3)]
  assert all(sorted(e) == list(range(_N)) for e in epochs)
  assert epochs[0] != epochs[1]


def test_resuming_from_step_k_continues_the_run():
  kwargs = dict(seed=3, num_epochs=None, shard_index=1, shard_count=2, transform=_add_noise,
                batch_size=2)
  full = loader.training_dataset(_source(), **kwargs)
  resumed = loader.training_dataset(_source(), start_step=17, **kwargs)
  for step in range(10):
    want, got = full[17 + step], resumed[step]
    np.testing.assert_array_equal(got['i'], want['i'])
    np.testing.assert_array_equal(got['noise'], want['noise'])
    assert got['x'].shape == (2, 3)
  # Resuming through the iterator's saved state gives the same.
  iterator = loader.make_iterator(full)
  for _ in range(5):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator)['i'].tolist() for _ in range(4)]
  restored = loader.make_iterator(full)
  restored.set_state(state)
  assert [next(restored)['i'].tolist() for _ in range(4)] == expected


def test_two_shards_partition_the_data():
  shards = [loader.training_dataset(_source(), seed=5, num_epochs=1, shard_index=s, shard_count=2)
            for s in range(2)]
  ids = [_ids(s) for s in shards]
  assert len(ids[0]) == len(ids[1]) == _N // 2  # equal steps; the odd record is dropped
  assert not set(ids[0]) & set(ids[1])
  assert len(set(ids[0]) | set(ids[1])) == _N - 1
  # The shards interleave one global stream: the unsharded run, read alternately.
  whole = _ids(loader.training_dataset(_source(), seed=5, num_epochs=1, shard_index=0, shard_count=1))
  assert whole[0:_N - 1:2] == ids[0] and whole[1:_N - 1:2] == ids[1]


def test_a_global_batch_is_the_same_on_any_number_of_shards():
  # Global batch 6 as one shard of 6, two of 3 or three of 2: the shards' blocks side by side
  # are the one shard's batch, examples and order, so a run may resume on more processes.
  kwargs = dict(seed=4, num_epochs=None, transform=_add_noise)
  whole = loader.training_dataset(_source(), shard_index=0, shard_count=1, batch_size=6,
                                  **kwargs)
  for count in (2, 3):
    shards = [loader.training_dataset(_source(), shard_index=s, shard_count=count,
                                      batch_size=6 // count, **kwargs) for s in range(count)]
    for step in (0, 1, 7):
      for key in ('i', 'noise'):
        np.testing.assert_array_equal(
            np.concatenate([shard[step][key] for shard in shards]), whole[step][key])


def test_weighted_draws_follow_the_weights():
  weights = np.zeros(_N)
  weights[[2, 5, 11]] = [1.0, 2.0, 5.0]
  dataset = loader.training_dataset(_source(), seed=1, weights=weights, samples_per_epoch=1000,
                                    num_epochs=2, shard_index=0, shard_count=1)
  counts = np.bincount(_ids(dataset), minlength=_N)
  assert counts.sum() == 2000 and set(np.flatnonzero(counts)) == {2, 5, 11}
  # Binomial standard deviation of a count is <= sqrt(2000 / 4) ~ 22; allow 4 sigma.
  np.testing.assert_allclose(counts[[2, 5, 11]], 2000 * np.array([1, 2, 5]) / 8, atol=90)
  # The two epochs are different draws.
  assert _ids(dataset[:1000]) != _ids(dataset[1000:])


def test_loader_reads_the_built_dataset(built):
  summary, _, _, _ = built
  source = db.load_data_source(summary.dataset_dir, 'train')
  dataset = loader.training_dataset(source, seed=0, num_epochs=2, shard_index=0, shard_count=1)
  names = [x['domain_name'][0].decode() for x in loader.make_iterator(dataset)]
  assert sorted(names) == sorted(_GOOD * 2)


def test_loader_argument_errors():
  with pytest.raises(ValueError, match='give both shard_index and shard_count'):
    loader.training_dataset(_source(), seed=0, shard_index=0)
  with pytest.raises(ValueError, match=r'shard_index 2 is not in \[0, shard_count=2\)'):
    loader.training_dataset(_source(), seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match=r'weights must be \[23\] non-negative'):
    loader.training_dataset(_source(), seed=0, weights=np.ones(3), shard_index=0, shard_count=1)


@pytest.mark.slow  # starting worker processes that import jax takes ~20 s
def test_worker_processes_give_the_same_stream():
  dataset = loader.training_dataset(_source(), seed=2, num_epochs=1, shard_index=0, shard_count=1,
                                    transform=_add_noise)
  in_process = [(int(x['i']), x['noise']) for x in dataset]
  workers = [(int(x['i']), x['noise']) for x in loader.make_iterator(dataset, worker_count=2)]
  assert workers == in_process
