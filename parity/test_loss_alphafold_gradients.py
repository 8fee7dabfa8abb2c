"""The gradient of the total training loss, leaf by leaf, against AlphaFold's through its model.

`jaxfold.parity.alphafold_gradients` on the real 2q2k training example, one recycling
iteration, no dropout, the same perturbed random weights in both. Every parameter's gradient
within 1e-4 relative (max|Δ| / max|ref|), or, on leaves whose gradient is rounding noise,
within 10x AlphaFold's own float32 spread (its gradient computed again, rematerialised and
batched); the aligned-error term on the model's pair representation and frames (see the
module's docstring).

The fast tier runs the aligned-error comparison on its own; the slow tier the whole model,
reduced (two Evoformer blocks, 16 residues, ~4 min) and full-size model_1_ptm at 64
residues (~9 min on 2 cores).
"""

import numpy as np
import pytest

from jaxfold.parity import alphafold_gradients
from jaxfold.parity.agreement import format_table
from jaxfold.parity.alphafold_training import training_batch


def _report(result) -> str:
  leaves = alphafold_gradients.gradients(result.rows)
  others = [r for r in result.rows if r not in leaves]
  return (f'\n{alphafold_gradients.summary(result)} (seconds: {result.seconds})\n'
          f'{format_table(others)}\nworst leaves:\n'
          f'{format_table(alphafold_gradients.worst(result.rows, 20))}')


def _check(parity, result, num_leaves: int) -> None:
  print(_report(result))
  gradients = alphafold_gradients.gradients(result.rows)
  assert len(gradients) == num_leaves
  # Most leaves meet 1e-4 outright (measured: 89% reduced, 86% full size); the spread only
  # admits the noise-dominated rest.
  strict = [r for r in gradients if r.relative <= alphafold_gradients.GRADIENT_TOLERANCE]
  assert len(strict) >= 0.8 * num_leaves, alphafold_gradients.summary(result)
  parity.record(result.rows)


def test_aligned_error_term_and_gradient(parity, shared_dir):
  batch = training_batch(shared_dir, 'model_1_ptm', crop_size=48)
  labels = {k: v[0] for k, v in batch.items()}
  rng = np.random.default_rng(0)
  num_res = labels['aatype'].shape[0]
  pair = rng.standard_normal((num_res, num_res, 128)).astype(np.float32)
  # Predicted frames: the true ones, moved a few Å, so the errors fill many bins.
  frames = labels['backbone_affine_tensor'].copy()
  frames[:, :4] += 0.3 * rng.standard_normal((num_res, 4)).astype(np.float32)
  frames[:, 4:] += 3.0 * rng.standard_normal((num_res, 3)).astype(np.float32)
  table = alphafold_gradients.aligned_error_rows(pair, frames, labels)
  print('\n' + format_table(table))
  assert [r.name for r in table] == ['aligned_error/loss', 'aligned_error/grad/logits/bias',
                                     'aligned_error/grad/logits/weights',
                                     'aligned_error/grad/pair']
  parity.record(table)


@pytest.mark.slow
def test_reduced_model_gradients(parity, shared_dir):
  result = alphafold_gradients.compare_gradients(
      shared_dir, 'model_3_ptm', reduced=True, crop_size=16, max_msa_clusters=8,
      max_extra_msa=16)
  _check(parity, result, 265)


@pytest.mark.slow
def test_full_size_model_1_ptm_gradients(parity, shared_dir):
  result = alphafold_gradients.compare_gradients(shared_dir, 'model_1_ptm')
  _check(parity, result, 336)
