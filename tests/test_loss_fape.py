"""FAPE, symmetric renaming and the torsion-angle loss (jaxfold.loss.fape / symmetry / torsion)
on hand cases: exact values, invariance under rigid motions, clamping, the renaming choice,
pi-periodic chis, and finite values and gradients when every mask is empty."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.common import residue_constants as rc
from jaxfold.common.geometry import Rigid, Vec3
from jaxfold.loss import fape, symmetry, torsion

jax.config.update('jax_default_matmul_precision', 'highest')

EPS = 1e-4  # FAPE's default epsilon


def _tensor_7(rng, shape, spread=5.0):
  q = rng.standard_normal(tuple(shape) + (4,))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  return np.concatenate([q, spread * rng.standard_normal(tuple(shape) + (3,))],
                        axis=-1).astype(np.float32)


def _rigids(rng, n):
  return Rigid.from_tensor_7(_tensor_7(rng, [n]))


def _points(rng, n, spread=5.0):
  return Vec3.from_array((spread * rng.standard_normal((n, 3))).astype(np.float32))


def _fape(pred_frames, target_frames, pred_pos, target_pos, clamp=None, epsilon=EPS):
  ones_f, ones_p = jnp.ones(pred_frames.shape[-1]), jnp.ones(pred_pos.shape[-1])
  return fape.frame_aligned_point_error(pred_frames, target_frames, ones_f, pred_pos, target_pos,
                                        ones_p, length_scale=10.0, l1_clamp_distance=clamp,
                                        epsilon=epsilon)


def test_identical_structures_score_the_epsilon_floor():
  rng = np.random.default_rng(0)
  frames, points = _rigids(rng, 6), _points(rng, 9)
  n = 6 * 9
  floor = np.sqrt(EPS) / 10.0 * n / (n + EPS)  # sqrt(0 + eps) per pair
  value = float(_fape(frames, frames, points, points))
  print(f'\nidentical: FAPE {value:.6e}, epsilon floor {floor:.6e}')
  np.testing.assert_allclose(value, floor, rtol=1e-5)
  assert float(_fape(frames, frames, points, points, epsilon=1e-12)) < 1e-6

  traj = _tensor_7(rng, [1, 5]).repeat(3, axis=0)
  loss, per_layer = fape.backbone_loss(traj, traj[0], np.ones(5, np.float32))
  print(f'identical backbones: loss {float(loss):.6e}, per layer {np.asarray(per_layer)}')
  np.testing.assert_allclose(np.asarray(per_layer), np.sqrt(EPS) / 10.0, rtol=1e-3)


def test_rigid_motions_leave_fape_unchanged():
  rng = np.random.default_rng(1)
  pred_f, target_f = _rigids(rng, 7), _rigids(rng, 7)
  pred_x, target_x = _points(rng, 11), _points(rng, 11)
  before = float(_fape(pred_f, target_f, pred_x, target_x))

  def move(frames, points):
    """The structure under one random global rigid motion."""
    g = _rigids(rng, 1)
    return g @ frames, g.apply(points)

  (pred_f, pred_x), (target_f, target_x) = move(pred_f, pred_x), move(target_f, target_x)
  after = float(_fape(pred_f, target_f, pred_x, target_x))
  print(f'\nrigid motions: FAPE before {before:.7f}, after {after:.7f}')
  assert before > 0.1
  np.testing.assert_allclose(after, before, rtol=1e-5)


def test_hand_value_and_clamping():
  # One identity frame; targets at 0 and x, predictions moved by 3 Å and 30 Å along y.
  frame = Rigid.identity([1])
  target = Vec3.from_array(jnp.asarray([[0., 0., 0.], [1., 0., 0.]]))
  pred = Vec3.from_array(jnp.asarray([[0., 3., 0.], [1., 30., 0.]]))
  unclamped = float(_fape(frame, frame, pred, target))
  clamped = float(_fape(frame, frame, pred, target, clamp=10.0))
  near, far = np.sqrt(9 + EPS), np.sqrt(900 + EPS)
  print(f'\nhand case: unclamped {unclamped:.7f}, clamped {clamped:.7f}')
  np.testing.assert_allclose(unclamped, (near + far) / 10 / (2 + EPS), rtol=1e-6)
  np.testing.assert_allclose(clamped, (near + 10.0) / 10 / (2 + EPS), rtol=1e-6)

  grad = jax.grad(lambda p: _fape(frame, frame, Vec3.from_array(p), target, clamp=10.0))(
      pred.to_array())
  np.testing.assert_array_equal(np.asarray(grad[1]), 0.0)  # beyond the clamp: no gradient
  assert float(jnp.abs(grad[0, 1])) > 0.0


def test_backbone_clamp_mixture_and_layer_mean():
  rng = np.random.default_rng(2)
  target = _tensor_7(rng, [8], spread=20.0)
  traj = _tensor_7(rng, [3, 8], spread=20.0)  # far from the target: many errors above 10 Å
  mask = np.ones(8, np.float32)
  clamped, clamped_layers = fape.backbone_loss(traj, target, mask, 1.0)
  unclamped, _ = fape.backbone_loss(traj, target, mask, 0.0)
  mixed, _ = fape.backbone_loss(traj, target, mask, 0.25)
  print(f'\nbackbone: clamped {float(clamped):.6f}, unclamped {float(unclamped):.6f}, '
        f'0.25-mix {float(mixed):.6f}')
  assert float(unclamped) > float(clamped) + 0.1
  assert float(jnp.max(clamped_layers)) <= 1.0  # errors capped at 10 Å / 10 Å
  np.testing.assert_allclose(float(mixed), 0.25 * float(clamped) + 0.75 * float(unclamped),
                             rtol=1e-6)
  np.testing.assert_allclose(float(clamped), float(jnp.mean(clamped_layers)), rtol=1e-6)


def _residues(rng, aatype):
  """Ground truth of residues `aatype`: random atoms where the type has them, the
  alternative naming by AlphaFold's renaming permutation."""
  aatype = np.asarray(aatype)
  exists = np.asarray(rc.restype_atom14_mask, np.float32)[aatype]
  gt = (3.0 * rng.standard_normal(exists.shape + (3,)) * exists[..., None]).astype(np.float32)
  perm = np.asarray(rc.restype_atom14_renaming_permutation)[aatype]
  return {'atom14_gt_positions': gt,
          'atom14_alt_gt_positions': np.take_along_axis(gt, perm[..., None], axis=1),
          'atom14_gt_exists': exists,
          'atom14_alt_gt_exists': np.take_along_axis(exists, perm, axis=1),
          'atom14_atom_is_ambiguous': np.asarray(rc.restype_atom14_is_ambiguous,
                                                 np.float32)[aatype]}


