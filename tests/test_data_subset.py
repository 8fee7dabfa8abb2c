"""`jaxfold data subset` on a mini OpenProteinSet built from ../shared/data: 2q2k_A/B with
their real alignments, and 101m_A (myoglobin, α), 4i6p_A/B, 3zee_A (a fragment of 4i6p's
protein) and 4zey_A with single-sequence alignments. The chains left out by list, by the
secondary structure of their ground truth and by the draw, the leakage report, the copied
records, and bad input."""

import json
import pathlib

import numpy as np
import pytest

from cli_checks import assert_fails
from jaxfold import cli
from jaxfold.common import residue_constants as rc
from jaxfold.common import secondary_structure
from jaxfold.data import dataset_builder, mmcif, subset, training_set
from jaxfold.train import config as config_lib

TINY = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train' / 'tiny.py'
SINGLE_SEQUENCE = ('101m_A', '4i6p_A', '4i6p_B', '3zee_A', '4zey_A')
CHAINS = ('2q2k_A', '2q2k_B', *SINGLE_SEQUENCE)
# An unrelated protein: the 73-residue query of ../shared/data/alignments/query73.
UNRELATED = 'query73'


@pytest.fixture(scope='module')
def data(shared_dir):
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def chains(data):
  """chain ID -> (sequence, [N, 3] Cα, [N] Cα mask), read from the mmCIF files."""
  found = {}
  for chain_id in CHAINS:
    pdb, _, chain = chain_id.partition('_')
    entry = mmcif.read(data / 'mmcif' / f'{pdb}.cif').chains[chain]
    ca = rc.atom_order['CA']
    found[chain_id] = (entry.sequence, entry.atom_positions[:, ca], entry.atom_mask[:, ca])
  return found


@pytest.fixture(scope='module')
def built(tmp_path_factory, data, chains):
  """The mini set's dataset directory."""
  alignments = tmp_path_factory.mktemp('alignments')
  for chain_id in ('2q2k_A', '2q2k_B'):
    (alignments / chain_id).symlink_to(data / 'alignments' / chain_id)
  for chain_id in SINGLE_SEQUENCE:
    (alignments / chain_id).mkdir()
    (alignments / chain_id / 'bfd_uniclust_hits.a3m').write_text(
        f'>{chain_id}\n{chains[chain_id][0]}\n')
  summary = training_set.build(alignments, data / 'mmcif', tmp_path_factory.mktemp('tfds'))
  assert summary.num_examples == {'train': len(CHAINS)}, summary.failed
  return pathlib.Path(summary.dataset_dir)


def _subset(capsys, out, built, *options):
  """Runs the command; returns its subset.json and stderr."""
  status = cli.main(['data', 'subset', '--data', str(built), '--output', str(out),
                     *map(str, options)])
  _, err = capsys.readouterr()
  assert status == 0, err
  paths = list(pathlib.Path(out).glob('chain_features/*/subset.json'))
  assert len(paths) == 1
  return json.loads(paths[0].read_text()), err


def _fractions(chain):
  _, ca, mask = chain
  return secondary_structure.class_fractions(
      secondary_structure.assign(ca, np.arange(len(ca)), mask))


