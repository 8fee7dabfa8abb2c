"""Validation on held-out chains (jaxfold.train.validation), on the 2q2k chains of ../shared/data.

The mini training set of tests/test_data_pipeline.py (2q2k_A and 2q2k_B, 70 residues each)
serves as the held-out split; a reduced model_3_ptm (one block per stack, every width kept,
small MSA sizes) with random weights predicts it. The whole evaluation compiles once for
the module (both chains have one shape) and is run twice.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold import cli
from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.loss import total
from jaxfold.model import config
from jaxfold.model.alphafold import AlphaFold
from jaxfold.train import validation

CONFIG = config.replace(
    config.reduced(config.preset('model_3_ptm'), num_block=1, extra_msa_num_block=1,
                   structure_num_layer=1),
    {'data.eval.max_msa_clusters': 16, 'data.common.max_extra_msa': 16})
NUM_RECYCLE = 1
LOSS = total.FINE_TUNING  # every term on, the aligned-error one included
CA = rc.atom_order['CA']


@pytest.fixture(scope='module')
def built(tmp_path_factory, shared_dir):
  """`jaxfold data build` of the shared alignment folders: 2q2k_A and 2q2k_B."""
  data, output = shared_dir / 'data', tmp_path_factory.mktemp('training_set')
  assert cli.main(['--quiet', 'data', 'build', '--alignments', str(data / 'alignments'),
                   '--mmcif-dir', str(data / 'mmcif'), '--output', str(output)]) == 0
  return output / 'chain_features' / '1.0.0'


@pytest.fixture(scope='module')
def chains(built):
  return validation.load_validation_set(built, 'train', CONFIG, num_recycle=NUM_RECYCLE)


@pytest.fixture(scope='module')
def params(chains):
  """Random weights from the parameter shapes (nothing compiled): LayerNorm scales and gate
  biases around one, the rest around zero, so that no layer is zero."""
  probe = {k: v[:1] for k, v in chains[0].features.items()}
  shapes = jax.eval_shape(lambda b: AlphaFold(CONFIG.model).init(jax.random.key(0), b),
                          probe)['params']
  rng = np.random.default_rng(0)

  def leaf(path, shape):
    centre = 1.0 if path[-1].key in ('scale', 'gating_b') else 0.0
    scale = 1.0 / np.sqrt(np.prod(shape.shape[:-1])) if len(shape.shape) >= 2 else 0.1
    return jnp.asarray(centre + scale * rng.standard_normal(shape.shape), shape.dtype)
  return jax.tree_util.tree_map_with_path(leaf, shapes)


class _Traces(logging.Handler):
  """Counts the traces of the jitted chain evaluation that `jax.log_compiles` reports."""

  def __init__(self):
    super().__init__(logging.WARNING)
    self.count = 0

  def emit(self, record):
    self.count += record.getMessage().startswith('Finished tracing evaluate_chain ')


@pytest.fixture(scope='module')
def runs(params, chains):
  """Two validations with the same parameters, and the traces each one caused."""
  traces, logger = _Traces(), logging.getLogger('jax')
  # `jaxfold data build --quiet` (the `built` fixture) leaves the root logger at ERROR.
  level = logger.level
  logger.setLevel(logging.WARNING)
  logger.addHandler(traces)
  results, counts = [], []
  try:
    with jax.log_compiles():
      for _ in range(2):
        before = traces.count
        results.append(validation.evaluate(params, CONFIG.model, chains, LOSS,
                                           num_recycle=NUM_RECYCLE))
        counts.append(traces.count - before)
  finally:
    logger.removeHandler(traces)
    logger.setLevel(level)
  return results, counts


def test_held_out_chains_are_whole_and_processed_the_same_every_time(built, chains):
  assert [c.name for c in chains] == ['2q2k_B', '2q2k_A']
  slices = NUM_RECYCLE + 1
  for chain in chains:
    assert chain.features['aatype'].shape == (slices, 70)  # every residue, no crop
    assert chain.features['msa_feat'].shape == (slices, 16, 70, 49)
    assert chain.labels['all_atom_positions'].shape == (70, 37, 3)  # the last slice only
    assert set(chain.labels).isdisjoint(chain.features)
    np.testing.assert_array_equal(chain.labels['bert_mask'],
                                  chain.loss_batch()['bert_mask'])
    assert chain.loss_batch()['msa_feat'].shape == (16, 70, 49)
    np.testing.assert_array_equal(chain.truth.atom_mask, chain.labels['all_atom_mask'])
    np.testing.assert_array_equal(chain.truth.residue_index, np.arange(1, 71))
  assert chains[1].truth.atom_mask[:, CA].sum() == 45
  # Equal chains of equal length still get their own MSA masks.
  assert not np.array_equal(chains[0].labels['bert_mask'], chains[1].labels['bert_mask'])
  again = validation.load_validation_set(built, 'train', CONFIG, num_recycle=NUM_RECYCLE,
                                         max_chains=1)
  assert [c.name for c in again] == ['2q2k_B']
  for key, value in chains[0].features.items():
    np.testing.assert_array_equal(again[0].features[key], value, err_msg=key)
  for key, value in chains[0].labels.items():
    np.testing.assert_array_equal(again[0].labels[key], value, err_msg=key)


def test_chains_longer_than_max_length_are_skipped_with_a_warning(built, caplog):
  with caplog.at_level(logging.WARNING, logger=validation.logger.name):
    assert validation.load_validation_set(built, 'train', CONFIG, num_recycle=NUM_RECYCLE,
                                          max_length=69) == []
  assert sorted(r.getMessage() for r in caplog.records) == [
      f'validation: skipping chain {name} of train: 70 residues > max_length 69'
      for name in ('2q2k_A', '2q2k_B')]


def test_evaluation_is_deterministic_and_compiles_once(runs):
  (first, second), traces = runs
  assert traces == [1, 0]  # one shape for both chains; the second validation reuses it
  assert first.per_chain == second.per_chain and first.mean == second.mean
  for name, predicted in first.predicted.items():
    np.testing.assert_array_equal(predicted.atom_positions,
                                  second.predicted[name].atom_positions)


def test_scores_are_in_range_and_the_means_are_over_chains(runs, chains):
  result = runs[0][0]
  assert list(result.per_chain) == [c.name for c in chains]
  for scores in result.per_chain.values():
    assert all(np.isfinite(v) for v in scores.values()), scores
    assert 0 <= scores['lddt_ca'] <= 1 and 0 <= scores['gdt_ha'] <= scores['gdt_ts'] <= 1
    assert scores['rmsd_ca'] > 0 and scores['drmsd_ca'] > 0
    # Every scalar of the loss breakdown, the pTM model's aligned-error term included.
    assert {'loss', 'unscaled_loss', 'fape', 'supervised_chi', 'distogram', 'masked_msa',
            'plddt', 'experimentally_resolved', 'violation', 'aligned_error',
            'violations_per_residue'} <= set(scores)
    assert scores['loss'] > 0
  for key, value in result.mean.items():
    assert value == pytest.approx(np.mean([s[key] for s in result.per_chain.values()])), key
  for chain in chains:
    predicted = result.predicted[chain.name]
    assert predicted.atom_positions.shape == (70, 37, 3)
    assert np.all((predicted.b_factors >= 0) & (predicted.b_factors <= 100))
    np.testing.assert_array_equal(predicted.aatype, chain.truth.aatype)
    assert result.truth[chain.name] is chain.truth


def test_the_truth_scores_perfectly_against_itself_even_moved(chains):
  labels = chains[1].labels
  truth = labels['all_atom_positions']
  angle = 0.7
  rotation = np.array([[np.cos(angle), -np.sin(angle), 0.], [np.sin(angle), np.cos(angle), 0.],
                       [0., 0., 1.]], np.float32)
  moved = truth @ rotation.T + np.float32([10., -5., 3.])
  for positions in (truth, moved):
    scores = jax.device_get(validation.structure_scores(positions, labels))
    assert set(scores) == set(validation.STRUCTURE_METRICS)
    assert scores['lddt_ca'] == pytest.approx(1.0, abs=1e-6)
    assert scores['gdt_ts'] == scores['gdt_ha'] == pytest.approx(1.0, abs=1e-6)
    assert scores['rmsd_ca'] < 1e-3 and scores['drmsd_ca'] < 1e-3


def test_evaluate_refuses_chains_processed_for_another_recycling_count(params, chains):
  with pytest.raises(ValueError, match='2q2k_B was processed for num_recycle 1'):
    validation.evaluate(params, CONFIG.model, chains, LOSS, num_recycle=2)


def test_kept_chains_are_written_as_pdb_by_step_beside_their_truth(runs, tmp_path):
  result = runs[0][0]
  written = validation.write_predictions(result, tmp_path, 0, ['2q2k_A'])
  folder = tmp_path / 'predictions' / '2q2k_A'
  assert written == [folder / 'truth.pdb', folder / 'step_00000000.pdb']
  # Later validations add their step; the truth is written once.
  assert validation.write_predictions(result, tmp_path, 1500, ['2q2k_A']) == [
      folder / 'step_00001500.pdb']
  assert sorted(p.name for p in tmp_path.rglob('*')) == [
      '2q2k_A', 'predictions', 'step_00000000.pdb', 'step_00001500.pdb', 'truth.pdb']

  predicted = protein.from_pdb_string((folder / 'step_00001500.pdb').read_text())
  expected = result.predicted['2q2k_A']
  present = expected.atom_mask > 0
  np.testing.assert_allclose(predicted.atom_positions[present], expected.atom_positions[present],
                             atol=1e-3)
  np.testing.assert_allclose(predicted.b_factors[:, CA], expected.b_factors[:, CA], atol=6e-3)
  truth = protein.from_pdb_string((folder / 'truth.pdb').read_text())
  expected = result.truth['2q2k_A']
  resolved = expected.atom_mask.any(axis=1)
  np.testing.assert_array_equal(truth.residue_index, expected.residue_index[resolved])
  np.testing.assert_array_equal(truth.atom_mask, expected.atom_mask[resolved])
  np.testing.assert_allclose(truth.atom_positions, expected.atom_positions[resolved], atol=1e-3)

  with pytest.raises(JaxfoldError, match=r"\['1abc_A'\] to keep are not in the validation set"):
    validation.write_predictions(result, tmp_path, 0, ['1abc_A'])
