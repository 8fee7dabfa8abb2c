"""Structural violations against OpenFold's recorded term and AlphaFold's own functions.

OpenFold: on the recorded small_loss fixture (2q2k chain A, 48 residues), jaxfold's
violation_loss of the last structure-module layer's atom14 positions is OpenFold's 'violation'
term (max|Δ|/|ref| <= 1e-4). AlphaFold: `alphafold.model.folding`'s
find_structural_violations, compute_violation_metrics and structural_violation_loss, called on
the same arrays, agree with every entry of jaxfold's find_violations, violation_metrics and
violation_loss, and with the loss's gradient with respect to the positions, within 1e-5
relative: on the fixture's prediction (many violations), on the ground truth with 0.5 Å noise
(a few) and on the ground truth itself (none; resolved atoms only).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.model import folding as af_folding

from jaxfold.loss import violations
from jaxfold.parity.alphafold_reference import config_from_reference, reference_config
from jaxfold.parity.openfold_loss import load_loss_fixture

OPENFOLD_TOLERANCE = 1e-4
SM_CONFIG = reference_config('model_1_ptm').model.heads.structure_module
AF_BATCH_KEYS = ('aatype', 'residue_index', 'residx_atom14_to_atom37', 'seq_mask')


@pytest.fixture(scope='module')
def fixture(shared_dir):
  return load_loss_fixture(shared_dir / 'fixtures/openfold/small_loss')


def _case(f, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(atom14 positions [N, 14, 3], atom14_atom_exists [N, 14]) of one comparison case."""
  b = f.batch
  if name == 'recorded':
    return f.outputs['structure_module']['sidechains']['atom_pos'][-1], b['atom14_atom_exists']
  noise = 0.5 if name == 'near_native' else 0.0
  rng = np.random.default_rng(0)
  positions = b['atom14_gt_positions'] + noise * rng.standard_normal(
      b['atom14_gt_positions'].shape).astype(np.float32)
  return positions, b['atom14_gt_exists']


def _ours(batch, positions, exists):
  found = violations.find_violations(batch['aatype'], batch['residue_index'], positions, exists,
                                     violations.ViolationConfig())
  metrics = violations.violation_metrics(batch['residue_index'], positions, exists,
                                         batch['seq_mask'], found)
  return {'violations': found, 'metrics': metrics,
          'loss': violations.violation_loss(found, exists)}


def _alphafold(batch, positions, exists):
  batch = {**{k: jnp.asarray(batch[k]) for k in AF_BATCH_KEYS},
           'atom14_atom_exists': jnp.asarray(exists)}
  found = af_folding.find_structural_violations(batch, positions, SM_CONFIG)
  metrics = af_folding.compute_violation_metrics(batch, positions, found)
  ret = {'loss': 0.0}
  af_folding.structural_violation_loss(ret, batch, {'violations': found}, SM_CONFIG)
  # The weight is the total loss's business; ours is the unweighted term.
  loss = ret['loss'] / SM_CONFIG.structural_violation_loss_weight
  return {'violations': found, 'metrics': metrics, 'loss': loss}


def test_config_is_alphafolds():
  assert (config_from_reference(violations.ViolationConfig, SM_CONFIG)
          == violations.ViolationConfig())


def test_openfold_violation_term(fixture):
  positions, exists = _case(fixture, 'recorded')
  ours = _ours(fixture.batch, positions, exists)
  ref = fixture.losses['violation']
  rel = abs(float(ours['loss']) - ref) / abs(ref)
  between = ours['violations']['between_residues']
  print(f'\nOpenFold violation: ours {float(ours["loss"]):.7f}  OpenFold {ref:.7f}  '
        f'|Δ|/|ref| {rel:.2e}\n  c_n {float(between["bonds_c_n_loss_mean"]):.5f}, ca_c_n '
        f'{float(between["angles_ca_c_n_loss_mean"]):.5f}, c_n_ca '
        f'{float(between["angles_c_n_ca_loss_mean"]):.5f}, clashes mean '
        f'{float(between["clashes_mean_loss"]):.5f}; '
        + ', '.join(f'{k[11:]} {float(v):.4f}' for k, v in ours['metrics'].items()))
  assert rel <= OPENFOLD_TOLERANCE


@pytest.mark.parametrize('case', ['recorded', 'near_native', 'ground_truth'])
def test_alphafold_functions_and_gradient(fixture, parity, case):
  positions, exists = _case(fixture, case)
  ours = jax.jit(_ours)(fixture.batch, positions, exists)
  ref = jax.jit(_alphafold)(fixture.batch, positions, exists)
  print(f'\n{case}: loss ours {float(ours["loss"]):.6f} AlphaFold {float(ref["loss"]):.6f}; '
        f'violating residues {int(np.sum(ref["violations"]["total_per_residue_violations_mask"]))}'
        f' of {len(positions)}')
  for row in parity.check(f'violations/{case}', ours, ref):
    print(row.row())

  def grad(fn):
    return jax.jit(jax.grad(lambda xyz: fn(fixture.batch, xyz, exists)['loss']))(positions)

  for row in parity.check(f'violations/{case}/grad', grad(_ours), grad(_alphafold)):
    print(row.row())
