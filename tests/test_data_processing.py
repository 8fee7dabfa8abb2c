"""Feature processing (jaxfold.data.processing): the batch the model reads, seeds, masking,
training crops, padding and bad input. Reference-free; parity/ compares with AlphaFold.

Eval mode runs on the real query73 feature pickle. Training mode runs on 2q2k-like data:
the real chain A of PDB 2q2k (its atoms as labels and as three noisy templates) with a
synthetic MSA of point mutants.
"""

import functools
import pickle

import numpy as np
import pytest

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.data import crop
from jaxfold.data.processing import RawFeatureError, TrainingDataConfig, process_features
from jaxfold.model import config
from jaxfold.model.alphafold import feature_shapes

# Our residue order -> HHblits ids (the raw MSA and template alphabets).
_TO_HHBLITS = np.argsort(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)


@functools.cache
def _query73(path):
  with open(path, 'rb') as f:
    return pickle.load(f)


@pytest.fixture(scope='module')
def query73(shared_dir):
  return _query73(str(shared_dir / 'data' / 'features' / 'alphafold_feature_dict.pickle'))


@functools.cache
def _eval_batch(path, preset, seed):
  return process_features(_query73(path), config.preset(preset).data, seed=seed)


def _batch(shared_dir, preset='model_1_ptm', seed=0):
  return _eval_batch(str(shared_dir / 'data' / 'features' / 'alphafold_feature_dict.pickle'),
                     preset, seed)


@pytest.mark.parametrize('preset', ['model_1_ptm', 'model_3_ptm'])
def test_batch_has_every_feature_the_model_reads(shared_dir, preset):
  cfg = config.preset(preset)
  batch = _batch(shared_dir, preset)
  # model_1 gives 4 of its 512 cluster rows to templates; model_3 has no templates.
  num_seq = 508 if cfg.data.common.reduce_msa_clusters_by_max_templates else 512
  shapes = feature_shapes(cfg.model, num_res=73, num_seq=num_seq, num_extra=5120,
                          num_templates=4, num_slices=4)
  for key, spec in shapes.items():
    assert key in batch, key
    assert batch[key].shape == spec.shape and batch[key].dtype == spec.dtype, key
  assert ('template_aatype' in batch) == cfg.data.common.use_templates


def test_same_seed_same_batch_other_seed_other_sample(shared_dir, query73):
  data = config.preset('model_1_ptm').data
  first = _batch(shared_dir)
  again = process_features(query73, data, seed=0)
  assert sorted(first) == sorted(again)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  other = _batch(shared_dir, seed=1)
  assert not np.array_equal(first['true_msa'], other['true_msa'])
  # Each recycling slice is a fresh sample; the query row always comes first.
  assert not np.array_equal(first['true_msa'][0], first['true_msa'][1])
  np.testing.assert_array_equal(first['true_msa'][:, 0], first['aatype'])
  np.testing.assert_array_equal(first['aatype'], other['aatype'])


def test_masked_msa_rate_and_replacements(shared_dir):
  batch = _batch(shared_dir)
  valid = batch['msa_mask'] > 0
  chosen = (batch['bert_mask'] > 0) & valid
  rate = chosen.sum() / valid.sum()
  assert abs(rate - 0.15) < 0.005, rate
  shown = np.argmax(batch['msa_feat'][..., :23], axis=-1)
  np.testing.assert_array_equal(shown[~chosen & valid], batch['true_msa'][~chosen & valid])
  # 70% of chosen entries become the mask token (1 - profile - same - uniform probabilities).
  assert abs(np.mean(shown[chosen] == 22) - 0.7) < 0.02
  assert np.all(batch['bert_mask'][~valid] == 0)


def test_cluster_profile_sums_to_one_and_counts_every_row(shared_dir):
  batch = _batch(shared_dir)
  rows = batch['msa_row_mask'] > 0
  profile = batch['msa_feat'][rows][..., 25:48]
  np.testing.assert_allclose(profile.sum(-1), 1.0, atol=1e-5)
  assert batch['msa_row_mask'].sum(-1).tolist() == [508] * 4
  assert batch['extra_msa_row_mask'].sum(-1).tolist() == [1136 - 508] * 4


def test_padding_zero_fills_and_masks(shared_dir):
  batch = _batch(shared_dir)
  extra_pad = batch['extra_msa_row_mask'] == 0
  for key in ('extra_msa', 'extra_msa_mask', 'extra_has_deletion', 'extra_deletion_value'):
    assert np.all(batch[key][extra_pad] == 0), key
  assert extra_pad.sum() == 4 * (5120 - 628)


