"""AlphaFold2's fine-tuning (Jumper et al. 2021, Suppl. 1.11 and Table 4).

Larger crops (384 residues, 512 MSA clusters, 5120 extra sequences), the learning rate
halved to 5e-4 without warm-up, and the structural-violation (1.0), experimentally-resolved
(0.01) and pTM aligned-error (0.1) losses switched on: model_1_ptm's network and heads.
Start it from trained weights: `jaxfold train ... --init params_model_1_ptm.npz` (or an
OpenFold .pt, or a jaxfold checkpoint).

Memory: the step's attention runs in blocks whose logits the backward pass recomputes, 64
rows at a time (`jaxfold plan --train` settings 'lean'; the same gradients as whole logits).
With AlphaFold's whole logits the 5,120 extra sequences' row attention alone needs 22 GiB
per layer; XLA's plan of the step on one device is 200.6 GiB that way and 35.1 GiB this way
(`jaxfold plan --train --preset model_1_ptm --crop 384`, CPU compiler, float32).
"""

from jaxfold.data.processing import TrainingDataConfig
from jaxfold.loss.total import FINE_TUNING
from jaxfold.model import config as model_config
from jaxfold.train.config import (DataSource, OptimizerConfig, TrainConfig,
                                  ValidationConfig)


def get_config() -> TrainConfig:
  return TrainConfig(
      preset='model_1_ptm',
      model=model_config.preset('model_1_ptm'),
      data=(DataSource(path='data/pdb/chain_features/1.0.0', chain_weights=True),),
      crop=TrainingDataConfig(crop_size=384, max_msa_clusters=512, max_extra_msa=5120),
      loss=FINE_TUNING,
      optimizer=OptimizerConfig(learning_rate=5e-4, warmup_steps=0, decay_steps=50_000),
      validation=ValidationConfig(every=1000, num_recycle=3),
      global_batch_size=128,
      max_num_recycle=3,
      attention='chunked',
      subbatch_size=64,
      checkpoint_every=1000,
  )
