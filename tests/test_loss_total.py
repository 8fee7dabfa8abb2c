"""The total loss (jaxfold.loss.total): weights, scaling, breakdown, and NaN safety."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.loss import total
from jaxfold.parity import openfold_loss

SMALL_LOSS = 'fixtures/openfold/small_loss'
# One compilation each, shared by every call with the fixture's shapes.
fine_tuning_loss = jax.jit(lambda o, b: total.alphafold_loss(o, b, total.FINE_TUNING))
fine_tuning_loss_and_gradient = jax.jit(jax.value_and_grad(
    lambda o, b: total.alphafold_loss(o, b, total.FINE_TUNING)[0]))


@pytest.fixture(scope='module')
def example(shared_dir):
  fixture = openfold_loss.load_loss_fixture(shared_dir / SMALL_LOSS)
  return fixture.outputs, fixture.batch


def test_the_stages_weights_are_table_4s():
  initial, fine = total.INITIAL_TRAINING.weights, total.FINE_TUNING.weights
  assert (initial.fape, initial.supervised_chi, initial.distogram, initial.masked_msa,
          initial.plddt) == (1.0, 1.0, 0.3, 2.0, 0.01)
  assert (initial.experimentally_resolved, initial.violation, initial.aligned_error) == (0, 0, 0)
  assert (fine.experimentally_resolved, fine.violation, fine.aligned_error) == (0.01, 1.0, 0.1)
  assert dataclasses.replace(fine, experimentally_resolved=0.0, violation=0.0,
                             aligned_error=0.0) == initial
  assert total.FINE_TUNING.fape.sidechain.weight_frac == 0.5
  assert (total.FINE_TUNING.torsion.chi_weight, total.FINE_TUNING.torsion.angle_norm_weight) == (
      0.5, 0.01)


def test_total_is_the_weighted_sum_scaled_by_the_square_root_of_the_length(example):
  outputs, batch = example
  loss, terms = fine_tuning_loss(outputs, batch)
  weights = dataclasses.asdict(total.FINE_TUNING.weights)
  unscaled = sum(weight * float(terms[name]) for name, weight in weights.items())
  np.testing.assert_allclose(float(terms['unscaled_loss']), unscaled, rtol=1e-6)
  num_res = batch['aatype'].shape[0]
  np.testing.assert_allclose(float(loss), unscaled * np.sqrt(min(int(batch['seq_length']), num_res)),
                             rtol=1e-6)
  # A longer chain cropped to these residues scales by the crop; a shorter one by itself.
  longer = {**batch, 'seq_length': np.int32(500)}
  shorter = {**batch, 'seq_length': np.int32(16)}
  for changed, scale in ((longer, np.sqrt(num_res)), (shorter, 4.0)):
    np.testing.assert_allclose(float(fine_tuning_loss(outputs, changed)[0]), unscaled * scale,
                               rtol=1e-5)
  unscaled_config = dataclasses.replace(total.FINE_TUNING, scale_by_length=False)
  unscaled_loss = jax.jit(lambda o, b: total.alphafold_loss(o, b, unscaled_config)[0])
  np.testing.assert_allclose(float(unscaled_loss(outputs, batch)), unscaled, rtol=1e-5)
  for metric in ('violations_between_residue_bond', 'violations_per_residue'):
    assert 0 <= float(terms[metric]) <= 1


def test_an_aligned_error_weight_without_the_head_is_an_error(example):
  outputs, batch = example
  without = {k: v for k, v in outputs.items() if k != 'predicted_aligned_error'}
  _, terms = jax.jit(lambda o, b: total.alphafold_loss(o, b, total.INITIAL_TRAINING))(without,
                                                                                       batch)
  assert 'aligned_error' not in terms
  with pytest.raises(ValueError, match="no 'predicted_aligned_error' head"):
    fine_tuning_loss(without, batch)


def test_empty_masks_and_zero_coordinates_give_finite_values_and_gradients(example):
  outputs, batch = example
  empty = {k: (np.zeros_like(v) if k.endswith(('mask', 'exists')) or 'positions' in k
               or k in ('pseudo_beta', 'rigidgroups_gt_frames', 'rigidgroups_alt_gt_frames',
                        'backbone_affine_tensor', 'chi_angles_sin_cos')
               else v) for k, v in batch.items()}
  zero_outputs = jax.tree.map(jnp.zeros_like, outputs)
  for out, labels in ((outputs, empty), (zero_outputs, empty), (zero_outputs, batch)):
    value, grads = fine_tuning_loss_and_gradient(out, labels)
    assert np.isfinite(float(value))
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
      assert np.all(np.isfinite(leaf)), jax.tree_util.keystr(path)
