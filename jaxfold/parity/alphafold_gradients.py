"""The gradient of AlphaFold's total training loss, leaf by leaf, against AlphaFold's own.

`compare_gradients` differentiates both models end to end on the real training example of
`alphafold_training.training_batch` (2q2k chain A, one recycling iteration), with the same
perturbed random weights and no dropout:
- jaxfold: `jax.grad` of `loss.total.alphafold_loss` (fine-tuning weights, not scaled by
  length, as AlphaFold's own total is not) of jaxfold's `AlphaFold` module's outputs;
- AlphaFold: `jax.grad` of the total loss its Haiku model returns with `compute_loss=True`:
  the weighted sum of every head's `.loss` (structure module: FAPE, torsions, violations).
One row per parameter: max|Δ| / max|ref| of its gradient, within 1e-4.

AlphaFold's own float32 spread. Rounding noise grows through a backward pass, most where a
leaf's gradient is the small remainder of large cancelling terms: leaves the loss does not
depend on at all (a bias added to every attention logit of a row, as the IPA
`attention_2d/bias` and the `feat_2d_norm/offset` of row attention with pair bias: softmax
ignores it), or scarcely (query and key weights of saturated attention). To tell such noise
from an error, AlphaFold's gradient is computed a second time by the same code on the same
weights and example, as AlphaFold trains: each Evoformer block rematerialised in the
backward pass (its `use_remat`, which also keeps the full-size model within 24 GiB), and
batched over two copies of the example: other kernels, other rounding. A leaf passes within 1e-4, or within ENVELOPE_FACTOR times AlphaFold's disagreement with
itself on that leaf; each row's tolerance shows which applied, `summary` counts both. The
losses are judged the same way at 1e-5.

The aligned-error (pTM) term apart. Its target bins the error of the predicted frames, and
the diagonal pairs (i, i) have error 0, on the first bin edge (0 Å). Inside one large
compiled graph the two copies of t_i in t_i - t_i may come from differently rounded
computations, and the pair moves to the next bin. Measured at 16 residues: AlphaFold
against its own batched self differs by 3.3e-3 in that loss (one pair in 256), while the
nearest off-diagonal pair lies 7e-4 Å from an edge and jaxfold's and AlphaFold's frames
differ by 3e-5 Å; computed on its own from given frames, every diagonal error is exactly 0
in both codes. The flipped pair changes the gradient everywhere upstream, so the whole-model
comparison runs without the pTM head (AlphaFold builds none when its weight is 0), and
`aligned_error_rows` compares the term and its gradient (head weights, pair
representation) on the model's own pair representation and frames held as inputs.

AlphaFold's training path with `num_iter_recycling` 0 runs no recycling loop: one
`AlphaFoldIteration` on zero recycled inputs (held constant) and the batch's slice 0. The
packaged reference (`alphafold-colabfold`) rewrote `AlphaFold.__call__` for inference, and
it fails with `compute_loss=True` (it stores 'prev' into the (outputs, loss) tuple), so
`alphafold_loss_fn` reproduces that path: the unchanged `AlphaFoldIteration` under a root
module named 'alphafold', as DeepMind's `AlphaFold.__call__` builds it.
Needs the test extra (haiku, alphafold-colabfold); jaxfold imports it only when called.
"""

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.loss import total
from jaxfold.loss.aligned_error import aligned_error_loss
from jaxfold.model import config as model_config
from jaxfold.model.alphafold import AlphaFold, model_features
from jaxfold.model.heads import PredictedAlignedErrorHead
from jaxfold.parity.agreement import (ALPHAFOLD_MODULE_TOLERANCE, Comparison, Row, agreement,
                                      rows, scalar_row)
from jaxfold.parity.alphafold_model import alphafold_config, apply_depths
from jaxfold.parity.alphafold_reference import config_from_reference, reference_params
from jaxfold.parity.alphafold_training import training_batch

LOSS_TOLERANCE = ALPHAFOLD_MODULE_TOLERANCE
GRADIENT_TOLERANCE = 1e-4
# Two float32 computations of one gradient differ by independent rounding: jaxfold against
# AlphaFold may land several times further apart than AlphaFold against itself (measured up
# to 3.3x on leaves whose gradient is rounding noise); an error in a layer's backward pass
# moves its leaves by far more than 10x that spread.
ENVELOPE_FACTOR = 10.0
# AlphaFold's total has no sqrt(length) factor; the aligned-error term is compared apart.
LOSS_CONFIG = dataclasses.replace(
    total.FINE_TUNING, scale_by_length=False,
    weights=dataclasses.replace(total.FINE_TUNING.weights, aligned_error=0.0))
