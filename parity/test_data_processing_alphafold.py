"""Feature processing (jaxfold.data.processing) against AlphaFold's `np_example_to_features`.

On both real feature pickles (query73: 73 residues, 1136 MSA rows, 8 templates; OpenFold's
test protein: 59 residues, 7435 rows, 8 templates):
- where no sampling happens (every MSA row a cluster centre, no BERT masking), every
  feature equals AlphaFold's exactly; the MSA rows after the query come in a random order
  on both sides, so they are compared sorted;
- with the default model_1_ptm sampling, the clustering is checked exactly on AlphaFold's
  own random samples (cluster profiles recomputed by jaxfold from AlphaFold's output), and
  the sampling statistics (BERT masking rate and replacement mix, row counts, mean cluster
  profile) agree within stated tolerances over several seeds.
"""

import collections
import functools
import pickle

import numpy as np
import pytest
from alphafold.model import config as af_config
from alphafold.model import features as af_features

from jaxfold.common import residue_constants as rc
from jaxfold.data import transforms
from jaxfold.data.processing import process_features
from jaxfold.model import config

QUERY73 = 'alphafold_feature_dict.pickle'
OPENFOLD = 'openfold_test_features.pkl'
MASK_TOKEN = transforms.MASK_TOKEN_ID


@functools.cache
def _raw(path):
  with open(path, 'rb') as f:
    raw = pickle.load(f)
  # AlphaFold reads only its own name for the template atom mask.
  if 'template_all_atom_mask' in raw:
    raw['template_all_atom_masks'] = raw.pop('template_all_atom_mask')
  return raw


def _raw_of(shared_dir, name):
  return _raw(str(shared_dir / 'data' / 'features' / name))


def _both(raw, changes, seed):
  """(AlphaFold's batch, jaxfold's batch) for model_1_ptm with `changes` to its data config."""
  af_cfg = af_config.model_config('model_1_ptm')
  for key, value in changes.items():
    section, field = key.split('.')
    af_cfg.data[section][field] = value
  ours_cfg = config.replace(config.preset('model_1_ptm'),
                            {f'data.{k}': v for k, v in changes.items()}).data
  return (af_features.np_example_to_features(dict(raw), af_cfg, seed),
          process_features(raw, ours_cfg, seed=seed))


def _sorted_rows(x):
  """The rows of x [N_seq, ...] in lexicographic order of their flattened contents."""
  flat = x.reshape(x.shape[0], -1)
  return flat[np.lexsort(flat.T[::-1])]


# Features with MSA rows; everything else is deterministic.
_ROW_PERMUTED = ('msa_feat', 'true_msa')


@functools.cache
def _deterministic(path):
  raw = _raw(path)
  num_rows = raw['msa'].shape[0]
  # Room for every row (model_1 reserves 4 cluster slots for templates), nothing masked.
  changes = {'eval.max_msa_clusters': num_rows + 4, 'eval.masked_msa_replace_fraction': 0.0,
             'common.num_recycle': 0}
  return _both(raw, changes, seed=0)


@pytest.mark.parametrize('name', [QUERY73, OPENFOLD])
def test_without_sampling_every_feature_equals_alphafolds(shared_dir, name):
  ref, ours = _deterministic(str(shared_dir / 'data' / 'features' / name))
  assert sorted(ours) == sorted(ref)
  for key in ref:
    assert ours[key].dtype == ref[key].dtype, key
    assert ours[key].shape == ref[key].shape, key
    if key in _ROW_PERMUTED or key == 'random_crop_to_size_seed':
      continue
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)
  for key in _ROW_PERMUTED:
    for s in range(ref[key].shape[0]):
      np.testing.assert_array_equal(ours[key][s, 0], ref[key][s, 0], err_msg=key)
      np.testing.assert_array_equal(_sorted_rows(ours[key][s, 1:]),
                                    _sorted_rows(ref[key][s, 1:]), err_msg=key)


@pytest.mark.parametrize('name', [QUERY73, OPENFOLD])
def test_template_features_and_atom_maps_are_exact(shared_dir, name):
  ref, ours = _deterministic(str(shared_dir / 'data' / 'features' / name))
  assert ref['template_mask'][0].tolist() == [1, 1, 1, 1]
  assert ref['template_pseudo_beta_mask'].sum() > 0
  for key in ('template_aatype', 'template_pseudo_beta', 'template_pseudo_beta_mask',
              'template_all_atom_positions', 'template_sum_probs', 'atom14_atom_exists',
              'atom37_atom_exists', 'residx_atom14_to_atom37', 'residx_atom37_to_atom14',
              'target_feat', 'aatype', 'residue_index', 'seq_mask'):
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# With sampling: the default model_1_ptm data config (508 clusters, 5120 extra rows).
# ---------------------------------------------------------------------------------------------

_SEEDS = (0, 1, 2)


@functools.cache
def _sampled(path):
  """Per seed: (AlphaFold's batch, jaxfold's batch), 2 slices each."""
  return [_both(_raw(path), {'common.num_recycle': 1}, seed) for seed in _SEEDS]


def _slices(batches):
  for batch in batches:
    for s in range(batch['aatype'].shape[0]):
      yield {k: v[s] for k, v in batch.items()}


def _deletions(value):
  """Deletion counts back from 2/pi * arctan(d / 3)."""
  return np.round(3 * np.tan(value.astype(np.float64) * np.pi / 2)).astype(np.float32)


