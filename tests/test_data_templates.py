"""jaxfold.data.hhr and jaxfold.data.templates on real HHsearch output and PDB entries.

The template features are checked against the features.pkl AlphaFold's own pipeline wrote for
the query73 protein, and against the template inputs recorded on OpenFold.
"""

import dataclasses
import datetime
import logging
import pickle

import numpy as np
import pytest

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import hhr, mmcif, parsers, templates


@pytest.fixture(scope='module')
def data_dir(shared_dir):
  return shared_dir / 'data'


@pytest.fixture(scope='module')
def query73(data_dir) -> str:
  return ''.join((data_dir / 'alignments' / 'query73' / 'query.fasta').read_text()
                 .split('\n', 1)[1].split())


@pytest.fixture(scope='module')
def hits73(data_dir) -> list[hhr.TemplateHit]:
  return hhr.read_hhr(data_dir / 'alignments' / 'query73' / 'pdb70_hits.hhr')


@pytest.fixture(scope='module')
def features73(query73, hits73, data_dir) -> templates.TemplateSearchResult:
  return templates.template_features(query73, hits73, data_dir / 'mmcif')


# ---------------------------------------------------------------------------------------------
# HHR parsing.
# ---------------------------------------------------------------------------------------------

def test_query73_hhr_first_hit(hits73):
  assert len(hits73) == 10
  assert [h.index for h in hits73] == list(range(1, 11))
  first = hits73[0]
  assert first.name.startswith('1HF9_B ATPASE INHIBITOR (MITOCHONDRIAL);')
  assert (first.aligned_cols, first.sum_probs) == (22, 13.1)
  assert first.query == 'AEHHHKAAEHHEQAAKHHHAAA'
  assert first.hit_sequence == 'ISHHAKEIERLQKEIERHKQSI'
  assert first.indices_query == tuple(range(6, 28))
  assert first.indices_hit == tuple(range(9, 31))
  assert [h.sum_probs for h in hits73[5:]] == [0.0, 0.0, 7.4, 0.0, 0.0]


def test_6kwc_hhr_wrapped_alignments(data_dir):
  hits = hhr.read_hhr(data_dir / 'examples' / '6KWC_1' / 'hhsearch_output.hhr')
  assert len(hits) == 60
  first = hits[0]
  assert first.name.split()[0] == '2DFB_A' and (first.aligned_cols, first.sum_probs) == (189, 182.2)
  # Three wrapped Q/T line pairs, residues 3-191 of the query and 2-190 of the hit.
  assert len(first.query) == len(first.hit_sequence) == 189
  assert first.indices_query == tuple(range(2, 191))
  assert first.indices_hit == tuple(range(1, 190))


@pytest.mark.parametrize('folder, hhr_name, fasta_name', [
    ('alignments/query73', 'pdb70_hits.hhr', 'query.fasta'),
    ('examples/6KWC_1', 'hhsearch_output.hhr', '6kwc.fasta')])
def test_aligned_query_residues_are_the_query_sequence(data_dir, folder, hhr_name, fasta_name):
  """Every aligned query letter is the query residue its index points at; gaps are -1."""
  sequence = ''.join((data_dir / folder / fasta_name).read_text().split('\n', 1)[1].split())
  for hit in hhr.read_hhr(data_dir / folder / hhr_name):
    assert len(hit.query) == len(hit.hit_sequence) == len(hit.indices_query) == \
        len(hit.indices_hit)
    for letter, i in zip(hit.query, hit.indices_query):
      assert (letter == '-') == (i == -1) and (i == -1 or sequence[i] == letter)
    hit_residues = [i for i in hit.indices_hit if i >= 0]
    assert hit_residues == list(range(hit_residues[0], hit_residues[0] + len(hit_residues)))


@pytest.mark.parametrize('make_bad, reason', [
    (lambda text: '', 'not an HHsearch .hhr file'),
    (lambda text: 'some\nrandom text\n', 'not an HHsearch .hhr file'),
    (lambda text: text[:text.index('T 2CRB_A           32')], "query lines but"),
    (lambda text: text[:text.index('Q query            11 HKAA') + 30], 'unreadable alignment'),
    (lambda text: text.replace('Aligned_cols=20', 'Aligned_cols=twenty'), 'hit No 2: unreadable'),
    (lambda text: text.replace('>4ZEY_A', 'garbage'), "hit No 3: expected a '>name'"),
    (lambda text: text.replace('Q query            11 HKAAEHHEQAAKHHHAAAEH   30 (73)', 'Q ', 1),
     "line 39: hit No 2: unreadable alignment line 'Q '"),
    (lambda text: text.replace('T 2CRB_A           32 EEAISCHRKATTYLSEAMKL   51 (97)', 'T '),
     "line 43: hit No 2: unreadable alignment line 'T '"),
])
def test_malformed_hhr_raises_naming_the_file(data_dir, tmp_path, make_bad, reason):
  path = tmp_path / 'broken.hhr'
  path.write_text(make_bad((data_dir / 'alignments' / 'query73' / 'pdb70_hits.hhr').read_text()))
  with pytest.raises(hhr.HhrError, match=reason) as error:
    hhr.read_hhr(path)
  assert str(path) in str(error.value)