def test_without_fixed_size_nothing_is_padded(query73):
  data = config.replace(config.preset('model_1_ptm'), {'data.eval.fixed_size': False}).data
  batch = process_features(query73, data, seed=0, num_recycle=0)
  assert batch['msa_feat'].shape == (1, 508, 73, 49)
  assert batch['extra_msa'].shape == (1, 1136 - 508, 73)
  assert batch['template_aatype'].shape == (1, 4, 73)


# ---------------------------------------------------------------------------------------------
# Training mode on 2q2k-like data.
# ---------------------------------------------------------------------------------------------

NUM_MSA_ROWS, NUM_TEMPLATES = 40, 3


@functools.cache
def _chain_2q2k(path):
  with open(path) as f:
    return protein.from_mmcif_string(f.read(), chain_id='A')


@pytest.fixture(scope='module')
def raw_2q2k(shared_dir):
  prot = _chain_2q2k(str(shared_dir / 'data' / 'mmcif' / '2q2k.cif'))
  rng = np.random.default_rng(0)
  num_res = len(prot.aatype)
  query = _TO_HHBLITS[prot.aatype]
  msa = np.repeat(query[None], NUM_MSA_ROWS, axis=0)
  mutate = rng.random(msa.shape) < 0.3
  msa[mutate] = rng.integers(0, 22, size=mutate.sum())
  msa[0] = query
  noise = rng.normal(scale=0.5, size=(NUM_TEMPLATES,) + prot.atom_positions.shape)
  return {
      'aatype': np.eye(21, dtype=np.int32)[prot.aatype],
      'residue_index': np.arange(num_res, dtype=np.int32),
      'between_segment_residues': np.zeros(num_res, np.int32),
      'seq_length': np.full(num_res, num_res, np.int32),
      'msa': msa.astype(np.int32),
      'deletion_matrix_int': rng.integers(0, 3, size=msa.shape).astype(np.int32),
      'num_alignments': np.full(num_res, NUM_MSA_ROWS, np.int32),
      'template_aatype': np.eye(22, dtype=np.float32)[np.broadcast_to(query, (3, num_res))],
      'template_all_atom_positions': (prot.atom_positions + noise).astype(np.float32),
      'template_all_atom_masks': np.broadcast_to(prot.atom_mask, (3,) + prot.atom_mask.shape
                                                 ).astype(np.float32),
      'template_sum_probs': np.array([[3.0], [2.0], [1.0]], np.float32),
      'all_atom_positions': prot.atom_positions.astype(np.float32),
      'all_atom_mask': prot.atom_mask.astype(np.float32),
      'atom14_gt_exists': rc.restype_atom14_mask[prot.aatype],
      'resolution': np.array([3.0], np.float32),  # AlphaFold stores scalars as [1]
  }


def _train(raw, seed, **train_changes):
  train = TrainingDataConfig(**{'crop_size': 32, 'max_msa_clusters': 16, 'max_extra_msa': 64,
                                **train_changes})
  return process_features(raw, config.preset('model_1_ptm').data, mode='train', seed=seed,
                          num_recycle=1, train_config=train)


def _check_consistent_crop(raw, batch, crop_size):
  """Every residue-axis feature shows the raw rows named by residue_index."""
  num_real = int(batch['seq_length'][0])
  assert num_real == min(crop_size, raw['aatype'].shape[0])
  idx = batch['residue_index'][0, :num_real]
  assert len(set(idx.tolist())) == num_real
  np.testing.assert_array_equal(batch['aatype'][:, :num_real],
                                np.broadcast_to(np.argmax(raw['aatype'], -1)[idx], (2, num_real)))
  np.testing.assert_array_equal(batch['all_atom_positions'][:, :num_real],
                                np.broadcast_to(raw['all_atom_positions'][idx],
                                                (2, num_real, 37, 3)))
  np.testing.assert_array_equal(batch['atom14_gt_exists'][0, :num_real],
                                raw['atom14_gt_exists'][idx])
  query = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)[raw['msa'][0, idx]]
  np.testing.assert_array_equal(batch['true_msa'][:, 0, :num_real],
                                np.broadcast_to(query, (2, num_real)))
  kept = batch['template_mask'][0] > 0
  for t, row in enumerate(batch['template_sum_probs'][0][kept, 0]):
    source = int(3 - row)  # sum_probs 3, 2, 1 identify templates 0, 1, 2
    np.testing.assert_array_equal(batch['template_all_atom_positions'][0, t, :num_real],
                                  raw['template_all_atom_positions'][source][idx])
  # Padding past the crop is zero and masked.
  assert np.all(batch['seq_mask'][:, num_real:] == 0)
  assert np.all(batch['all_atom_mask'][:, num_real:] == 0)
  assert np.all(batch['msa_mask'][:, :, num_real:] == 0)
  assert np.all(batch['template_pseudo_beta_mask'][:, :, num_real:] == 0)
  assert batch['seq_mask'].shape[-1] == crop_size
  return idx