# Each AlphaFold head's loss -> the jaxfold breakdown terms it sums, with their weights in it.
HEAD_TERMS = {
    'structure_module': {'fape': 1.0, 'supervised_chi': 1.0, 'violation': 1.0},
    'distogram': {'distogram': 1.0},
    'masked_msa': {'masked_msa': 1.0},
    'predicted_lddt': {'plddt': 1.0},
    'experimentally_resolved': {'experimentally_resolved': 1.0},
}
LOSS_ROW = 'loss/total'
LOGITS = ('distogram', 'masked_msa', 'predicted_lddt', 'experimentally_resolved')
GRADIENT_PREFIX = 'grad'


# ---------------------------------------------------------------------------------------------
# The two differentiated losses.
# ---------------------------------------------------------------------------------------------

def _prediction(outputs: Mapping[str, Any]) -> dict[str, Any]:
  """The outputs the losses read, measured beside the gradients (and the pair
  representation and frames the aligned-error comparison is fed)."""
  sm = outputs['structure_module']
  heads = {f'{name}_logits': outputs[name]['logits'] for name in LOGITS if name in outputs}
  return {'final_affines': sm['final_affines'], 'final_atom_positions': sm['final_atom_positions'],
          'pair': outputs['representations']['pair'], **heads}


def alphafold_loss_fn(af_config) -> Callable[[Mapping[str, Any]], tuple[Any, tuple]]:
  """fn(batch) -> (total loss, ({head: its loss}, prediction)) of AlphaFold, one iteration.

  batch: the features and labels of one recycling iteration with the ensemble axis [1, ...].
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  from alphafold.model import modules as af  # pylint: disable=import-outside-toplevel

  class OneIteration(hk.Module):
    """DeepMind's `AlphaFold.__call__` in training with no recycling iteration."""

    def __init__(self):
      super().__init__(name='alphafold')

    def __call__(self, batch):
      num_res = batch['aatype'].shape[1]
      evo = af_config.embeddings_and_evoformer
      prev = jax.tree.map(jax.lax.stop_gradient, {
          'prev_pos': jax.numpy.zeros((num_res, 37, 3)),
          'prev_msa_first_row': jax.numpy.zeros((num_res, evo.msa_channel)),
          'prev_pair': jax.numpy.zeros((num_res, num_res, evo.pair_channel))})
      iteration = af.AlphaFoldIteration(af_config, af_config.global_config)
      ret, loss = iteration(ensembled_batch=batch, non_ensembled_batch=prev, is_training=True,
                            compute_loss=True)
      heads = {name: ret[name]['loss'] for name in HEAD_TERMS if name in ret}
      return loss, (heads, _prediction(ret))

  return lambda batch: OneIteration()(batch)


def _batched_twice(fn: Callable[[Any, Any], tuple[Any, tuple]]
                   ) -> Callable[[Any, Any], tuple[Any, tuple]]:
  """fn(params, batch) vmapped over two copies of the batch, averaged: the same value and
  gradient in exact arithmetic, computed by other (batched) kernels."""
  def twice(params, batch):
    copies = jax.tree.map(lambda v: jax.numpy.stack([v, v]), batch)
    loss, aux = jax.vmap(lambda b: fn(params, b))(copies)
    return loss.mean(), jax.tree.map(lambda v: v.mean(0), aux)
  return twice


def _jaxfold_loss_fn(config: model_config.ModelConfig
                     ) -> Callable[[Any, Mapping[str, Any], Mapping[str, Any]], tuple[Any, tuple]]:
  """fn(params, features, labels) -> (total loss, (breakdown, prediction)) of jaxfold's model,
  no recycling. features: the model's inputs with the recycling axis [1, ...]; labels: that
  slice's batch."""
  model = AlphaFold(config)

  def fn(params, features, labels):
    outputs = model.apply({'params': params}, features, num_recycle=0, deterministic=True,
                          return_representations=True)
    loss, breakdown = total.alphafold_loss(outputs, labels, LOSS_CONFIG)
    return loss, (breakdown, _prediction(outputs))
  return fn


# ---------------------------------------------------------------------------------------------
# The comparison.
# ---------------------------------------------------------------------------------------------

def _tolerance(base: float, spread: float) -> float:
  """The tolerance of one row: `base`, or AlphaFold's own spread widened, whichever is larger."""
  return max(base, ENVELOPE_FACTOR * spread)