@pytest.mark.parametrize('naming', ['atom14_gt_positions', 'atom14_alt_gt_positions'])
def test_renaming_follows_the_prediction(naming):
  rng = np.random.default_rng(3)
  aatype = [rc.restype_order[a] for a in 'FDLYEG']
  batch = _residues(rng, aatype)
  pred = batch[naming] + 0.1 * rng.standard_normal((6, 14, 3))
  renamed = symmetry.compute_renamed_ground_truth(batch, pred.astype(np.float32))
  ambiguous = np.asarray([1, 1, 0, 1, 1, 0], np.float32)
  expected = ambiguous if 'alt' in naming else np.zeros(6, np.float32)
  print(f'\nprediction near the {naming} naming: alt_naming_is_better '
        f'{np.asarray(renamed["alt_naming_is_better"])}')
  np.testing.assert_array_equal(np.asarray(renamed['alt_naming_is_better']), expected)
  np.testing.assert_array_equal(np.asarray(renamed['renamed_atom14_gt_positions']),
                                np.where(expected[:, None, None] > 0,
                                         batch['atom14_alt_gt_positions'],
                                         batch['atom14_gt_positions']))
  frames = rng.standard_normal((2, 6, 8, 12)).astype(np.float32)
  np.testing.assert_array_equal(
      np.asarray(symmetry.rename_rigidgroup_frames(renamed['alt_naming_is_better'], *frames)),
      np.where(expected[:, None, None] > 0, frames[1], frames[0]))


