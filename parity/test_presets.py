"""The ten monomer presets equal AlphaFold's `model_config(name)` field for field."""

import dataclasses

import pytest
from alphafold.model import config as af_config

from jaxfold.model import config
from jaxfold.parity.alphafold_reference import config_from_reference


@pytest.mark.parametrize('name', config.PRESETS)
def test_preset_equals_alphafolds(name):
  # config_from_reference reads exactly the fields jaxfold's dataclasses declare.
  assert config.preset(name) == config_from_reference(config.AlphaFoldConfig,
                                                      af_config.model_config(name))


def test_presets_are_deepminds_ten_monomer_models():
  assert set(config.PRESETS) == set(af_config.MODEL_PRESETS['monomer']
                                     + af_config.MODEL_PRESETS['monomer_ptm'])


def test_reduced_preset_keeps_every_width():
  full = config.preset('model_1_ptm')
  small = config.reduced(full, num_recycle=1)
  evo = small.model.embeddings_and_evoformer
  assert (evo.evoformer_num_block, evo.extra_msa_stack_num_block,
          evo.template.template_pair_stack.num_block,
          small.model.heads.structure_module.num_layer) == (2, 1, 1, 2)
  assert small.model.num_recycle == small.data.common.num_recycle == 1
  # Undo the depth changes and nothing else differs.
  restored = config.replace(small, {
      'model.embeddings_and_evoformer.evoformer_num_block': 48,
      'model.embeddings_and_evoformer.extra_msa_stack_num_block': 4,
      'model.embeddings_and_evoformer.template.template_pair_stack.num_block': 2,
      'model.heads.structure_module.num_layer': 8,
      'model.num_recycle': 3, 'data.common.num_recycle': 3})
  assert restored == full


def test_replace_rejects_unknown_fields_and_configs_are_frozen():
  with pytest.raises(AttributeError, match='num_recycles'):
    config.replace(config.preset('model_3'), {'model.num_recycles': 1})
  with pytest.raises(ValueError, match='model_6'):
    config.preset('model_6')
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.preset('model_3').model.num_recycle = 1  # type: ignore[misc]
