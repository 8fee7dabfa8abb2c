"""Training configs: the stage files hold Suppl. Table 4's values, and --set overrides by path."""

import dataclasses
import pathlib

import pytest

from jaxfold.data.training_set import DataSource
from jaxfold.train import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train'


def test_stages_hold_alphafolds_procedure():
  initial = config_lib.load(CONFIGS / 'initial.py')
  finetune = config_lib.load(CONFIGS / 'finetune.py')
  assert (initial.crop.crop_size, initial.crop.max_msa_clusters, initial.crop.max_extra_msa) == (
      256, 128, 1024)
  assert (finetune.crop.crop_size, finetune.crop.max_msa_clusters,
          finetune.crop.max_extra_msa) == (384, 512, 5120)
  assert initial.loss.weights.violation == 0 and initial.loss.weights.experimentally_resolved == 0
  assert finetune.loss.weights.violation == 1.0
  assert finetune.loss.weights.experimentally_resolved == 0.01
  assert finetune.model.model.heads.predicted_aligned_error.weight > 0
  for stage in (initial, finetune):
    opt = stage.optimizer
    assert (opt.b1, opt.b2, opt.eps, opt.clip_norm, opt.ema_decay) == (0.9, 0.999, 1e-6, 0.1,
                                                                       0.999)
    assert opt.clip_per_example and stage.global_batch_size == 128
  assert (initial.optimizer.learning_rate, initial.optimizer.warmup_steps) == (1e-3, 1000)
  assert (initial.optimizer.decay_steps, initial.optimizer.decay_factor) == (50_000, 0.95)
  assert finetune.optimizer.learning_rate == 5e-4
  tiny = config_lib.load(CONFIGS / 'tiny.py')
  assert tiny.model.model.embeddings_and_evoformer.evoformer_num_block == 2


def test_set_overrides_fields_by_path_with_their_types():
  config = config_lib.load(CONFIGS / 'tiny.py')
  changed = config_lib.override(config, [
      'optimizer.learning_rate=5e-4', 'optimizer.warmup_steps=3', 'dropout=false',
      'validation.data=/tmp/held out', 'validation.max_chains=None', 'validation.keep=2q2k_A',
      'data.0.path=/data/pdb', 'model.model.num_recycle=2', 'optimizer.clip_norm=1',
      'dtype=bfloat16'])
  assert changed.optimizer.learning_rate == 5e-4 and changed.optimizer.warmup_steps == 3
  assert changed.dropout is False and changed.validation.data == '/tmp/held out'
  assert changed.validation.keep == ('2q2k_A',) and changed.data[0].path == '/data/pdb'
  assert changed.model.model.num_recycle == 2 and changed.dtype == 'bfloat16'
  assert isinstance(changed.optimizer.clip_norm, float)
  assert config.optimizer.learning_rate == 1e-3  # frozen: the original is unchanged


@pytest.mark.parametrize('assignment, message', [
    ('optimizer.learning_rat=1', "no field 'learning_rat'"),
    ('optimizer.warmup_steps=ten', 'is not a'),
    ('dtype=float16', 'is not a'),
    ('steps', 'expected key=value'),
    ('data.3.path=x', 'index out of range'),
])
def test_bad_overrides_fail_naming_the_assignment(assignment, message):
  config = config_lib.load(CONFIGS / 'tiny.py')
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.override(config, [assignment])


def test_json_round_trip_rebuilds_the_config():
  config = config_lib.load(CONFIGS / 'finetune.py')
  config = dataclasses.replace(config, data=(DataSource('/a', weight=0.25),
                                             DataSource('/b', weight=0.75, distillation=True)))
  assert config_lib.from_json(config_lib.to_json(config)) == config


def test_bad_config_files_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match='no such config file'):
    config_lib.load(tmp_path / 'missing.py')
  (tmp_path / 'empty.py').write_text('x = 1\n')
  with pytest.raises(config_lib.ConfigError, match='defines no get_config'):
    config_lib.load(tmp_path / 'empty.py')
  (tmp_path / 'broken.py').write_text('def get_config(:\n')
  with pytest.raises(config_lib.ConfigError, match='broken.py: SyntaxError'):
    config_lib.load(tmp_path / 'broken.py')
  (tmp_path / 'batch.py').write_text(
      'from jaxfold.train.config import TrainConfig\n'
      'def get_config():\n  return TrainConfig(global_batch_size=3, micro_batch_size=2)\n')
  with pytest.raises(config_lib.ConfigError, match='not a multiple'):
    config_lib.load(tmp_path / 'batch.py')