def test_contiguous_crop_keeps_a_window_of_every_residue_feature(raw_2q2k):
  batch = _train(raw_2q2k, seed=3, spatial_crop_prob=0.0)
  idx = _check_consistent_crop(raw_2q2k, batch, 32)
  np.testing.assert_array_equal(np.diff(idx), 1)
  assert set(batch) >= {'all_atom_positions', 'atom14_gt_exists', 'pseudo_beta',
                        'resolution', 'use_clamped_fape', 'bert_mask', 'msa_feat'}
  assert batch['resolution'].shape == (2,) and batch['use_clamped_fape'].shape == (2,)
  assert batch['msa_feat'].shape == (2, 16 - 4, 32, 49)
  assert batch['extra_msa'].shape == (2, 64, 32)


def test_spatial_crop_keeps_the_nearest_residues_of_a_centre(raw_2q2k):
  batch = _train(raw_2q2k, seed=3, spatial_crop_prob=1.0)
  idx = _check_consistent_crop(raw_2q2k, batch, 32)
  ca = raw_2q2k['all_atom_positions'][:, rc.atom_order['CA']]
  chosen = set(idx.tolist())
  nearest = [set(np.argsort(np.linalg.norm(ca - ca[c], axis=-1), kind='stable')[:32].tolist())
             for c in idx]
  assert chosen in nearest
  assert np.any(np.diff(idx) > 1)  # not a window


def test_training_crop_kinds_follow_spatial_crop_prob(raw_2q2k):
  kinds = []
  for seed in range(12):
    idx = _train(raw_2q2k, seed, spatial_crop_prob=0.5)['residue_index'][0, :32]
    kinds.append(bool(np.all(np.diff(idx) == 1)))
  assert 0 < sum(kinds) < len(kinds)


def test_crop_larger_than_protein_pads(raw_2q2k):
  batch = _train(raw_2q2k, seed=0, crop_size=96)
  _check_consistent_crop(raw_2q2k, batch, 96)


def test_template_subsampling_varies_the_templates(raw_2q2k):
  counts = {int(_train(raw_2q2k, seed)['template_mask'][0].sum()) for seed in range(12)}
  assert len(counts) > 1 and counts <= {0, 1, 2, 3}


def test_crop_table_names_every_axis():
  for key, axes in crop.FEATURE_AXES.items():
    assert all(kind in (None, crop.RES, crop.MSA, crop.EXTRA, crop.TEMPLATE) for kind in axes)


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------

def test_missing_and_misshapen_features_are_named(query73):
  data = config.preset('model_1_ptm').data
  broken = {k: v for k, v in query73.items() if k != 'msa'}
  with pytest.raises(RawFeatureError, match=r"x\.pkl: missing raw feature 'msa'"):
    process_features(broken, data, seed=0, source='x.pkl')
  with pytest.raises(RawFeatureError, match="'template_all_atom_positions' has shape"):
    process_features({**query73, 'template_all_atom_positions':
                      query73['template_all_atom_positions'][:, :10]}, data, seed=0)
  with pytest.raises(RawFeatureError, match='num_alignments says 1136 rows but msa has 10'):
    process_features({**query73, 'msa': query73['msa'][:10],
                      'deletion_matrix_int': query73['deletion_matrix_int'][:10]}, data, seed=0)
  with pytest.raises(ValueError, match="mode must be 'eval' or 'train'"):
    process_features(query73, data, seed=0, mode='predict')


def test_spatial_crop_without_coordinates_is_refused(raw_2q2k):
  unlabelled = {k: v for k, v in raw_2q2k.items() if not k.startswith('all_atom')}
  with pytest.raises(RawFeatureError, match="missing raw feature 'all_atom_positions'"):
    _train(unlabelled, seed=0, spatial_crop_prob=1.0)