def test_chi_loss_hand_cases():
  # ASP (chi2 pi-periodic), LEU (no periodic chi): predictions = truth rotated by pi.
  aatype = np.asarray([rc.restype_order['D'], rc.restype_order['L']])
  theta = np.asarray([[0.3, 1.1, 0., 0.], [-2.0, 0.7, 0., 0.]], np.float32)
  truth = np.stack([np.sin(theta), np.cos(theta)], -1).astype(np.float32)
  chi_mask = np.asarray([[1, 1, 0, 0], [1, 1, 0, 0]], np.float32)
  angles = np.zeros((1, 2, 7, 2), np.float32)
  angles[..., 3:, :] = -truth  # every chi shifted by pi
  unnormalized = 2.0 * angles  # norm 2 where chi, 0 elsewhere

  out = torsion.supervised_chi_loss(angles, unnormalized, aatype, np.ones(2, np.float32),
                                    chi_mask, truth)
  # Squared (sin, cos) error of a pi shift is 4; only ASP chi2 may use the shifted truth.
  expected_chi = (4 + 0 + 4 + 4) / 4
  # |norm - 1| is 1 for the 2 x 4 chi slots (norm 2) and for the 2 x 3 backbone slots
  # (norm sqrt(1e-6) ~ 0): 14 slots of about 1.
  norms = np.sqrt(np.sum(np.square(unnormalized), -1) + 1e-6)
  expected_norm = np.mean(np.abs(norms - 1))
  print('\nchi hand case:', {k: round(float(v), 7) for k, v in out.items()})
  np.testing.assert_allclose(float(out['chi_loss']), expected_chi, rtol=1e-6)
  np.testing.assert_allclose(float(out['angle_norm_loss']), expected_norm, rtol=1e-6)
  np.testing.assert_allclose(float(out['loss']), 0.5 * expected_chi + 0.01 * expected_norm,
                             rtol=1e-6)

  exact = torsion.supervised_chi_loss(np.concatenate([angles[..., :3, :], truth[None]], -2),
                                      unnormalized, aatype, np.ones(2, np.float32), chi_mask,
                                      truth)
  assert float(exact['chi_loss']) < 1e-6


def _empty_example(n=5, layers=2):
  """Predictions and ground truth all zeros (degenerate frames, zero-length vectors),
  every mask empty."""
  z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
  outputs = {'traj': z(layers, n, 7), 'frames': z(layers, n, 8, 12),
             'atom_pos': z(layers, n, 14, 3), 'angles_sin_cos': z(layers, n, 7, 2),
             'unnormalized_angles_sin_cos': z(layers, n, 7, 2)}
  batch = {'backbone_affine_tensor': z(n, 7), 'backbone_affine_mask': z(n),
           'atom14_gt_positions': z(n, 14, 3), 'atom14_alt_gt_positions': z(n, 14, 3),
           'atom14_gt_exists': z(n, 14), 'atom14_alt_gt_exists': z(n, 14),
           'atom14_atom_is_ambiguous': z(n, 14), 'rigidgroups_gt_frames': z(n, 8, 12),
           'rigidgroups_alt_gt_frames': z(n, 8, 12), 'rigidgroups_gt_exists': z(n, 8),
           'use_clamped_fape': np.float32(0.0), 'aatype': np.full(n, 13, np.int32),
           'seq_mask': z(n), 'chi_mask': z(n, 4), 'chi_angles_sin_cos': z(n, 4, 2)}
  return outputs, batch


def _total(outputs, batch):
  sm = {'traj': outputs['traj'], 'final_atom14_positions': outputs['atom_pos'][-1],
        'sidechains': {'frames': outputs['frames'], 'atom_pos': outputs['atom_pos']}}
  terms = fape.fape_loss(sm, batch)
  chi = torsion.supervised_chi_loss(outputs['angles_sin_cos'],
                                    outputs['unnormalized_angles_sin_cos'], batch['aatype'],
                                    batch['seq_mask'], batch['chi_mask'],
                                    batch['chi_angles_sin_cos'])
  return terms['loss'] + chi['loss'], (terms, chi)


_total_and_gradient = jax.jit(jax.value_and_grad(_total, has_aux=True))


@pytest.mark.parametrize('masks', ['empty', 'partial'])
def test_finite_values_and_gradients(masks):
  outputs, batch = _empty_example()
  if masks == 'partial':  # residue 0 real and resolved (but degenerate), the others masked
    for key in ('backbone_affine_mask', 'seq_mask'):
      batch[key][0] = 1.0
    for key in ('atom14_gt_exists', 'atom14_alt_gt_exists', 'rigidgroups_gt_exists',
                'chi_mask'):
      batch[key][0] = 1.0
  (total, (terms, chi)), grads = _total_and_gradient(outputs, batch)
  print(f'\n{masks} masks: total {float(total):.6e}, fape {float(terms["loss"]):.6e}, '
        f'chi {float(chi["loss"]):.6e}')
  for leaf in jax.tree.leaves((total, terms, chi, grads)):
    assert np.all(np.isfinite(np.asarray(leaf)))
  if masks == 'empty':
    assert float(total) == 0.0
    for name, g in grads.items():
      np.testing.assert_array_equal(np.asarray(g), 0.0, err_msg=name)