def test_lists_and_class_limits_leave_out_exactly_the_chains_they_name(tmp_path, capsys, built,
                                                                       chains):
  exclude = tmp_path / 'exclude.txt'
  # PDB IDs match in any case, chain letters exactly (4i6p has no chain 'b').
  exclude.write_text('# fold classes to leave out\n\n4I6P   # both chains\n2Q2K_A\n4i6p_b\n'
                     '9xyz_A\n')
  keep = tmp_path / 'keep.txt'
  keep.write_text('2q2k\n4i6p_A\n101m_A\n3zee_A\n4zey_A\n1abc\n')
  record, err = _subset(capsys, tmp_path / 'out', built, '--keep-list', keep,
                        '--exclude-list', exclude, '--exclude-class', 'strand:0.1',
                        '--exclude-class', 'HELIX:0.8')
  fractions = {c: _fractions(chains[c]) for c in ('2q2k_B', '101m_A', '3zee_A', '4zey_A')}
  by_class = {c for c, f in fractions.items() if f['strand'] >= 0.1 or f['helix'] >= 0.8}
  # In the ground truth, 2q2k_B is 20% strand, 4zey_A 89% helix; 101m_A (71% helix) and
  # 3zee_A (7% strand) stay.
  assert by_class == {'2q2k_B', '4zey_A'}
  assert record['chains'] == ['101m_A', '3zee_A']
  reasons = {c: v['reason'] for c, v in record['left_out'].items()}
  assert reasons == {'4i6p_B': 'keep_list', '2q2k_A': 'exclude_list', '4i6p_A': 'exclude_list',
                     '2q2k_B': 'exclude_class', '4zey_A': 'exclude_class'}
  assert record['unmatched_ids'] == {'keep_list': ['1abc'], 'exclude_list': ['4i6p_b', '9xyz_A']}
  assert set(record['class_fractions']) == set(fractions)
  for chain_id, expected in fractions.items():
    assert record['class_fractions'][chain_id] == pytest.approx(expected)
  assert record['options']['exclude_classes'] == [['strand', 0.1], ['helix', 0.8]]
  assert record['options']['keep_list'] == str(keep) and record['options']['fraction'] is None
  assert record['num_source_chains'] == len(CHAINS) and record['source'] == str(built)
  assert 'kept 2 of 7 chains' in err
  assert 'left out: 2 by exclude_class, 2 by exclude_list, 1 by keep_list' in err
  unmatched = [line for line in err.splitlines() if 'match no chain' in line]
  assert len(unmatched) == 2 and all(line.startswith('jaxfold: warning: ') for line in unmatched)
  assert "1 of its 6 IDs match no chain" in unmatched[0] and "'1abc'" in unmatched[0]
  written, lengths = dataset_builder.record_chains(record['dataset'])
  assert sorted(written) == record['chains'] and sorted(lengths) == [84, 154]


def test_the_draw_is_the_seed_s_choice_from_the_sorted_chains(tmp_path, capsys, built):
  record, _ = _subset(capsys, tmp_path / 'a', built, '--fraction', '0.5', '--seed', '3')
  drawn = np.random.default_rng(3).choice(len(CHAINS), size=4, replace=False)  # round(3.5)
  assert record['chains'] == sorted(sorted(CHAINS)[i] for i in drawn)
  assert {v['reason'] for v in record['left_out'].values()} == {'sample'}
  assert sorted(record['chains'] + list(record['left_out'])) == sorted(CHAINS)
  # --data may also be what `jaxfold data build --output` was given.
  again, _ = _subset(capsys, tmp_path / 'b', built.parent.parent, '--fraction', '0.5', '--seed',
                     '3')
  assert again['chains'] == record['chains'] and again['source'] == str(built)
  # The draw does not depend on the order the chains come in, and other seeds differ.
  assert subset.choose(CHAINS[::-1], 0.5, None, 3) == record['chains']
  assert len({tuple(subset.choose(CHAINS, None, 3, seed)) for seed in range(5)}) > 1
  assert subset.choose(CHAINS, None, 7, 0) == sorted(CHAINS)


def test_copied_records_equal_the_source_and_train_as_a_data_set(tmp_path, capsys, built):
  record, _ = _subset(capsys, tmp_path / 'out', built, '--count', '3', '--seed', '1')
  assert len(record['chains']) == 3
  chain_ids, _ = dataset_builder.record_chains(built)
  source = dataset_builder.load_data_source(built)
  copy = dataset_builder.load_data_source(record['dataset'])
  copied, _ = dataset_builder.record_chains(record['dataset'])
  assert sorted(copied) == record['chains']
  for index, chain_id in enumerate(copied):
    original, written = source[chain_ids.index(chain_id)], copy[index]
    assert set(original) == set(written)
    for key, array in original.items():
      assert written[key].dtype == array.dtype, key
      np.testing.assert_array_equal(written[key], array, err_msg=f'{chain_id} {key}')
  summary = dataset_builder.BuildSummary.load(record['dataset'])
  assert summary.dataset_dir == record['dataset'] and summary.num_examples == {'train': 3}
  config = config_lib.load(TINY)
  batch = training_set.batches(record['dataset'], config.model.data, seed=0,
                               train_config=config.crop, num_recycle=config.max_num_recycle,
                               batch_size=2, shard_index=0, shard_count=1)[0]
  assert batch['aatype'].shape == (2, config.max_num_recycle + 1, config.crop.crop_size)
  assert not list(tmp_path.glob('.*partial*'))


