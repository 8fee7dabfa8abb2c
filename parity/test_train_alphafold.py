"""Fine-tuning from converted AlphaFold weights: the first step's loss is AlphaFold's loss.

Issue #8: "Fine-tuning from converted AlphaFold weights runs and its first-step loss equals
the loss of AlphaFold's model with those weights on that batch." Perturbed random weights of
AlphaFold's own reduced model_3_ptm (two Evoformer blocks, every layer type, built as
`alphafold_gradients.compare_gradients(reduced=True)` builds them) are written as an AlphaFold
.npz under AlphaFold's keys. The fine-tuning recipe (`configs/train/finetune.py`: its loss and
optimizer) is given that network, one example per step, no dropout and no recycling, and
`loop.initial_params` reads the .npz. On the 2q2k crop (`alphafold_training.training_batch`)
the loss is compared, the total and each AlphaFold head's, with what AlphaFold's
`AlphaFoldIteration` computes with `compute_loss=True` on the same weights and batch, within
1e-5 relative.

Fast tier (~95 s of CPU time, mostly compiling both models): the per-example loss the
train step differentiates (`step.example_loss_fn`), compiled forward only; the .npz against
the config, and a wrong preset's .npz refused. Slow tier (~3 min of CPU time more, compiling
the backward pass): the whole first step, `state.create` and a compiled
`step.make_train_step`, its metrics against AlphaFold's loss, and the parameters moved by
Adam's first update.

As in the gradient parity (see `alphafold_gradients`' docstring), the network has no
aligned-error head (pTM weight 0 on both sides): inside a compiled graph the diagonal pairs of
its target sit on a bin edge and may land on either side, so the term is compared apart, on
given frames, by `test_loss_alphafold_gradients`. AlphaFold does not scale its total by the
length, so neither does the config here.
"""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.convert import alphafold_npz, schema
from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.model import config as model_config
from jaxfold.parity import alphafold_gradients
from jaxfold.parity.agreement import Row, format_table, scalar_row
from jaxfold.parity.alphafold_model import alphafold_config, apply_depths
from jaxfold.parity.alphafold_reference import (apply_reference, config_from_reference,
                                                reference_params)
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import config as config_lib
from jaxfold.train import loop, optimizer, state as state_lib, step as step_lib

PRESET = 'model_3_ptm'
# Templates, and the pTM head: the wrong preset for PRESET's network, either way round.
OTHER_PRESET = 'model_1_ptm'
SIZES = {'crop_size': 16, 'max_msa_clusters': 8, 'max_extra_msa': 16}
FINETUNE = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'train' / 'finetune.py'
SEED = 0
# Each traces the network's init (seconds); the configs are frozen, so hashable.
_parameter_shapes = functools.cache(schema.parameter_shapes)


def _train_config(preset: str) -> config_lib.TrainConfig:
  """The fine-tuning recipe for the reduced `preset` without its aligned-error head: one
  example per step, no dropout or recycling, AlphaFold's total (no aligned-error term, no
  sqrt(length) factor)."""
  network = model_config.replace(
      model_config.reduced(model_config.preset(preset), num_recycle=0),
      {'model.heads.predicted_aligned_error.weight': 0.0})
  finetune = config_lib.load(FINETUNE)
  loss = dataclasses.replace(
      finetune.loss, scale_by_length=False,
      weights=dataclasses.replace(finetune.loss.weights, aligned_error=0.0))
  return dataclasses.replace(
      finetune, preset=preset, model=network, crop=dataclasses.replace(finetune.crop, **SIZES),
      loss=loss, dropout=False, max_num_recycle=0, global_batch_size=1, micro_batch_size=1)


@pytest.fixture(scope='module')
def reference(shared_dir, tmp_path_factory):
  """The training config, the batch, the weights' .npz and AlphaFold's loss with them."""
  config = _train_config(PRESET)
  af_cfg = alphafold_config(PRESET, num_recycle=0)
  af_cfg.model.heads.predicted_aligned_error.weight = 0.0  # AlphaFold builds no such head
  apply_depths(af_cfg, config.model)
  batch = training_batch(shared_dir, PRESET, num_recycle=0, **SIZES)
  af_fn = alphafold_gradients.alphafold_loss_fn(af_cfg.model)
  params = reference_params(af_fn, {'batch': batch}, SEED, from_shapes=True)
  npz = tmp_path_factory.mktemp('weights') / f'params_{PRESET}_reduced.npz'
  alphafold_npz.write_npz(from_haiku(params, root=alphafold_npz.ROOT), npz)
  loss, (heads, _) = apply_reference(af_fn, params, {'batch': batch}, SEED, jit=True)
  return {'config': config, 'af_cfg': af_cfg, 'batch': batch, 'npz': npz,
          'loss': float(loss), 'heads': {k: float(v) for k, v in heads.items()}}


