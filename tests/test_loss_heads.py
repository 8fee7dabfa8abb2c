"""The head losses (jaxfold.loss: distogram, masked MSA, lDDT / pLDDT, experimentally resolved,
predicted aligned error) on hand-made cases: exact values, invariances, filters, NaN safety."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.common import residue_constants
from jaxfold.loss import aligned_error, distogram, experimentally_resolved, lddt, masked_msa, plddt
from jaxfold.model import heads

# Compiled once per shape: eager dispatch op by op is what would make this file slow.
lddt_fn = jax.jit(lddt.lddt, static_argnames=('cutoff', 'per_residue'))
distogram_loss = jax.jit(distogram.distogram_loss, static_argnames='config')
masked_msa_loss = jax.jit(masked_msa.masked_msa_loss, static_argnames='config')
plddt_loss = jax.jit(plddt.plddt_loss, static_argnames='config')
experimentally_resolved_loss = jax.jit(experimentally_resolved.experimentally_resolved_loss,
                                       static_argnames='config')
aligned_error_loss = jax.jit(aligned_error.aligned_error_loss, static_argnames='config')

N_RES = 12
CA = residue_constants.atom_order['CA']
BIG = 1e4  # a logit that makes a one-hot prediction: cross entropy exp(-1e4) = 0


def _head_bins(module, key):
  """The bin edges a head returns with its logits, as the total loss passes them on."""
  pair = jnp.zeros((2, 2, 8))
  return np.asarray(module.apply(module.init(jax.random.key(0), pair), pair)[key])


DISTOGRAM_EDGES = _head_bins(heads.DistogramHead(), 'bin_edges')  # [63] Å
PAE_BREAKS = _head_bins(heads.PredictedAlignedErrorHead(), 'breaks')  # [63] Å


def _chain(rng, n=N_RES):
  """[n, 3] a random walk with 3.8 Å steps, like a Cα trace (Å)."""
  steps = rng.standard_normal((n, 3))
  steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
  return np.cumsum(steps, axis=0).astype(np.float32)


def _atom37(ca):
  """[n, 37, 3] with every atom at its residue's Cα (only Cα matters to lDDT-Cα)."""
  return np.repeat(ca[:, None, :], 37, axis=1)


def _unit_quaternion(rng):
  q = rng.standard_normal(4)
  return q / np.linalg.norm(q)


def _rotation(q):
  """[3, 3] the rotation of unit quaternion q = (w, x, y, z)."""
  w, x, y, z = q
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]],
                  np.float32)


def _affines(rng, n=N_RES):
  """[n, 7] random backbone frames: unit quaternion then translation (Å)."""
  q = rng.standard_normal((n, 4))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  return np.concatenate([q, 5 * rng.standard_normal((n, 3))], -1).astype(np.float32)


def _one_hot_logits(labels, num_classes):
  return BIG * jax.nn.one_hot(labels, num_classes)


# ---------------------------------------------------------------------------------- lDDT


