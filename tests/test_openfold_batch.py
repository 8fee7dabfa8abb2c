"""OpenFold's processed batch read into jaxfold's layout (jaxfold.convert.openfold_batch), and
the model reading OpenFold's precomputed template torsion angles in place of its own."""

import jax
import numpy as np
import pytest

from jaxfold.common.all_atom import atom37_to_torsion_angles
from jaxfold.convert import openfold_batch
from jaxfold.model.alphafold import model_features
from jaxfold.model.config import preset
from jaxfold.model.template_embedding import template_torsion_angles

SMALL_INPUTS = 'fixtures/openfold/small/inputs.npz'


@pytest.fixture(scope='module')
def inputs(shared_dir):
  with np.load(shared_dir / SMALL_INPUTS) as data:
    return {k: data[k] for k in data.files}


def test_every_feature_is_moved_renamed_and_int32(inputs):
  batch = openfold_batch.from_openfold(inputs)
  assert set(batch) == (set(inputs) - {'template_all_atom_mask'}) | {'template_all_atom_masks'}
  for key, value in inputs.items():
    ours = batch[openfold_batch.RENAMED.get(key, key)]
    for r in range(2):
      np.testing.assert_array_equal(ours[r], value[..., r])
    assert ours.dtype == (np.int32 if value.dtype.kind == 'i' else value.dtype), key
  assert batch['template_all_atom_positions'].shape == (2, 2, 73, 37, 3)


def test_model_features_keep_the_torsions_and_check_shapes(inputs):
  config = preset('model_1_ptm').model
  batch = model_features(openfold_batch.from_openfold(inputs), config)
  assert set(openfold_batch.TEMPLATE_TORSION_FEATURES) <= set(batch)
  assert 'bert_mask' not in batch and 'template_sum_probs' not in batch
  del batch['msa_mask']
  with pytest.raises(ValueError, match='^b.npz: missing features for this preset: msa_mask$'):
    model_features(batch, config, 'b.npz')


def test_an_alphafold_layout_batch_is_not_taken_for_openfolds(inputs):
  batch = openfold_batch.from_openfold(inputs)
  with pytest.raises(ValueError, match=r"^x.npz: feature 'msa_feat' of shape \(2, 16, 73, 49\) "
                                       r'does not end in the recycling axis \(size 73'):
    openfold_batch.from_openfold({k: batch[k] for k in ('aatype', 'msa_feat')}, 'x.npz')
  with pytest.raises(ValueError, match="^x.npz: expected OpenFold's processed features"):
    openfold_batch.from_openfold({'msa': batch['msa_feat']}, 'x.npz')


def test_precomputed_torsions_are_read_and_otherwise_computed(inputs):
  batch = {k: v[0] for k, v in openfold_batch.from_openfold(inputs).items()}
  templates = {k: v for k, v in batch.items() if k.startswith('template_')}
  read = template_torsion_angles(templates)
  for name in ('torsion_angles_sin_cos', 'alt_torsion_angles_sin_cos', 'torsion_angles_mask'):
    assert read[name] is templates[f'template_{name}']
  atoms_only = {k: templates[k] for k in ('template_aatype', 'template_all_atom_positions',
                                          'template_all_atom_masks')}
  computed = jax.jit(template_torsion_angles)(atoms_only)
  expected = jax.jit(atom37_to_torsion_angles)(*atoms_only.values())
  for name, value in computed.items():
    np.testing.assert_array_equal(value, expected[name])
  # Where the angle is defined, OpenFold's features and jaxfold's angles agree.
  defined = read['torsion_angles_mask'][..., None]
  np.testing.assert_allclose(computed['torsion_angles_sin_cos'] * defined,
                             read['torsion_angles_sin_cos'] * defined, atol=1e-5)
  np.testing.assert_array_equal(computed['torsion_angles_mask'], read['torsion_angles_mask'])
