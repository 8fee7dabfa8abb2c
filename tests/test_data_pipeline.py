"""From files to features to training batches, on the real files of ../shared/data.

Prediction side: a FASTA file and its alignment folder give AlphaFold's raw features of
query73 (`features.pkl`). Training side: the 2q2k chains of a mini OpenProteinSet (the shared
alignment folders and mmCIF files) are built into ArrayRecord shards by `jaxfold data build`,
read back through grain and processed into training batches whose labels are the mmCIF's.
"""

import dataclasses
import pickle

import numpy as np
import pytest

from jaxfold import cli
from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import mmcif, openproteinset, parsers, pipeline, processing, training_set
from jaxfold.model.config import preset

CROP = processing.TrainingDataConfig(crop_size=32, max_msa_clusters=8, max_extra_msa=16)


@pytest.fixture(scope='module')
def data(shared_dir):
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def built(tmp_path_factory, data):
  """`jaxfold data build` of the shared alignment folders: 2q2k_A, 2q2k_B and query73 (no
  mmCIF entry: skipped and counted)."""
  output = tmp_path_factory.mktemp('training_set')
  status = cli.main(['--quiet', 'data', 'build', '--alignments', str(data / 'alignments'),
                     '--mmcif-dir', str(data / 'mmcif'), '--output', str(output)])
  assert status == 0
  return output / 'chain_features' / '1.0.0'


