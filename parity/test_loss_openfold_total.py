"""Every loss term and the total against OpenFold's AlphaFoldLoss (shared/fixtures/openfold/small_loss).

OpenFold's terms (losses.json) were computed on its training-mode batch of 2q2k chain A and
its model's outputs. jaxfold computes them from the same outputs (converted to its forms by
jaxfold.parity.openfold_loss) and from its own forward pass of the same batch with the same
weights; each within max|Δ| / |ref| <= 1e-4 (issue #7). The table is printed.
"""

import dataclasses

from jaxfold.loss import total
from jaxfold.parity import openfold_loss
from jaxfold.parity.agreement import format_table

SMALL_LOSS = 'fixtures/openfold/small_loss'


def test_openfolds_loss_config_is_initial_training_with_the_aligned_error_head(shared_dir):
  fixture = openfold_loss.load_loss_fixture(shared_dir / SMALL_LOSS)
  assert openfold_loss.loss_config_from_openfold(fixture.loss_config) == dataclasses.replace(
      total.INITIAL_TRAINING, weights=total.LossWeights(aligned_error=0.1))


def test_every_term_and_the_total_equal_openfolds(shared_dir, parity):
  result = openfold_loss.compare_losses(shared_dir / SMALL_LOSS)
  print(f'\n{result.reference}: seconds {result.seconds}\n{format_table(result.rows)}')
  names = {row.name for row in result.rows}
  for source in ('recorded outputs', 'jaxfold forward'):
    for term in ('fape', 'supervised_chi', 'distogram', 'masked_msa', 'plddt_loss',
                 'experimentally_resolved', 'violation', 'tm', 'unscaled_loss', 'loss'):
      assert f'losses ({source})/{term}' in names
  parity.record(result.rows)