def _cluster_features_recomputed(batch):
  """msa_feat's cluster profile and deletion mean, rebuilt by jaxfold from the batch's MSA.

  Valid when no extra row was cropped away (the batch then holds every extra row).
  """
  rows = batch['msa_row_mask'] > 0
  extra = batch['extra_msa_row_mask'] > 0
  msa_feat = batch['msa_feat'][rows]
  feats = {'msa': np.argmax(msa_feat[..., :23], axis=-1), 'msa_mask': batch['msa_mask'][rows],
           'deletion_matrix': _deletions(msa_feat[..., 24]),
           'extra_msa': batch['extra_msa'][extra], 'extra_msa_mask': batch['extra_msa_mask'][extra],
           'extra_deletion_matrix': _deletions(batch['extra_deletion_value'][extra])}
  feats = transforms.summarize_clusters(transforms.nearest_neighbor_clusters(feats))
  return feats['cluster_profile'], feats['cluster_deletion_mean']


def test_clustering_equals_alphafolds_on_its_own_samples(shared_dir):
  path = str(shared_dir / 'data' / 'features' / QUERY73)
  for ref, ours in _sampled(path):
    for batch in _slices([ref, ours]):
      # 1136 rows: 508 centres and all 628 others as extra rows, so nothing is cropped.
      assert batch['msa_row_mask'].sum() == 508 and batch['extra_msa_row_mask'].sum() == 628
      profile, deletion_mean = _cluster_features_recomputed(batch)
      rows = batch['msa_row_mask'] > 0
      np.testing.assert_allclose(profile, batch['msa_feat'][rows][..., 25:48], atol=1e-6)
      np.testing.assert_allclose(transforms.deletion_value(deletion_mean),
                                 batch['msa_feat'][rows][..., 48], atol=1e-6)


@pytest.mark.parametrize('name', [QUERY73, OPENFOLD])
def test_sampled_and_extra_rows_are_a_sample_of_the_msa_without_replacement(shared_dir, name):
  raw = _raw_of(shared_dir, name)
  raw_msa = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)[raw['msa']]
  available = collections.Counter(row.tobytes() for row in raw_msa.astype(np.int32))
  num_rows = raw_msa.shape[0]
  for ref, ours in _sampled(str(shared_dir / 'data' / 'features' / name)):
    for batch in _slices([ref, ours]):
      rows, extra = batch['msa_row_mask'] > 0, batch['extra_msa_row_mask'] > 0
      assert rows.sum() == 508 and extra.sum() == min(5120, num_rows - 508)
      np.testing.assert_array_equal(batch['true_msa'][0], batch['aatype'])  # query first
      drawn = collections.Counter(row.tobytes() for row in np.concatenate(
          [batch['true_msa'][rows], batch['extra_msa'][extra]]))
      assert not drawn - available  # every drawn row exists, no row drawn twice
      if num_rows <= 508 + 5120:
        assert drawn == available


@pytest.mark.parametrize('name', [QUERY73, OPENFOLD])
def test_masking_statistics_match_alphafolds(shared_dir, name):
  stats = {'ref': [], 'ours': []}
  for ref, ours in _sampled(str(shared_dir / 'data' / 'features' / name)):
    for side, batch in (('ref', ref), ('ours', ours)):
      for b in _slices([batch]):
        valid = b['msa_mask'] > 0
        chosen = (b['bert_mask'] > 0) & valid
        shown = np.argmax(b['msa_feat'][..., :23], axis=-1)
        stats[side].append([chosen.sum() / valid.sum(),
                            np.mean(shown[chosen] == MASK_TOKEN),
                            np.mean(shown[chosen] == b['true_msa'][chosen]),
                            np.mean(shown[~chosen & valid] == b['true_msa'][~chosen & valid])])
  ref, ours = np.mean(stats['ref'], axis=0), np.mean(stats['ours'], axis=0)
  print(f'{name}: masked rate / mask token / unchanged / untouched-equal: '
        f'AlphaFold {np.round(ref, 4)}, jaxfold {np.round(ours, 4)}')
  # ~2e5 MSA entries and ~3e4 chosen ones per side: standard errors ~0.001 (rate) and
  # ~0.003 (replacement mix); seeds are fixed, so the figures are reproducible.
  assert abs(ours[0] - 0.15) < 0.005 and abs(ref[0] - 0.15) < 0.005
  np.testing.assert_allclose(ours, ref, atol=0.01)
  assert ours[3] == 1.0  # entries not chosen are never changed


@pytest.mark.parametrize('name', [QUERY73, OPENFOLD])
def test_mean_cluster_profile_matches_alphafolds(shared_dir, name):
  means = {'ref': [], 'ours': []}
  for ref, ours in _sampled(str(shared_dir / 'data' / 'features' / name)):
    for side, batch in (('ref', ref), ('ours', ours)):
      for b in _slices([batch]):
        rows = b['msa_row_mask'] > 0
        means[side].append(np.concatenate([b['msa_feat'][rows][..., 25:49].mean(axis=(0, 1)),
                                           [b['extra_has_deletion'].sum()
                                            / b['extra_msa_mask'].sum()]]))
  ref, ours = np.mean(means['ref'], axis=0), np.mean(means['ours'], axis=0)
  print(f'{name}: max |mean cluster profile difference| {np.abs(ref - ours).max():.4f}')
  np.testing.assert_allclose(ours, ref, atol=0.01)