def test_lddt_of_a_structure_with_itself_and_a_rigid_copy_is_one():
  rng = np.random.default_rng(0)
  true = _chain(rng)
  mask = np.ones((N_RES, 1), np.float32)
  moved = true @ _rotation(_unit_quaternion(rng)).T + np.float32([10.0, -3.0, 7.0])
  for points in (true, moved):
    assert float(lddt_fn(points, true, mask)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(lddt_fn(points, true, mask, per_residue=True), 1.0, atol=1e-6)
  print(f'lDDT self 1, rigid copy {float(lddt_fn(moved, true, mask)):.7f}')


def test_lddt_falls_as_the_structure_is_distorted():
  rng = np.random.default_rng(1)
  true = _chain(rng, 30)
  mask = np.ones((30, 1), np.float32)
  noise = rng.standard_normal(true.shape).astype(np.float32)
  scores = [float(lddt_fn(true + s * noise, true, mask)) for s in (0.0, 0.3, 1.0, 3.0)]
  print('lDDT at noise 0, 0.3, 1, 3 Å:', [f'{s:.4f}' for s in scores])
  assert scores[0] == pytest.approx(1.0)
  assert all(a > b for a, b in zip(scores, scores[1:]))
  assert 0.0 <= scores[-1] < 0.5


def test_lddt_hand_case():
  # Three points on a line, 3 Å apart; the last moves 1.5 Å further out.
  # Pairs (0,1): |Δ| 0 -> 1; (0,2): |Δ| 1.5 -> scores under 2 and 4 -> 0.5; (1,2): 0.5.
  # (0, 2) is 6 Å apart: with cutoff 5 it is not scored.
  true = np.float32([[0, 0, 0], [3, 0, 0], [6, 0, 0]])
  pred = np.float32([[0, 0, 0], [3, 0, 0], [7.5, 0, 0]])
  mask = np.ones((3, 1), np.float32)
  assert float(lddt_fn(pred, true, mask)) == pytest.approx((1 + 0.5 + 0.5) / 3, abs=1e-6)
  np.testing.assert_allclose(lddt_fn(pred, true, mask, per_residue=True),
                             [0.75, 0.75, 0.5], atol=1e-6)
  assert float(lddt_fn(pred, true, mask, cutoff=5.0)) == pytest.approx(0.75, abs=1e-6)
  # Masking point 2 leaves the exact pair (0, 1) only; point 2 itself has no pair: score 1.
  mask2 = np.float32([[1], [1], [0]])
  np.testing.assert_allclose(lddt_fn(pred, true, mask2, per_residue=True), [1, 1, 1], atol=1e-6)


def test_lddt_batch_axes_and_lddt_ca():
  rng = np.random.default_rng(2)
  true = np.stack([_chain(rng) for _ in range(3)])
  pred = true + rng.standard_normal(true.shape).astype(np.float32)
  mask = np.ones(true.shape[:-1] + (1,), np.float32)
  batched = lddt_fn(pred, true, mask)
  assert batched.shape == (3,)
  np.testing.assert_allclose(batched, [lddt_fn(p, t, m) for p, t, m in zip(pred, true, mask)],
                             rtol=1e-6)
  atom_mask = np.zeros((N_RES, 37), np.float32)
  atom_mask[:, CA] = 1.0
  np.testing.assert_allclose(lddt.lddt_ca(_atom37(pred[0]), _atom37(true[0]), atom_mask,
                                          per_residue=True),
                             lddt_fn(pred[0], true[0], mask[0], per_residue=True), rtol=1e-6)
  with pytest.raises(ValueError, match=r'\[..., N, 1\]'):
    lddt_fn(pred[0], true[0], mask[0, :, 0])


# ------------------------------------------------------------------ perfect predictions


def test_perfect_predictions_give_zero_cross_entropy():
  rng = np.random.default_rng(3)
  ca = _chain(rng)
  ones = np.ones(N_RES, np.float32)
  losses = {}

  dist = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
  bins = np.sum(dist[..., None] > DISTOGRAM_EDGES, axis=-1)
  losses['distogram'] = distogram_loss(_one_hot_logits(bins, 64), DISTOGRAM_EDGES, ca, ones)

  true_msa = rng.integers(0, 23, (5, N_RES))
  losses['masked_msa'] = masked_msa_loss(_one_hot_logits(true_msa, 23), true_msa,
                                         np.ones((5, N_RES), np.float32))

  all_atom_mask = (rng.random((N_RES, 37)) < 0.5).astype(np.float32)
  all_atom_mask[:, CA] = 1.0
  # Identical structures: lDDT-Cα 1 for every residue, the last of the 50 bins.
  losses['plddt'] = plddt_loss(_one_hot_logits(np.full(N_RES, 49), 50), _atom37(ca),
                               _atom37(ca), all_atom_mask, np.float32(2.0))

  losses['experimentally_resolved'] = experimentally_resolved_loss(
      BIG * (2 * all_atom_mask - 1), np.ones((N_RES, 37), np.float32), all_atom_mask,
      np.float32(2.0))

  affines = _affines(rng)
  losses['aligned_error'] = aligned_error_loss(
      _one_hot_logits(np.zeros((N_RES, N_RES), int), 64), PAE_BREAKS, affines, affines, ones,
      np.float32(2.0))

  print('perfect predictions:', {k: float(v) for k, v in losses.items()})
  for name, value in losses.items():
    assert abs(float(value)) < 1e-5, name


def test_uniform_logits_give_log_num_classes():
  rng = np.random.default_rng(4)
  ca = _chain(rng)
  mask = (rng.random(N_RES) < 0.7).astype(np.float32)
  value = distogram_loss(jnp.zeros((N_RES, N_RES, 64)), DISTOGRAM_EDGES, ca, mask)
  assert float(value) == pytest.approx(math.log(64), rel=1e-5)
  value = masked_msa_loss(jnp.zeros((4, N_RES, 23)), rng.integers(0, 23, (4, N_RES)),
                          (rng.random((4, N_RES)) < 0.15).astype(np.float32))
  assert float(value) == pytest.approx(math.log(23), rel=1e-5)


def test_distogram_hand_bins():
  # Edges 2.3125 + 0.3125 k: 5 Å lies above 9 edges (bin 9), 0 Å below all (bin 0). Point 2
  # is masked out: only the pairs (0, 1), (1, 0) at 5 Å and the self pairs at 0 Å are scored.
  points = np.float32([[0, 0, 0], [5, 0, 0], [5, 30, 0]])
  mask = np.float32([1, 1, 0])
  logits = np.zeros((3, 3, 64), np.float32)
  logits[0, 1, 9] = logits[1, 0, 9] = BIG
  logits[0, 0, 0] = logits[1, 1, 0] = BIG
  assert float(distogram_loss(logits, DISTOGRAM_EDGES, points, mask)) < 1e-5
  logits[0, 1, 9] = 0.0  # now uniform for one of 4 scored pairs
  assert float(distogram_loss(logits, DISTOGRAM_EDGES, points, mask)) == pytest.approx(
      math.log(64) / 4, rel=1e-4)


def test_aligned_error_hand_case_and_invariance():
  rng = np.random.default_rng(5)
  true = _affines(rng, 4)
  pred = true.copy()
  # Shifting residue 1's frame by 2 Å moves residue 1 by 2 Å in every other residue's frame,
  # and every other residue by 2 Å in residue 1's own frame.
  pred[1, 4:] += np.float32([2.0, 0.0, 0.0])
  expected = np.zeros((4, 4), np.float32)
  expected[1, :] = expected[:, 1] = 4.0
  expected[1, 1] = 0.0
  np.testing.assert_allclose(aligned_error.aligned_error_squared(pred, true), expected, atol=1e-4)
  # A global rigid motion of the prediction changes no aligned error.
  r = _unit_quaternion(rng)
  a, b, c, d = r
  left = np.array([[a, -b, -c, -d], [b, a, -d, c], [c, d, a, -b], [d, -c, b, a]])  # r * q
  moved = np.concatenate([true[:, :4] @ left.T,
                          true[:, 4:] @ _rotation(r).T + np.float32([3, -1, 8])], -1)
  np.testing.assert_allclose(aligned_error.aligned_error_squared(moved, true), 0.0, atol=1e-4)


# ------------------------------------------------------------------------ resolution filter


def _filtered_losses(resolution, filter_by_resolution=True):
  rng = np.random.default_rng(6)
  ca = _chain(rng)
  all_atom_mask = np.ones((N_RES, 37), np.float32)
  logits37 = rng.standard_normal((N_RES, 37)).astype(np.float32)
  res = np.float32(resolution)
  affines = _affines(rng)
  return {
      'plddt': plddt_loss(
          rng.standard_normal((N_RES, 50)).astype(np.float32), _atom37(ca + 1.0),
          _atom37(ca), all_atom_mask, res,
          plddt.PlddtLossConfig(filter_by_resolution=filter_by_resolution)),
      'experimentally_resolved': experimentally_resolved_loss(
          logits37, all_atom_mask, all_atom_mask, res,
          experimentally_resolved.ExperimentallyResolvedLossConfig(
              filter_by_resolution=filter_by_resolution)),
      'aligned_error': aligned_error_loss(
          rng.standard_normal((N_RES, N_RES, 64)).astype(np.float32),
          PAE_BREAKS, affines, _affines(rng),
          np.ones(N_RES, np.float32), res,
          aligned_error.AlignedErrorLossConfig(filter_by_resolution=filter_by_resolution)),
  }


@pytest.mark.parametrize('resolution', [0.0, 0.09, 3.01, 10.0])
def test_resolution_outside_the_range_gives_zero(resolution):
  for name, value in _filtered_losses(resolution).items():
    assert float(value) == 0.0, name
  for name, value in _filtered_losses(resolution, filter_by_resolution=False).items():
    assert float(value) > 0.0, name


@pytest.mark.parametrize('resolution', [0.1, 1.5, 3.0])
def test_resolution_inside_the_range_keeps_the_loss(resolution):
  inside = _filtered_losses(resolution)
  unfiltered = _filtered_losses(resolution, filter_by_resolution=False)
  for name, value in inside.items():
    assert float(value) > 0.0 and float(value) == float(unfiltered[name]), name


# ---------------------------------------------------------------------------- NaN safety


def _all_losses(logits, positions, affines, mask_value):
  """Every head loss as a function of (logits, predicted positions/frames), masks set to mask_value,
  the ground truth made degenerate: all points coincide (zero-length vectors)."""
  n = N_RES
  zeros3 = jnp.zeros((n, 3))
  mask = jnp.full((n,), mask_value)
  atom_mask = jnp.full((n, 37), mask_value)
  identity = jnp.concatenate([jnp.ones((n, 1)), jnp.zeros((n, 6))], -1)
  res = jnp.float32(2.0)
  return {
      'distogram': distogram_loss(logits['distogram'], DISTOGRAM_EDGES, positions[:, CA], mask),
      'masked_msa': masked_msa_loss(logits['masked_msa'], jnp.zeros((3, n), jnp.int32),
                                    jnp.full((3, n), mask_value)),
      'plddt': plddt_loss(logits['plddt'], positions, jnp.zeros((n, 37, 3)), atom_mask, res),
      'experimentally_resolved': experimentally_resolved_loss(
          logits['experimentally_resolved'], atom_mask, atom_mask, res),
      'aligned_error': aligned_error_loss(logits['aligned_error'], PAE_BREAKS, affines,
                                          identity, mask, res),
      'lddt': lddt_fn(positions[:, CA], zeros3, mask[:, None]),
  }


@pytest.mark.parametrize('mask_value', [0.0, 1.0])
def test_empty_masks_and_coincident_points_give_finite_values_and_gradients(mask_value):
  rng = np.random.default_rng(7)
  n = N_RES
  logits = {'distogram': (n, n, 64), 'masked_msa': (3, n, 23), 'plddt': (n, 50),
            'experimentally_resolved': (n, 37), 'aligned_error': (n, n, 64)}
  logits = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in logits.items()}
  positions = jnp.zeros((n, 37, 3))  # coincident predicted points as well
  affines = jnp.concatenate([jnp.ones((n, 1)), jnp.zeros((n, 6))], -1)

  @jax.jit
  def values_and_gradients(args):
    values = _all_losses(*args, mask_value)
    grads = {name: jax.grad(lambda a, name=name: _all_losses(*a, mask_value)[name])(args)
             for name in values}
    return values, grads

  values, grads = values_and_gradients((logits, positions, affines))
  print(f'mask {mask_value}: values', {k: f'{float(v):.4f}' for k, v in values.items()})
  for name, value in values.items():
    assert bool(jnp.isfinite(value)), name
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads[name])), name
    if mask_value == 0.0 and name != 'lddt':
      assert float(value) == 0.0, name  # nothing scored


