"""jaxfold.data.openproteinset: folder and alignment-db readers on the real alignment folders,
OpenFold's caches, and the Suppl. 1.2.5 sampling weights."""

import datetime
import json
import shutil

import numpy as np
import pytest

from jaxfold.data import openproteinset as ops

_CHAINS = ['2q2k_A', '2q2k_B', 'query73']


@pytest.fixture(scope='module')
def alignments_dir(shared_dir):
  return shared_dir / 'data' / 'alignments'


@pytest.fixture(scope='module')
def folder(alignments_dir):
  return ops.AlignmentFolder(alignments_dir)


def test_folder_lists_chains_and_reads_the_files(folder, alignments_dir):
  assert folder.chain_ids() == _CHAINS
  assert folder.file_names('2q2k_A') == ['bfd_uniclust_hits.a3m', 'mgnify_hits.sto',
                                         'uniprot_hits.sto', 'uniref90_hits.sto']
  # query73's query.fasta is no alignment file; its .hhr is.
  assert 'pdb70_hits.hhr' in folder.file_names('query73')
  assert 'query.fasta' not in folder.file_names('query73')
  for name, data in folder.read('2q2k_B').items():
    assert data == (alignments_dir / '2q2k_B' / name).read_bytes()
  assert folder.read('2q2k_A')['bfd_uniclust_hits.a3m'].startswith(b'>')


def test_missing_chain_folder_is_named(folder):
  with pytest.raises(ops.MissingChainError, match='9xyz_A'):
    folder.read('9xyz_A')
  with pytest.raises(ops.OpenProteinSetError, match='nowhere'):
    ops.AlignmentFolder('/nowhere')


@pytest.mark.parametrize('num_shards', [1, 2])
def test_alignment_db_round_trip(folder, tmp_path, num_shards):
  index_path = ops.write_alignment_db(folder, tmp_path, 'pdb', num_shards=num_shards)
  index = json.loads(index_path.read_text())
  assert sorted(index) == _CHAINS
  assert sorted(p.name for p in tmp_path.glob('*.db')) == [f'pdb_{i}.db' for i in range(num_shards)]
  # OpenFold's layout: each chain's files are consecutive byte ranges of its db file.
  for chain_id, entry in index.items():
    raw = (tmp_path / entry['db']).read_bytes()
    for name, start, size in entry['files']:
      assert raw[start:start + size] == folder.read_file(chain_id, name)
  db = ops.AlignmentDB(index_path)
  assert db.chain_ids() == _CHAINS
  for chain_id in _CHAINS:
    assert db.read(chain_id) == folder.read(chain_id)
  total = sum(len(d) for c in _CHAINS for d in folder.read(c).values())
  assert sum(p.stat().st_size for p in tmp_path.glob('*.db')) == total


def test_alignment_db_reads_the_unsharded_index(folder, tmp_path):
  """create_alignment_db.py's index maps a chain straight to its files, db = `<stem>.db`."""
  index_path = ops.write_alignment_db(folder, tmp_path, 'one')
  super_index = json.loads(index_path.read_text())
  (tmp_path / 'one_0.db').rename(tmp_path / 'old.db')
  (tmp_path / 'old.index').write_text(json.dumps({c: e['files'] for c, e in super_index.items()}))
  assert ops.AlignmentDB(tmp_path / 'old.index').read('2q2k_A') == folder.read('2q2k_A')


def test_alignment_db_errors_name_the_problem(folder, tmp_path):
  index_path = ops.write_alignment_db(folder, tmp_path, 'pdb')
  db = ops.AlignmentDB(index_path)
  with pytest.raises(ops.MissingChainError, match=r'9xyz_A.*pdb\.index'):
    db.read('9xyz_A')
  with pytest.raises(ops.MissingChainError, match='no file .nope.a3m'):
    db.read_file('2q2k_A', 'nope.a3m')
  db_file = tmp_path / 'pdb_0.db'
  db_file.write_bytes(db_file.read_bytes()[:100])
  with pytest.raises(ops.OpenProteinSetError, match=r'pdb_0\.db ends at byte 100'):
    db.read('2q2k_B')
  db_file.unlink()
  with pytest.raises(ops.OpenProteinSetError, match=r'pdb_0\.db does not exist'):
    db.read('2q2k_A')
  (tmp_path / 'bad.index').write_text('{"2q2k_A": {"files": []}}')
  with pytest.raises(ops.OpenProteinSetError, match=r"bad\.index: entry '2q2k_A'"):
    ops.AlignmentDB(tmp_path / 'bad.index')