def test_the_leakage_report_flags_validation_chains_similar_to_chosen_ones(tmp_path, capsys,
                                                                          built, chains, data):
  unrelated = (data / 'alignments' / UNRELATED / 'query.fasta').read_text().split('\n', 1)[1]
  fasta = tmp_path / 'validation.fasta'
  fasta.write_text(f'>val_2q2k some description\n{chains["2q2k_A"][0]}\n'
                   f'>val_other\n{unrelated}')
  record, err = _subset(capsys, tmp_path / 'out', built, '--validation', fasta)
  report = record['leakage']
  assert report['source'] == str(fasta) and report['split'] is None
  assert report['max_identity'] == 0.4
  first, second = report['chains']
  assert first['chain'] == 'val_2q2k' and first['length'] == 70
  assert first['identity'] == 1.0 and first['closest'] == '2q2k_A' and first['flagged']
  assert first['similar'] == {'2q2k_A': 1.0, '2q2k_B': 1.0}
  assert second['chain'] == 'val_other' and not second['flagged'] and second['similar'] == {}
  assert 0 < second['identity'] <= 0.4
  assert '1 of 2 validation chains above 40% identity: val_2q2k (1.00 to 2q2k_A)' in err
  assert record['chains'] == sorted(CHAINS)  # only reported

  dropped, _ = _subset(capsys, tmp_path / 'dropped', built, '--validation', fasta,
                       '--drop-leaking')
  assert dropped['chains'] == sorted(set(CHAINS) - {'2q2k_A', '2q2k_B'})
  assert dropped['left_out'] == {
      c: {'reason': 'leakage', 'detail': 'identity 1.000 to validation chain val_2q2k'}
      for c in ('2q2k_A', '2q2k_B')}


def test_a_built_validation_set_is_read_from_its_only_split(tmp_path, capsys, built):
  keep = tmp_path / 'keep.txt'
  keep.write_text('4i6p_A\n')
  validation, _ = _subset(capsys, tmp_path / 'validation', built, '--keep-list', keep)
  exclude = tmp_path / 'exclude.txt'
  exclude.write_text('4i6p\n')
  # 3zee_A is 4i6p's protein less its first 3 residues and its last: identity 84/84.
  record, _ = _subset(capsys, tmp_path / 'out', built, '--exclude-list', exclude,
                      '--validation', tmp_path / 'validation', '--max-identity', '0.9')
  (row,) = record['leakage']['chains']
  assert record['leakage']['split'] == 'train'
  assert row['chain'] == '4i6p_A' and row['length'] == 88
  assert row['identity'] == 1.0 and row['closest'] == '3zee_A' and row['similar'] == {
      '3zee_A': 1.0}
  assert subset.sequence_identity('ACDEFGHIKL', 'ACDEFGHIKL' + 'W' * 20) == 1.0
  assert subset.sequence_identity('ACDEFGHIKL', 'ACDEFWWWWW') == 0.5


def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, capsys, built, monkeypatch):
  out = tmp_path / 'out'
  keep = tmp_path / 'keep.txt'
  keep.write_text('2q2k_A\n')
  fine = tmp_path / 'fine.txt'
  fine.write_text('2q2k\n')
  base = ['data', 'subset', '--data', built, '--output', out]
  for options, names in [
      (['--exclude-class', 'strand0.5'], 'strand0.5'),
      (['--exclude-class', 'sheet:0.5'], 'sheet'),
      (['--exclude-class', 'coil:1.5'], '1.5'),
      (['--fraction', '0'], 'fraction 0'),
      (['--count', '8'], 'cannot choose 8 chains'),
      (['--fraction', '0.05'], 'no chain of split'),  # 0.35 chains round to none
      (['--keep-list', tmp_path / 'missing.txt'], 'missing.txt'),
      (['--validation', tmp_path / 'missing.fasta'], 'missing.fasta'),
      (['--validation', keep], 'keep.txt'),  # not FASTA
      (['--keep-list', keep, '--exclude-list', fine], 'no chain of split'),
      (['--drop-leaking'], 'validation set'),
      (['--split', 'validation'], "no split 'validation'"),
  ]:
    assert_fails(capsys, base + options, names)
    assert not out.exists()
  assert_fails(capsys, ['data', 'subset', '--data', tmp_path, '--output', out], 'no built dataset')
  assert_fails(capsys, base[:-1] + [tmp_path], 'exists')

  def broken(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(dataset_builder, 'build_dataset', broken)
  assert_fails(capsys, base + ['--keep-list', fine], 'disk full')
  assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
      'fine.txt', 'keep.txt']