def test_raw_features_of_query73_are_alphafolds(data):
  query = data / 'alignments' / 'query73'
  made = pipeline.raw_features(query / 'query.fasta', query, data / 'mmcif')
  with open(data / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    reference = pickle.load(f)
  assert set(made.features) == set(reference) | {'msa_species_identifiers'}
  for key, (dtype, rank) in pipeline.RAW_FEATURES.items():
    assert made.features[key].dtype == dtype and made.features[key].ndim == rank, key
  names = list(made.features['template_domain_names'])
  order = [list(reference['template_domain_names']).index(name) for name in names]
  assert order == sorted(order) and len(names) == 5  # the hits whose mmCIF is present
  for key, value in reference.items():
    expected = value[order] if key.startswith('template_') else value
    np.testing.assert_array_equal(made.features[key], expected, err_msg=key)
  assert len(made.skipped_templates) == 5
  assert all('no mmCIF file' in line for line in made.skipped_templates)


def _structure_of(sequence: str, release_date: str) -> mmcif.MmcifObject:
  """A chain with no resolved atom, to test the template rules of a training example."""
  chain = mmcif.MmcifChain('A', sequence, ('UNK',) * len(sequence),
                           np.zeros((len(sequence), 37, 3), np.float32),
                           np.zeros((len(sequence), 37), np.float32))
  return mmcif.MmcifObject('9xyz', mmcif.MmcifHeader(release_date, 2.0, 'x-ray diffraction'),
                           {'A': chain})


def test_training_templates_predate_the_chain_by_60_days(data):
  query = data / 'alignments' / 'query73'
  sequence, _ = pipeline.read_query(query / 'query.fasta')
  files = {path.name: path for path in query.iterdir()}
  released = {}
  for date in ('2030-01-01', '2008-03-01'):
    example = pipeline.training_example('9xyz_A', files, _structure_of(sequence, date),
                                        data / 'mmcif')
    released[date] = [name.decode() for name in example['template_domain_names']]
  assert released['2030-01-01'] == ['2crb_A', '4zey_A', '3zee_A', '4i6p_A', '2q2k_A']
  # 2q2k (released 2008-02-05) is within 60 days of a chain released 2008-03-01.
  assert released['2008-03-01'] == ['2crb_A']


def test_training_example_reads_alignments_from_a_database_as_from_folders(data, tmp_path):
  source = openproteinset.OpenProteinSet.open(data / 'alignments', data / 'mmcif')
  index = openproteinset.write_alignment_db(source.alignments, tmp_path, 'alignments')
  database = openproteinset.open_alignments(index)
  structure = mmcif.read(data / 'mmcif' / '2q2k.cif')
  folder = source.alignments.paths('2q2k_A')
  from_folder = pipeline.training_example('2q2k_A', folder, structure, data / 'mmcif')
  from_db = pipeline.training_example(
      '2q2k_A', {n: database.read_file('2q2k_A', n)
                 for n in training_set.needed_files(database.file_names('2q2k_A'))},
      structure, data / 'mmcif')
  assert sorted(from_folder) == sorted(from_db) == sorted(pipeline.TRAINING_FEATURES)
  for key, value in from_folder.items():
    np.testing.assert_array_equal(value, from_db[key], err_msg=key)
  # The sequence is SEQRES (all 70 residues), the labels the mmCIF's resolved atoms.
  chain = structure.chains['A']
  assert from_folder['sequence'][0].decode() == chain.sequence
  np.testing.assert_array_equal(from_folder['all_atom_positions'], chain.atom_positions)
  assert from_folder['all_atom_mask'][:, rc.atom_order['CA']].sum() == 45
  assert from_folder['resolution'] == np.float32(3.0)


def test_a_chain_whose_alignment_is_another_protein_fails_naming_the_file(data):
  files = {p.name: p for p in (data / 'alignments' / 'query73').iterdir()}
  structure = mmcif.read(data / 'mmcif' / '2q2k.cif')
  with pytest.raises(parsers.ParseError, match='uniref90_hits.sto: its first sequence is not'):
    pipeline.training_example('2q2k_A', files, structure, None)


def test_a_gap_in_the_query_row_of_an_a3m_fails_naming_the_file(data, tmp_path):
  """AlphaFold's parse_a3m keeps a '-' of the query as a column, which gives an MSA one column
  wider than aatype; the query row must have one column per residue."""
  query = data / 'alignments' / 'query73'
  sequence, _ = pipeline.read_query(query / 'query.fasta')
  path = tmp_path / 'bfd_uniclust_hits.a3m'
  gapped = f'{sequence[:10]}-{sequence[10:]}'
  path.write_text(f'>query\n{gapped}\n>hit\n{gapped}\n')
  with pytest.raises(parsers.ParseError, match=(
      f'^{path}: the query row has a gap at column 11 \\(74 columns for 73 residues\\); the '
      'query must have no gap columns$')):
    pipeline.raw_features(query / 'query.fasta', tmp_path)


def test_alignments_that_are_not_utf8_name_the_file_and_byte(data):
  query = data / 'alignments' / 'query73'
  sequence, description = pipeline.read_query(query / 'query.fasta')
  alignments = {'bfd_uniclust_hits.a3m': f'>q\n{sequence}\n>h\xe9\n{sequence}\n'.encode('latin-1')}
  with pytest.raises(parsers.ParseError, match='^9xyz_A/bfd_uniclust_hits.a3m: not UTF-8 text: '
                     'byte 0xe9 at offset 79 '):
    pipeline.assemble(sequence, description, alignments, None, source='9xyz_A')


def test_a_bad_max_template_date_fails_before_anything_is_read(data):
  query = data / 'alignments' / 'query73'
  with pytest.raises(JaxfoldError, match=r'^max_template_date 2021-13-01: not a date '
                     r'\(YYYY-MM-DD\): month must be in 1\.\.12$'):
    pipeline.raw_features(query / 'query.fasta', query, max_template_date='2021-13-01')
  sequence, _ = pipeline.read_query(query / 'query.fasta')
  files = {path.name: path for path in query.iterdir()}
  with pytest.raises(JaxfoldError, match=r'^9xyz.cif: release date 2030-02-30: not a date'):
    pipeline.training_example('9xyz_A', files, _structure_of(sequence, '2030-02-30'), None)


def test_build_writes_good_chains_and_counts_bad_ones(built, data):
  summary = training_set.dataset_builder.BuildSummary.load(built)
  assert summary.num_examples == {'train': 2}
  assert list(summary.failed['train']) == ['query73']
  # Rebuilding is a no-op that reports the same.
  again = training_set.build(data / 'alignments', data / 'mmcif', built.parent.parent)
  assert dataclasses.asdict(again) == dataclasses.asdict(summary)


def test_training_batches_through_grain_are_cropped_chains_with_their_labels(built, data):
  data_config = preset('model_1_ptm').data
  def stream(seed, start_step=0):
    dataset = training_set.batches(built, data_config, seed=seed, train_config=CROP,
                                   num_recycle=1, num_epochs=2, shard_index=0, shard_count=1,
                                   start_step=start_step)
    return [dataset[i] for i in range(len(dataset))]
  first = stream(seed=0)
  assert len(first) == 4  # 2 chains x 2 epochs
  chains = mmcif.read(data / 'mmcif' / '2q2k.cif').chains
  for batch in first:
    assert batch['aatype'].shape == (2, CROP.crop_size)
    assert batch['msa_feat'].shape == (2, CROP.max_msa_clusters - 4, CROP.crop_size, 49)
    assert batch['extra_msa'].shape == (2, CROP.max_extra_msa, CROP.crop_size)
    # The crop's labels are the mmCIF coordinates of the residues it kept.
    kept = batch['residue_index'][0]
    matches = [name for name, c in chains.items()
               if np.array_equal(batch['all_atom_positions'][0], c.atom_positions[kept])]
    assert matches, 'crop labels are no chain\'s coordinates'
    assert np.array_equal(batch['aatype'][0], np.argmax(
        rc.sequence_to_onehot(chains[matches[0]].sequence, rc.restype_order_with_x), -1)[kept])
  again, other, resumed = stream(seed=0), stream(seed=1), stream(seed=0, start_step=2)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert any(not np.array_equal(a['msa_feat'], b['msa_feat']) for a, b in zip(first, other))
  for a, b in zip(first[2:], resumed):
    np.testing.assert_array_equal(a['msa_feat'], b['msa_feat'])


def test_data_build_bad_input_fails_with_one_line(tmp_path, data, capsys):
  missing = tmp_path / 'no_alignments'
  status = cli.main(['data', 'build', '--alignments', str(missing), '--mmcif-dir',
                     str(data / 'mmcif'), '--output', str(tmp_path / 'out')])
  err = capsys.readouterr().err
  assert status == 2 and err.strip() == f'jaxfold: error: {missing}: no such file or directory'
  assert not (tmp_path / 'out').exists()
