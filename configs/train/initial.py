"""AlphaFold2's initial training (Jumper et al. 2021, Suppl. 1.11 and Table 4).

model_1's network (templates), crops of 256 residues with 128 MSA clusters and 1024 extra
sequences, Adam at 1e-3 after a 1000-step warm-up (x0.95 after 50k steps), per-example
clipping to 0.1, EMA 0.999, global batch 128, violation and experimentally-resolved losses
off. Diff it against finetune.py to see what fine-tuning changes.
"""

from jaxfold.data.processing import TrainingDataConfig
from jaxfold.loss.total import INITIAL_TRAINING
from jaxfold.model import config as model_config
from jaxfold.train.config import (DataSource, OptimizerConfig, TrainConfig,
                                  ValidationConfig)


def get_config() -> TrainConfig:
  return TrainConfig(
      preset='model_1',
      model=model_config.preset('model_1'),
      data=(DataSource(path='data/pdb/chain_features/1.0.0', chain_weights=True),),
      crop=TrainingDataConfig(crop_size=256, max_msa_clusters=128, max_extra_msa=1024),
      loss=INITIAL_TRAINING,
      optimizer=OptimizerConfig(learning_rate=1e-3, warmup_steps=1000, decay_steps=50_000),
      validation=ValidationConfig(every=1000, num_recycle=3),
      global_batch_size=128,
      max_num_recycle=3,
      checkpoint_every=1000,
  )