def test_gradient_reaches_the_logits_only():
  """The targets are constants: the pLDDT and aligned error losses do not move the structure."""
  rng = np.random.default_rng(8)
  ca = _chain(rng)
  all_atom_mask = np.ones((N_RES, 37), np.float32)
  logits = jnp.asarray(rng.standard_normal((N_RES, 50)), jnp.float32)
  g_logits, g_pos = jax.grad(
      lambda l, p: plddt_loss(l, p, _atom37(ca), all_atom_mask, np.float32(1.0)),
      argnums=(0, 1))(logits, jnp.asarray(_atom37(ca + 0.7 * rng.standard_normal(ca.shape))))
  assert float(jnp.max(jnp.abs(g_logits))) > 0.0
  assert float(jnp.max(jnp.abs(g_pos))) == 0.0
  pae_logits = jnp.asarray(rng.standard_normal((N_RES, N_RES, 64)), jnp.float32)
  true_affines = _affines(rng)
  g_logits, g_aff = jax.grad(
      lambda l, a: aligned_error_loss(
          l, PAE_BREAKS, a, true_affines,
          np.ones(N_RES, np.float32), np.float32(1.0)),
      argnums=(0, 1))(pae_logits, jnp.asarray(_affines(rng)))
  assert float(jnp.max(jnp.abs(g_logits))) > 0.0
  assert float(jnp.max(jnp.abs(g_aff))) == 0.0
