"""Rigid-body geometry (jaxfold.common.geometry): group properties, layouts, AlphaFold agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.common.geometry import QuatRigid, Rigid, Rot3, Vec3

jax.config.update('jax_default_matmul_precision', 'highest')


def _unit_quaternions(rng, n):
  q = rng.standard_normal((n, 4))
  return (q / np.linalg.norm(q, axis=-1, keepdims=True)).astype(np.float32)


def _rigids(rng, n):
  return QuatRigid.from_tensor_7(np.concatenate(
      [_unit_quaternions(rng, n), 5 * rng.standard_normal((n, 3))], -1).astype(np.float32)).rigid


def _points(rng, n):
  return Vec3.from_array(rng.standard_normal((n, 3)).astype(np.float32))


def _close(a, b, atol=2e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


def test_quaternion_rotation_is_orthonormal():
  rot = Rot3.from_quaternion(_unit_quaternions(np.random.default_rng(0), 50)).to_array()
  _close(jnp.einsum('nij,nkj->nik', rot, rot), np.broadcast_to(np.eye(3), rot.shape))
  _close(jnp.linalg.det(rot), np.ones(50))


def test_inverse_and_composition():
  rng = np.random.default_rng(1)
  a, b, c, v = _rigids(rng, 20), _rigids(rng, 20), _rigids(rng, 20), _points(rng, 20)
  _close(a.inverse().apply(a.apply(v)).to_array(), v.to_array())
  _close(a.apply_inverse(a.apply(v)).to_array(), v.to_array())
  _close((a @ a.inverse()).to_tensor_4x4(), Rigid.identity((20,)).to_tensor_4x4())
  _close(((a @ b) @ c).to_tensor_4x4(), (a @ (b @ c)).to_tensor_4x4(), atol=1e-4)
  _close((a @ b).apply(v).to_array(), a.apply(b.apply(v)).to_array(), atol=1e-4)
  # Matches 4x4 matrix algebra.
  _close((a @ b).to_tensor_4x4(), a.to_tensor_4x4() @ b.to_tensor_4x4(), atol=1e-4)


def test_layout_round_trips():
  rng = np.random.default_rng(2)
  r = _rigids(rng, 10)
  _close(Rigid.from_tensor_4x4(r.to_tensor_4x4()).to_tensor_flat12(), r.to_tensor_flat12())
  _close(Rigid.from_tensor_flat12(r.to_tensor_flat12()).to_tensor_4x4(), r.to_tensor_4x4())
  # Quaternion round trip: equal up to the sign of the quaternion.
  q = _unit_quaternions(rng, 10)
  back = Rot3.from_quaternion(q).to_quaternion()
  _close(np.abs(np.sum(back * q, axis=-1)), np.ones(10))
  _close(Rigid.from_tensor_7(r.to_tensor_7()).to_tensor_4x4(), r.to_tensor_4x4())


def test_from_3_points():
  rng = np.random.default_rng(3)
  neg_x, origin, xy = _points(rng, 8), _points(rng, 8), _points(rng, 8)
  frame = Rigid.from_3_points(neg_x, origin, xy)
  local_neg_x, local_xy = frame.apply_inverse(neg_x), frame.apply_inverse(xy)
  _close(local_neg_x.y, np.zeros(8))
  _close(local_neg_x.z, np.zeros(8))
  assert np.all(np.asarray(local_neg_x.x) < 0)
  _close(local_xy.z, np.zeros(8))
  assert np.all(np.asarray(local_xy.y) > 0)
  _close(frame.apply_inverse(origin).to_array(), np.zeros((8, 3)))


def test_pre_compose_is_quaternion_product():
  """Alg. 23: the update (b, c, d, t) composes (1, b, c, d)/|.| and t after the frame."""
  rng = np.random.default_rng(4)
  affine = QuatRigid.from_tensor_7(np.concatenate(
      [_unit_quaternions(rng, 6), rng.standard_normal((6, 3))], -1).astype(np.float32))
  update = rng.standard_normal((6, 6)).astype(np.float32)
  step = QuatRigid.create(np.concatenate([np.ones((6, 1), np.float32), update[:, :3]], -1),
                          Vec3.from_array(update[:, 3:]))
  _close(affine.pre_compose(update).rigid.to_tensor_4x4(),
         (affine.rigid @ step.rigid).to_tensor_4x4())
  _close(jnp.linalg.norm(affine.pre_compose(update).quaternion, axis=-1), np.ones(6))


def test_jit_vmap_and_stop_gradient():
  rng = np.random.default_rng(5)
  t7 = np.concatenate([_unit_quaternions(rng, 4), rng.standard_normal((4, 3))], -1)
  t7 = t7.astype(np.float32)
  v = rng.standard_normal((4, 3)).astype(np.float32)
  apply = jax.jit(jax.vmap(lambda t, p: Rigid.from_tensor_7(t).apply(Vec3.from_array(p))
                           .to_array()))
  _close(apply(t7, v), Rigid.from_tensor_7(t7).apply(Vec3.from_array(v)).to_array())

  def loss(t):
    return jnp.sum(QuatRigid.from_tensor_7(t).stop_rot_gradient().rigid.apply(
        Vec3.from_array(v)).to_array())
  grad = jax.grad(loss)(t7)
  _close(grad[:, :4], np.zeros((4, 4)), atol=0)
  _close(grad[:, 4:], np.ones((4, 3)), atol=0)


def test_agrees_with_alphafold():
  quat_affine = pytest.importorskip('alphafold.model.quat_affine')
  r3 = pytest.importorskip('alphafold.model.r3')
  rng = np.random.default_rng(6)
  t7 = np.concatenate([_unit_quaternions(rng, 12), rng.standard_normal((12, 3))], -1)
  t7 = t7.astype(np.float32)
  update = rng.standard_normal((12, 6)).astype(np.float32)
  v = rng.standard_normal((12, 3)).astype(np.float32)

  ref = quat_affine.QuatAffine.from_tensor(jnp.asarray(t7))
  ours = QuatRigid.from_tensor_7(t7)
  np.testing.assert_array_equal(ours.rigid.to_tensor_flat12(),
                                r3.rigids_to_tensor_flat12(r3.rigids_from_quataffine(ref)))
  np.testing.assert_array_equal(ours.pre_compose(update).to_tensor_7(),
                                ref.pre_compose(jnp.asarray(update)).to_tensor())
  pts = [jnp.asarray(v[:, i]) for i in range(3)]
  np.testing.assert_array_equal(ours.rigid.apply(Vec3.from_array(v)).to_array(),
                                jnp.stack(ref.apply_to_point(pts), -1))
  np.testing.assert_array_equal(ours.rigid.apply_inverse(Vec3.from_array(v)).to_array(),
                                jnp.stack(ref.invert_point(pts), -1))

  a, b = r3.rigids_from_quataffine(ref), r3.rigids_from_tensor_flat12(
      _rigids(rng, 12).to_tensor_flat12())
  ours_a, ours_b = Rigid.from_tensor_flat12(r3.rigids_to_tensor_flat12(a)), Rigid.from_tensor_flat12(
      r3.rigids_to_tensor_flat12(b))
  np.testing.assert_array_equal((ours_a @ ours_b).to_tensor_flat12(),
                                r3.rigids_to_tensor_flat12(r3.rigids_mul_rigids(a, b)))
  np.testing.assert_array_equal(ours_a.inverse().to_tensor_flat12(),
                                r3.rigids_to_tensor_flat12(r3.invert_rigids(a)))
  x0, x1, x2 = (Vec3.from_array(rng.standard_normal((12, 3)).astype(np.float32))
                for _ in range(3))
  ref_frame = r3.rigids_from_3_points(*(r3.vecs_from_tensor(p.to_array()) for p in (x0, x1, x2)))
  np.testing.assert_array_equal(Rigid.from_3_points(x0, x1, x2).to_tensor_flat12(),
                                r3.rigids_to_tensor_flat12(ref_frame))
  m = Rigid.from_tensor_4x4(_rigids(rng, 12).to_tensor_4x4())
  np.testing.assert_array_equal(
      m.to_tensor_flat12(),
      r3.rigids_to_tensor_flat12(r3.rigids_from_tensor4x4(m.to_tensor_4x4())))
  # rot -> quaternion: AlphaFold's eigen-decomposition, compared up to sign.
  rot = ours.rigid.rot.to_array()
  ref_q = quat_affine.rot_to_quat(rot, unstack_inputs=True)
  _close(np.abs(np.sum(ours.rigid.rot.to_quaternion() * ref_q, -1)), np.ones(12))