def test_mmcif_cache_gives_per_chain_metadata(shared_dir):
  cache = ops.load_chain_cache(shared_dir / 'data' / 'mmcif' / '2q2k_cache.json')
  assert sorted(cache) == ['2q2k_A', '2q2k_B']
  meta = cache['2q2k_B']
  assert meta.release_date == datetime.date(2008, 2, 5)
  assert meta.resolution == 3.0
  assert meta.sequence.startswith('MGSSHHHHHH') and len(meta.sequence) == 70
  assert meta.cluster_size is None


def test_chain_data_cache_and_its_errors(tmp_path):
  path = tmp_path / 'chain_data_cache.json'
  path.write_text(json.dumps({
      '1abc_A': {'release_date': '2001-01-02', 'seq': 'A' * 300, 'resolution': 1.5, 'cluster_size': 4},
      '1abc_B': {'release_date': '2001-01-02', 'seq': 'G' * 40, 'resolution': None, 'cluster_size': -1}}))
  cache = ops.load_chain_cache(path)
  assert cache['1abc_A'] == ops.ChainMetadata('1abc_A', datetime.date(2001, 1, 2), 1.5, 'A' * 300, 4)
  assert cache['1abc_B'].resolution is None and cache['1abc_B'].cluster_size == -1
  path.write_text(json.dumps({'1abc_A': {'release_date': '02/01/2001', 'seq': 'A'}}))
  with pytest.raises(ops.OpenProteinSetError, match="entry '1abc_A' has release_date '02/01/2001'"):
    ops.load_chain_cache(path)
  path.write_text(json.dumps({'1abc': {'release_date': '2001-01-02'}}))
  with pytest.raises(ops.OpenProteinSetError, match="entry '1abc' has neither"):
    ops.load_chain_cache(path)
  with pytest.raises(ops.OpenProteinSetError, match='missing.json does not exist'):
    ops.load_chain_cache(tmp_path / 'missing.json')


def test_sampling_probability_matches_suppl_1_2_5():
  # max(min(N_res, 512), 256) / 512, divided by the cluster size when there is one.
  assert ops.sampling_probability(70, None) == 0.5
  assert ops.sampling_probability(384, None) == 0.75
  assert ops.sampling_probability(1000, None) == 1.0
  assert ops.sampling_probability(300, 4) == pytest.approx(300 / 512 / 4, rel=1e-15)
  assert ops.sampling_probability(300, -1) == ops.sampling_probability(300, 0) == 300 / 512
  chains = [ops.ChainMetadata('a_A', None, None, 'A' * n, c) for n, c in [(100, 2), (600, None)]]
  np.testing.assert_array_equal(ops.sampling_weights(chains), [0.25, 1.0])


def test_open_protein_set_ties_the_parts_together(shared_dir, alignments_dir, folder, tmp_path):
  dup = tmp_path / 'duplicate_pdb_chains.txt'
  dup.write_text('2q2k_A 2q2k_C\n5zzz_A 5zzz_B\n')  # 5zzz has no alignments: ignored
  mmcif_dir = shared_dir / 'data' / 'mmcif'
  data = ops.OpenProteinSet.open(alignments_dir, mmcif_dir, mmcif_dir / '2q2k_cache.json', dup)
  assert data.chain_ids() == ['2q2k_A', '2q2k_B', '2q2k_C', 'query73']
  assert data.alignment_files('2q2k_C') == folder.read('2q2k_A')
  assert data.alignment_paths('2q2k_B')['mgnify_hits.sto'] == alignments_dir / '2q2k_B' / 'mgnify_hits.sto'
  assert data.mmcif_path('2q2k_B') == mmcif_dir / '2q2k.cif'
  np.testing.assert_array_equal(data.sampling_weights(['2q2k_A', '2q2k_B']), [0.5, 0.5])
  with pytest.raises(ops.MissingChainError, match=r'9xyz_A: no mmCIF file .*9xyz\.cif'):
    data.mmcif_path('9xyz_A')
  with pytest.raises(ops.MissingChainError, match='query73: not in the chain cache'):
    data.metadata('query73')
  with pytest.raises(ops.OpenProteinSetError, match="chain ID 'query73' is not of the form"):
    data.mmcif_path('query73')


def test_open_protein_set_over_a_db(folder, alignments_dir, tmp_path):
  shutil.copytree(alignments_dir / '2q2k_A', tmp_path / 'tree' / '2q2k_A')
  index_path = ops.write_alignment_db(ops.AlignmentFolder(tmp_path / 'tree'), tmp_path / 'db', 'pdb')
  data = ops.OpenProteinSet.open(index_path)
  assert data.chain_ids() == ['2q2k_A']
  assert data.alignment_files('2q2k_A') == folder.read('2q2k_A')
  with pytest.raises(ops.OpenProteinSetError, match='alignments are in a database'):
    data.alignment_paths('2q2k_A')
