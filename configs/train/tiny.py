"""A reduced AlphaFold2 that trains on two CPU cores in minutes (tests, examples, studies).

model_3_ptm's layer types (no templates, every head including pTM) with two Evoformer
blocks, one extra-MSA block, two structure-module layers and narrow channels; crops of 32
residues, 16 MSA clusters, 32 extra sequences; global batch 2 as two accumulated examples;
0 or 1 recycling iteration per step. The optimizer, clipping, EMA and losses are the
fine-tuning procedure's, with a shorter warm-up.
"""

from jaxfold.data.processing import TrainingDataConfig
from jaxfold.loss.total import FINE_TUNING
from jaxfold.model import config as model_config
from jaxfold.train.config import (DataSource, OptimizerConfig, TrainConfig,
                                  ValidationConfig)

_EVO = 'model.embeddings_and_evoformer.'
_NARROW = {
    _EVO + 'msa_channel': 32,
    _EVO + 'pair_channel': 16,
    _EVO + 'seq_channel': 32,
    _EVO + 'extra_msa_channel': 16,
    _EVO + 'evoformer.outer_product_mean.num_outer_channel': 8,
    _EVO + 'evoformer.triangle_multiplication_outgoing.num_intermediate_channel': 16,
    _EVO + 'evoformer.triangle_multiplication_incoming.num_intermediate_channel': 16,
    'model.heads.structure_module.num_channel': 32,
    'model.heads.structure_module.sidechain.num_channel': 16,
    'model.heads.predicted_lddt.num_channels': 16,
    'model.heads.predicted_aligned_error.num_channels': 16,
}


def get_config() -> TrainConfig:
  network = model_config.reduced(model_config.preset('model_3_ptm'), num_block=2,
                                 extra_msa_num_block=1, structure_num_layer=2, num_recycle=1)
  return TrainConfig(
      preset='model_3_ptm',
      model=model_config.replace(network, _NARROW),
      data=(DataSource(path='data/pdb/chain_features/1.0.0'),),
      crop=TrainingDataConfig(crop_size=32, max_msa_clusters=16, max_extra_msa=32),
      loss=FINE_TUNING,
      optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=10, decay_steps=50_000),
      validation=ValidationConfig(every=10, num_recycle=1, max_length=128),
      global_batch_size=2,
      max_num_recycle=1,
      use_remat=False,
      checkpoint_every=10,
  )