def test_hhr_that_is_not_utf8_names_the_file_and_byte(data_dir, tmp_path):
  text = (data_dir / 'alignments' / 'query73' / 'pdb70_hits.hhr').read_text()
  path = tmp_path / 'latin1.hhr'
  path.write_bytes(text.replace('nuclear receptor', 'nucléar receptor', 1).encode('latin-1'))
  offset = text.index('nuclear receptor') + 4
  with pytest.raises(parsers.ParseError,
                     match=f'^{path}: not UTF-8 text: byte 0xe9 at offset {offset} '):
    hhr.read_hhr(path)


def test_hhr_with_no_hits_is_empty():
  assert hhr.parse_hhr('Query         query\nMatch_columns 73\n\n No Hit   Prob\n') == []


# ---------------------------------------------------------------------------------------------
# Template features.
# ---------------------------------------------------------------------------------------------

def test_features_equal_alphafolds_features_pkl(features73, data_dir):
  """Each template found equals the one AlphaFold's pipeline wrote, key by key, exactly."""
  with open(data_dir / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    reference = pickle.load(f)
  ours = features73.features
  names = list(ours['template_domain_names'])
  # The five hits whose mmCIF is in the shared folder, best sum_probs first.
  assert names == [b'2crb_A', b'4zey_A', b'3zee_A', b'4i6p_A', b'2q2k_A']
  reference_names = list(reference['template_domain_names'])
  for t, name in enumerate(names):
    r = reference_names.index(name)
    for key, dtype in templates.TEMPLATE_FEATURES.items():
      assert ours[key].dtype == dtype and reference[key].dtype == dtype, key
      assert ours[key].shape[1:] == reference[key].shape[1:], key
      if dtype == object:
        assert ours[key][t] == reference[key][r], (name, key)
      else:
        np.testing.assert_array_equal(ours[key][t], reference[key][r], err_msg=f'{name} {key}')


def test_missing_mmcif_is_skipped_with_a_warning(query73, hits73, data_dir, caplog):
  with caplog.at_level(logging.WARNING, logger='jaxfold.data.templates'):
    result = templates.template_features(query73, hits73, data_dir / 'mmcif')
  missing = ['3u8v', '1hf9', '1psm', '5kc1', '5kc1']
  assert len(result.skipped) == len(missing)
  for pdb_id, reason in zip(missing, result.skipped):
    assert f'{pdb_id}.cif' in reason
  assert sum('1hf9.cif' in record.getMessage() for record in caplog.records) == 1


def test_two_templates_match_openfolds_recorded_inputs(query73, hits73, data_dir, shared_dir):
  # OpenFold centres each template chain's atoms at the origin.
  result = templates.template_features(query73, hits73, data_dir / 'mmcif', max_hits=2,
                                       zero_center=True)
  features = result.features
  assert list(features['template_domain_names']) == [b'2crb_A', b'4zey_A']
  recorded = np.load(shared_dir / 'fixtures' / 'openfold' / 'small' / 'inputs.npz')
  # OpenFold's layout: recycling axis last; its aatype is in our residue order.
  np.testing.assert_array_equal(features['template_all_atom_positions'],
                                recorded['template_all_atom_positions'][..., 0])
  np.testing.assert_array_equal(features['template_all_atom_masks'],
                                recorded['template_all_atom_mask'][..., 0])
  ours_aatype = np.take(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE,
                        features['template_aatype'].argmax(-1))
  np.testing.assert_array_equal(ours_aatype, recorded['template_aatype'][..., 0])
  np.testing.assert_array_equal(features['template_sum_probs'],
                                recorded['template_sum_probs'][..., 0])


def test_release_date_cut_off(query73, hits73, data_dir):
  result = templates.template_features(query73, hits73, data_dir / 'mmcif',
                                       max_template_date='2010-01-01')
  # 2crb (2005) and 2q2k (2008) are older; 4zey, 3zee and 4i6p are from 2013-2015.
  assert list(result.features['template_domain_names']) == [b'2crb_A', b'2q2k_A']
  assert sum('after the cut-off 2010-01-01' in reason for reason in result.skipped) == 3


def test_no_usable_hit_gives_zero_templates(query73, hits73, data_dir):
  result = templates.template_features(query73, hits73, data_dir / 'mmcif',
                                       max_template_date='1990-01-01')
  features = result.features
  assert {k: v.shape for k, v in features.items()} == {
      'template_aatype': (0, 73, 22), 'template_all_atom_masks': (0, 73, 37),
      'template_all_atom_positions': (0, 73, 37, 3), 'template_domain_names': (0,),
      'template_sequence': (0,), 'template_sum_probs': (0, 1)}
  assert {k: v.dtype for k, v in features.items()} == templates.TEMPLATE_FEATURES
  assert templates.template_features(query73, [], data_dir / 'mmcif').features.keys() == \
      features.keys()


def _hit(hits, name: str) -> hhr.TemplateHit:
  return next(h for h in hits if h.name.startswith(name))


def test_prefilter_drops_short_unaligned_and_duplicate_hits(query73, hits73, data_dir):
  crb = _hit(hits73, '2CRB_A')
  cases = {
      'aligns 0.096 of the query': dataclasses.replace(crb, aligned_cols=7),
      'has 9 residues': dataclasses.replace(crb, hit_sequence='-' * 11 + crb.hit_sequence[11:]),
      'is a copy of the query': dataclasses.replace(crb, hit_sequence=query73[:72]),
  }
  for reason, hit in cases.items():
    result = templates.template_features(query73, [hit], data_dir / 'mmcif')
    assert result.features['template_domain_names'].shape == (0,)
    assert len(result.skipped) == 1 and reason in result.skipped[0], result.skipped


def test_changed_hit_sequence_is_realigned_to_the_mmcif_chain(query73, hits73, data_dir,
                                                              features73):
  """A PDB70 sequence that differs from the mmCIF's is re-aligned onto the chain's residues."""
  crb = _hit(hits73, '2CRB_A')
  assert crb.hit_sequence == 'EEAISCHRKATTYLSEAMKL'
  one_change = dataclasses.replace(crb, hit_sequence='EEAISCHRKAWTYLSEAMKL')
  result = templates.template_features(query73, [one_change], data_dir / 'mmcif')
  assert list(result.features['template_domain_names']) == [b'2crb_A']
  for key in ('template_all_atom_positions', 'template_all_atom_masks', 'template_sequence',
              'template_aatype'):
    np.testing.assert_array_equal(result.features[key][0], features73.features[key][0], key)
  three_changes = dataclasses.replace(crb, hit_sequence='EEAWSCHRKAWTYLSEWMKL')
  result = templates.template_features(query73, [three_changes], data_dir / 'mmcif')
  assert result.features['template_domain_names'].shape == (0,)
  assert 'identical to the chain sequence' in result.skipped[0]


def test_realign_maps_a_fragment_into_the_full_chain():
  full = 'GSSGSSGMEGPLNLAHQQSRRADRLLAAGKYEEAISCHRKATTYLSEAMKL'
  fragment = 'AAGKYEEAISCHRKATTYL'
  mapping = templates.realign(fragment, full)
  offset = full.index(fragment)
  assert mapping == {i: i + offset for i in range(len(fragment))}


def test_arginine_nh1_is_the_nitrogen_nearer_cd():
  positions = np.zeros((2, 37, 3), np.float32)
  mask = np.zeros((2, 37), np.float32)
  cd, nh1, nh2 = rc.atom_order['CD'], rc.atom_order['NH1'], rc.atom_order['NH2']
  for i in range(2):
    positions[i, [cd, nh1, nh2]] = [[0, 0, 0], [3, 0, 0], [2, 0, 0]]  # NH1 further than NH2
    mask[i, [cd, nh1, nh2]] = 1
  chain = mmcif.MmcifChain('A', 'RK', ('ARG', 'LYS'), positions, mask)
  fixed, fixed_mask = templates.chain_atoms(chain)
  np.testing.assert_array_equal(fixed[0, [nh1, nh2]], [[2, 0, 0], [3, 0, 0]])
  np.testing.assert_array_equal(fixed[1], positions[1])  # only arginines are touched
  np.testing.assert_array_equal(fixed_mask, mask)
  assert chain.atom_positions[0, nh1, 0] == 3  # the parsed chain is left as read


def _4zey_folder(data_dir, tmp_path, edit) -> str:
  """A template folder whose 4zey.cif is the shared one changed by `edit` (text -> bytes)."""
  path = tmp_path / '4zey.cif'
  path.write_bytes(edit((data_dir / 'mmcif' / '4zey.cif').read_text()))
  return str(path)


@pytest.mark.parametrize('edit, reason', [
    (lambda text: b'data_4zey\nloop_\n1 2\n', 'not an mmCIF file (ZeroDivisionError'),
    (lambda text: text.replace('nuclear', 'nucléar').encode('latin-1'),
     'not UTF-8 text: byte 0xe9'),
    (lambda text: text.replace('4.415  25.417', 'nan  25.417').encode(),
     'chain A residue 1 GLY atom N: coordinates nan 25.417 3.156 are not finite'),
    (lambda text: text.replace('25.417  3.156', '25.417  inf').encode(),
     'chain A residue 1 GLY atom N: coordinates 4.415 25.417 inf are not finite'),
])
def test_unreadable_template_mmcif_skips_its_hit_with_the_reason(query73, hits73, data_dir,
                                                                 tmp_path, edit, reason, caplog):
  path = _4zey_folder(data_dir, tmp_path, edit)
  with caplog.at_level(logging.WARNING, logger='jaxfold.data.templates'):
    result = templates.template_features(query73, [_hit(hits73, '4ZEY_A')], tmp_path)
  assert result.features['template_domain_names'].shape == (0,)
  assert len(result.skipped) == 1 and f'4ZEY_A: {path}: ' in result.skipped[0]
  assert reason in result.skipped[0] and '\n' not in result.skipped[0]
  assert any(path in record.getMessage() for record in caplog.records)


def _revision_dates(text: str, *dates: str) -> bytes:
  for old, new in zip(('2015-05-06', '2017-11-22', '2018-01-24'), dates):
    text = text.replace(f' {old} \n', f' {new} \n')
  return text.encode()


def test_template_without_a_usable_release_date_is_skipped_under_a_cut_off(query73, hits73,
                                                                           data_dir, tmp_path):
  zey = _hit(hits73, '4ZEY_A')
  path = _4zey_folder(data_dir, tmp_path, lambda text: _revision_dates(text, '?', '?', '?'))
  assert mmcif.read(path).header.release_date is None
  result = templates.template_features(query73, [zey], tmp_path, max_template_date='2030-01-01')
  assert result.skipped == (f'hit No 3 4ZEY_A: {path} has no release date (the cut-off is '
                            '2030-01-01)',)
  kept = templates.template_features(query73, [zey], tmp_path)  # no cut-off: no date needed
  assert list(kept.features['template_domain_names']) == [b'4zey_A']
  _4zey_folder(data_dir, tmp_path, lambda text: _revision_dates(text, '2015-13-06', '.', '?'))
  result = templates.template_features(query73, [zey], tmp_path, max_template_date='2030-01-01')
  assert result.skipped == (f'hit No 3 4ZEY_A: {path}: release date 2015-13-06: not a date '
                            '(YYYY-MM-DD): month must be in 1..12',)


def test_parse_date_names_the_value_and_the_problem(query73, hits73, data_dir):
  assert templates.parse_date('2021-11-01', 'x') == datetime.date(2021, 11, 1)
  assert templates.parse_date(datetime.date(2021, 11, 1), 'x') == datetime.date(2021, 11, 1)
  with pytest.raises(JaxfoldError, match=r'^--max-template-date 2021-13-01: not a date '
                     r'\(YYYY-MM-DD\): month must be in 1\.\.12$'):
    templates.parse_date('2021-13-01', '--max-template-date')
  for text in ('20210101', '2021-1-01', '2021-W01-1', ''):
    with pytest.raises(JaxfoldError, match=rf'^x {text}: not a date \(YYYY-MM-DD\)$'):
      templates.parse_date(text, 'x')
  with pytest.raises(JaxfoldError, match='^max_template_date 2021-02-30: not a date'):
    templates.template_features(query73, hits73, data_dir / 'mmcif',
                                max_template_date='2021-02-30')


def test_hit_with_no_aligned_residue_pair_is_skipped(query73, hits73, data_dir):
  crb = _hit(hits73, '2CRB_A')
  gaps = dataclasses.replace(crb, query='-' * len(crb.query),
                             indices_query=(-1,) * len(crb.indices_query))
  result = templates.template_features(query73, [gaps], data_dir / 'mmcif')
  assert result.skipped == ('hit No 2 2CRB_A: no query residue is aligned to a hit residue',)