def loss_rows(ours: Any, ours_breakdown: Mapping[str, Any], reference: Any,
              reference_heads: Mapping[str, Any], again: Any,
              again_heads: Mapping[str, Any]) -> list[Row]:
  """The total and each AlphaFold head's loss against jaxfold's terms.

  again, again_heads: AlphaFold's second (rematerialised, batched) computation of the same
    losses.
  """
  def row(name, mine, value, value_again):
    spread = scalar_row(name, value_again, value, None).relative
    return scalar_row(name, mine, value, _tolerance(LOSS_TOLERANCE, spread))

  table = [row(LOSS_ROW, ours, reference, again)]
  for head, value in sorted(reference_heads.items()):
    mine = sum(weight * ours_breakdown[term] for term, weight in HEAD_TERMS[head].items())
    table.append(row(f'loss/{head}', mine, value, again_heads[head]))
  return table


def gradient_rows(ours: Any, reference: Any, again: Any) -> list[Row]:
  """One row per parameter: jaxfold's gradient against AlphaFold's, judged within 1e-4 or
  within ENVELOPE_FACTOR times the distance of AlphaFold's second computation (`again`)."""
  spread = {a.name: a.relative for a in agreement(GRADIENT_PREFIX, again, reference)}
  return [Row(r.name, r.max_abs_diff, r.max_abs_ref,
              _tolerance(GRADIENT_TOLERANCE, spread[r.name]))
          for r in rows(GRADIENT_PREFIX, ours, reference, None)]


def gradients(table: list[Row]) -> list[Row]:
  """The whole-model gradient rows of a table (one per parameter)."""
  return [r for r in table if r.name.startswith(f'{GRADIENT_PREFIX}/')]


def worst(table: list[Row], count: int = 10) -> list[Row]:
  """The `count` gradient rows furthest from the reference, relative, worst first."""
  return sorted(gradients(table), key=lambda r: r.relative, reverse=True)[:count]


def summary(comparison: Comparison) -> str:
  """One line: the losses, how many leaves met 1e-4, how many AlphaFold's own spread."""
  loss = next(r for r in comparison.rows if r.name == LOSS_ROW)
  leaves = gradients(comparison.rows)
  strict = sum(r.relative <= GRADIENT_TOLERANCE for r in leaves)
  envelope = sum(r.passed for r in leaves) - strict
  top = worst(comparison.rows, 1)[0]
  return (f'{comparison.preset}, {comparison.num_residues} residues: loss ours '
          f'{loss.values[0]:.7g} reference {loss.values[1]:.7g} (rel {loss.relative:.2e}); '
          f'{len(leaves)} gradient leaves: {strict} within {GRADIENT_TOLERANCE:g}, {envelope} '
          f'more within {ENVELOPE_FACTOR:g}x AlphaFold\'s own spread, '
          f'{len(leaves) - strict - envelope} beyond; worst {top.name} '
          f'max|Δ|/max|ref| {top.relative:.2e} (tolerance {top.tolerance:.2e})')