def _loss_rows(ours: dict[str, float], reference: dict) -> list[Row]:
  """jaxfold's total ('loss') and each AlphaFold head's terms against AlphaFold's, 1e-5."""
  tolerance = alphafold_gradients.LOSS_TOLERANCE
  assert sorted(reference['heads']) == sorted(alphafold_gradients.HEAD_TERMS)
  table = [scalar_row(alphafold_gradients.LOSS_ROW, ours['loss'], reference['loss'], tolerance)]
  for head, value in sorted(reference['heads'].items()):
    terms = alphafold_gradients.HEAD_TERMS[head]
    mine = sum(weight * ours[term] for term, weight in terms.items())
    table.append(scalar_row(f'loss/{head}', mine, value, tolerance))
  print('\n' + format_table(table))
  return table


def test_configs_describe_one_network(reference):
  network = reference['config'].model.model
  assert config_from_reference(model_config.AlphaFoldConfig, reference['af_cfg']).model == network
  with np.load(reference['npz']) as archive:
    keys = {name.removesuffix('.npy') for name in archive.files}
  assert keys == set(_parameter_shapes(network))


@pytest.mark.slow  # ~1.5 min (two model compiles); the CI tier checks the weights' schema
def test_loss_of_npz_weights_is_alphafolds(reference, parity):
  """The loss the train step differentiates, forward only, from the .npz's parameters."""
  config = reference['config']
  params = loop.initial_params(config, reference['npz'])
  # num_recycle traced, as the step draws it.
  loss, breakdown = jax.jit(step_lib.example_loss_fn(config))(
      params, reference['batch'], jax.random.key(SEED), jnp.zeros((), jnp.int32))
  assert float(loss) == float(breakdown['loss'])
  parity.record(_loss_rows(jax.tree.map(float, breakdown), reference))


def test_wrong_preset_npz_fails(reference, tmp_path):
  """Another preset's .npz for this network, and this .npz for another preset's network,
  are refused by `initial_params`, naming the unexpected and the missing keys."""
  config = reference['config']
  other = dataclasses.replace(config, preset=OTHER_PRESET,
                              model=model_config.reduced(model_config.preset(OTHER_PRESET)))
  ours = _parameter_shapes(config.model.model)
  theirs = _parameter_shapes(other.model.model)
  extra = sorted(theirs.keys() - ours.keys())
  assert any('template_embedding' in k for k in extra)
  assert any('predicted_aligned_error_head' in k for k in extra)
  path = tmp_path / f'params_{OTHER_PRESET}_reduced.npz'
  alphafold_npz.write_npz(
      alphafold_npz.unflatten({k: np.zeros(s, np.float32) for k, s in theirs.items()}), path)
  for load_config, npz, kind in ((config, path, 'unexpected'),
                                 (other, reference['npz'], 'missing')):
    with pytest.raises(alphafold_npz.SchemaError) as error:
      loop.initial_params(load_config, npz)
    message = str(error.value)
    print(f'\n{message}')
    assert f'{len(extra)} {kind} ({extra[0]}' in message
    assert f'({load_config.preset})' in message


@pytest.mark.slow
def test_first_training_step_loss_is_alphafolds(reference, parity):
  """One compiled train step from the .npz: its metrics are AlphaFold's loss, and the
  parameters moved by Adam's first update, lr * g / (|g| + eps): at most lr each."""
  config = reference['config']
  tx = optimizer.adam(config.optimizer)
  before = state_lib.create(loop.initial_params(config, reference['npz']), tx, config.seed)
  initial = jax.device_get(before.params)
  train_step = jax.jit(step_lib.make_train_step(config, tx))
  after, metrics = train_step(before, jax.tree.map(lambda v: v[None], reference['batch']))
  metrics = jax.tree.map(float, metrics)
  parity.record(_loss_rows(metrics, reference))

  lr = config.optimizer.learning_rate
  assert (metrics['skipped'], int(after.skipped_steps), int(after.step)) == (0, 0, 1)
  assert (metrics['num_recycle'], metrics['learning_rate']) == (0, pytest.approx(lr))
  moves = alphafold_npz.flat_keys(jax.tree.map(
      lambda new, old: float(np.abs(np.asarray(new) - old).max()), after.params, initial))
  moved = [k for k, m in moves.items() if m > 0]
  print(f'{len(moves)} parameters, {len(moved)} moved; largest move {max(moves.values()):.4g} '
        f'(lr {lr:g}); grad norm {metrics["grad_norm"]:.4g}')
  # Adam's first step moves no entry further than lr (float32 rounding of p + Δ aside), and
  # entries whose gradient is well above eps by nearly lr.
  assert 0.9 * lr <= max(moves.values()) <= 1.01 * lr
  # The gradient is clipped from norm ~7e3 to 0.1: entries far below eps move by less than
  # half a float32 step and stay (measured: 224 of 265 leaves moved).
  assert len(moved) >= 0.8 * len(moves)