def compare_gradients(shared, preset: str = 'model_1_ptm', *, reduced: bool = False,
                      crop_size: int = 64, max_msa_clusters: int = 32, max_extra_msa: int = 128,
                      seed: int = 0, progress: Callable[[str], None] = lambda _: None
                      ) -> Comparison:
  """The total loss and its gradient for every parameter, jaxfold against AlphaFold.

  Args:
    shared: the shared data folder (holds `data/` of `alphafold_training`).
    preset: one of jaxfold.model.config.PRESETS.
    reduced: the preset with `model_config.reduced`'s stack depths (every layer type kept),
      the reference given the same depths.
    crop_size, max_msa_clusters, max_extra_msa: the training example's sizes.
    seed: the perturbed random weights' seed.
    progress: called with a line before each stage.

  Returns:
    A Comparison: rows 'loss/total' and 'loss/<head>' (1e-5 relative, or AlphaFold's own
    spread), 'prediction/...' (measured), 'grad/<module path>/<name>' for every parameter
    (1e-4 relative, or AlphaFold's own spread), then `aligned_error_rows`.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel

  seconds: dict[str, float] = {}
  clock = time.perf_counter()
  af_cfg = alphafold_config(preset, num_recycle=0)
  af_cfg.model.heads.predicted_aligned_error.weight = 0.0  # AlphaFold builds no such head then
  if reduced:
    apply_depths(af_cfg, model_config.reduced(model_config.preset(preset)))
  cfg = config_from_reference(model_config.AlphaFoldConfig, af_cfg).model
  progress(f'batch: {preset} training example, crop {crop_size}')
  batch = training_batch(shared, preset, crop_size=crop_size, max_msa_clusters=max_msa_clusters,
                         max_extra_msa=max_extra_msa, num_recycle=0)
  labels = {k: v[0] for k, v in batch.items()}
  af_fn = alphafold_loss_fn(af_cfg.model)
  progress('weights: perturbed random')
  params = reference_params(af_fn, {'batch': batch}, seed, from_shapes=True)
  seconds['inputs'] = time.perf_counter() - clock

  apply = hk.transform(af_fn).apply
  reference_fn = lambda p, b: apply(p, jax.random.key(seed), b)  # no dropout: no key used
  remat_cfg = copy.deepcopy(af_cfg.model)
  remat_cfg.global_config.use_remat = True
  apply_remat = hk.transform(alphafold_loss_fn(remat_cfg)).apply
  again_fn = _batched_twice(lambda p, b: apply_remat(p, jax.random.key(seed), b))

  def differentiate(stage: str, fn, *args):
    progress(stage)
    clock = time.perf_counter()
    value = jax.tree.map(np.asarray, jax.jit(jax.value_and_grad(fn, has_aux=True))(*args))
    seconds[stage.split(':')[0]] = time.perf_counter() - clock
    return value

  with jax.default_matmul_precision('highest'):
    (ref_loss, (ref_heads, ref_pred)), ref_grad = differentiate(
        'reference: AlphaFold loss and gradient', reference_fn, params, batch)
    (again_loss, (again_heads, _)), again_grad = differentiate(
        'reference again: AlphaFold rematerialised, vmapped over two copies', again_fn, params,
        batch)
    (loss, (breakdown, pred)), grad = differentiate(
        'jaxfold: loss and gradient', _jaxfold_loss_fn(cfg), from_haiku(params, root='alphafold'),
        model_features(batch, cfg), labels)

  table = loss_rows(loss, breakdown, ref_loss, ref_heads, again_loss, again_heads)
  table += rows('prediction', pred, ref_pred, None)
  table += gradient_rows(grad, from_haiku(ref_grad, root='alphafold'),
                         from_haiku(again_grad, root='alphafold'))
  progress('aligned error: head and loss on the reference\'s pair representation and frames')
  table += aligned_error_rows(ref_pred['pair'], ref_pred['final_affines'], labels, seed)
  name = f'{preset} (reduced)' if reduced else preset
  return Comparison('AlphaFold (live), gradient of the total loss', name, 0,
                    labels['aatype'].shape[0], table, seconds)


def aligned_error_rows(pair: Any, final_affines: Any, labels: Mapping[str, Any],
                       seed: int = 0) -> list[Row]:
  """The aligned-error (pTM head) term and its gradient, jaxfold's head and loss against
  AlphaFold's `PredictedAlignedErrorHead` and its `.loss`, on one pair representation and
  one set of predicted frames (held as inputs: see the module docstring), perturbed random
  head weights. Gradients with respect to the head's weights and to the pair
  representation (what flows back into the trunk), within 1e-4 relative.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  from alphafold.model import modules as af  # pylint: disable=import-outside-toplevel

  ptm = model_config.preset('model_1_ptm').model
  af_cfg = alphafold_config('model_1_ptm', num_recycle=0).model
  batch = {k: labels[k] for k in ('backbone_affine_tensor', 'backbone_affine_mask',
                                  'resolution')}

  def reference(pair, final_affines, batch):
    head = af.PredictedAlignedErrorHead(af_cfg.heads.predicted_aligned_error,
                                        af_cfg.global_config)
    value = {'predicted_aligned_error': head({'pair': pair}, batch, is_training=True),
             'structure_module': {'final_affines': final_affines}}
    return head.loss(value, batch)['loss']

  inputs = {'pair': pair, 'final_affines': final_affines, 'batch': batch}
  params = reference_params(reference, inputs, seed, from_shapes=True)
  apply = hk.transform(reference).apply
  head = PredictedAlignedErrorHead(ptm.heads.predicted_aligned_error)

  def ours(tree, pair):
    out = head.apply({'params': tree}, pair)
    return aligned_error_loss(out['logits'], out['breaks'], final_affines,
                              batch['backbone_affine_tensor'], batch['backbone_affine_mask'],
                              batch['resolution'], LOSS_CONFIG.aligned_error)

  with jax.default_matmul_precision('highest'):
    ref_loss, (ref_params_grad, ref_pair_grad) = jax.jit(jax.value_and_grad(
        lambda p, x: apply(p, None, x, final_affines, batch), argnums=(0, 1)))(params, pair)
    loss, (params_grad, pair_grad) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(
        {'logits': params['predicted_aligned_error_head/logits']}, pair)
  name = 'aligned_error'
  return ([scalar_row(f'{name}/loss', loss, ref_loss, LOSS_TOLERANCE)]
          + rows(f'{name}/{GRADIENT_PREFIX}', {'pair': pair_grad, **params_grad},
                 {'pair': ref_pair_grad,
                  'logits': ref_params_grad['predicted_aligned_error_head/logits']},
                 GRADIENT_TOLERANCE))
