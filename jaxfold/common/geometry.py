"""Vectors, rotations and rigid transforms of 3-D space as small JAX pytrees.

Jumper et al. (2021) Suppl. 1.8 'Representations of frames': a residue's frame is a rigid
transform T = (R, t) mapping local coordinates to global ones, x_global = R x_local + t.
Suppl. Alg. 21 'rigidFrom3Points' builds one from three atoms, Suppl. Alg. 23 'Backbone
update' changes one by a quaternion update, Suppl. Alg. 25 'makeRotX' rotates about x.

Every object stores one array per component (`Vec3.x`, `Rot3.xy`, ...), each of the batch
shape [...]: the arithmetic is written out element by element, as AlphaFold's `r3` and
`quat_affine` do, so that no 3x3 product lands on a low-precision matrix unit and results
round exactly as AlphaFold's do. The classes are frozen dataclasses registered as pytrees:
they pass through jit, vmap, scan and `jax.tree.map` (e.g. `rigid.map(lambda a: a[:, None])`).

Array layouts shared with AlphaFold's features and checkpoints:
  tensor_4x4  [..., 4, 4]  homogeneous matrix [[R, t], [0, 1]]
  flat12      [..., 12]    R row by row (xx, xy, ..., zz), then t
  tensor_7    [..., 7]     unit quaternion (real part first), then t
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_ROT_FIELDS = ('xx', 'xy', 'xz', 'yx', 'yy', 'yz', 'zx', 'zy', 'zz')


def _quat_to_rot_table() -> np.ndarray:
  """[4, 4, 9]: entry (i, j) holds the coefficients of q_i q_j (i <= j) in the nine
  rotation-matrix entries (row by row) of the unit quaternion q = (w, x, y, z)."""
  table = np.zeros((4, 4, 3, 3), np.float32)
  table[0, 0] = np.eye(3)                                   # w w
  table[1, 1] = np.diag([1., -1., -1.])                     # x x
  table[2, 2] = np.diag([-1., 1., -1.])                     # y y
  table[3, 3] = np.diag([-1., -1., 1.])                     # z z
  table[1, 2] = [[0, 2, 0], [2, 0, 0], [0, 0, 0]]           # x y
  table[1, 3] = [[0, 0, 2], [0, 0, 0], [2, 0, 0]]           # x z
  table[2, 3] = [[0, 0, 0], [0, 0, 2], [0, 2, 0]]           # y z
  table[0, 1] = [[0, 0, 0], [0, 0, -2], [0, 2, 0]]          # w x
  table[0, 2] = [[0, 0, 2], [0, 0, 0], [-2, 0, 0]]          # w y
  table[0, 3] = [[0, -2, 0], [2, 0, 0], [0, 0, 0]]          # w z
  return table.reshape(4, 4, 9)


_QUAT_TO_ROT = _quat_to_rot_table()


def _quat_times_vec_table() -> np.ndarray:
  """[4, 3, 4]: entry (i, j) holds the coefficients of q_i v_j in the four components of
  the Hamilton product q * (0, v) of q = (w, x, y, z) and v = (b, c, d)."""
  table = np.zeros((4, 3, 4), np.float32)
  table[0, 0, 1] = table[0, 1, 2] = table[0, 2, 3] = 1    # w v: vector part
  table[1, 0, 0] = table[2, 1, 0] = table[3, 2, 0] = -1   # -(q_vec . v): real part
  table[2, 2, 1] = table[3, 0, 2] = table[1, 1, 3] = 1    # q_vec x v
  table[3, 1, 1] = table[1, 2, 2] = table[2, 0, 3] = -1
  return table


_QUAT_TIMES_VEC = _quat_times_vec_table()


def _pytree(cls):
  return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


class _Mappable:
  """`map(fn)` applies fn to every component array (indexing, reshaping, stop_gradient...)."""

  def map(self, fn: Callable[[jax.Array], jax.Array]):
    return jax.tree.map(fn, self)

  @property
  def shape(self) -> tuple[int, ...]:
    return jax.tree.leaves(self)[0].shape


@_pytree
class Vec3(_Mappable):
  """Vectors with components x, y, z, each of shape [...]."""
  x: jax.Array
  y: jax.Array
  z: jax.Array

  @classmethod
  def from_array(cls, a: jax.Array) -> Vec3:
    """From [..., 3]."""
    if a.shape[-1] != 3:
      raise ValueError(f'expected a trailing axis of 3, got shape {a.shape}')
    return cls(a[..., 0], a[..., 1], a[..., 2])

  @classmethod
  def zeros(cls, shape: Sequence[int], dtype=jnp.float32) -> Vec3:
    z = jnp.zeros(shape, dtype)
    return cls(z, z, z)

  def to_array(self) -> jax.Array:
    """[..., 3]."""
    return jnp.stack([self.x, self.y, self.z], axis=-1)

  def __add__(self, other: Vec3) -> Vec3:
    return Vec3(self.x + other.x, self.y + other.y, self.z + other.z)

  def __sub__(self, other: Vec3) -> Vec3:
    return Vec3(self.x - other.x, self.y - other.y, self.z - other.z)

  def __neg__(self) -> Vec3:
    return Vec3(-self.x, -self.y, -self.z)

  def __mul__(self, s) -> Vec3:
    """Scales by a number or an array broadcastable to the batch shape."""
    return Vec3(self.x * s, self.y * s, self.z * s)

  __rmul__ = __mul__

  def dot(self, other: Vec3) -> jax.Array:
    return self.x * other.x + self.y * other.y + self.z * other.z

  def cross(self, other: Vec3) -> Vec3:
    return Vec3(self.y * other.z - self.z * other.y,
                self.z * other.x - self.x * other.z,
                self.x * other.y - self.y * other.x)

  def norm(self, epsilon: float = 1e-8) -> jax.Array:
    """sqrt(|v|^2 + epsilon): finite gradient at the zero vector."""
    return jnp.sqrt(jnp.square(self.x) + jnp.square(self.y) + jnp.square(self.z) + epsilon)

  def normalized(self, epsilon: float = 1e-8) -> Vec3:
    n = self.norm(epsilon)
    return Vec3(self.x / n, self.y / n, self.z / n)


@_pytree
class Rot3(_Mappable):
  """Rotation matrices, one array per entry (xx = row x, column x), each of shape [...]."""
  xx: jax.Array
  xy: jax.Array
  xz: jax.Array
  yx: jax.Array
  yy: jax.Array
  yz: jax.Array
  zx: jax.Array
  zy: jax.Array
  zz: jax.Array

  @classmethod
  def identity(cls, shape: Sequence[int], dtype=jnp.float32) -> Rot3:
    one, zero = jnp.ones(shape, dtype), jnp.zeros(shape, dtype)
    return cls(one, zero, zero, zero, one, zero, zero, zero, one)

  @classmethod
  def from_array(cls, m: jax.Array) -> Rot3:
    """From [..., 3, 3]."""
    if m.shape[-2:] != (3, 3):
      raise ValueError(f'expected trailing axes (3, 3), got shape {m.shape}')
    return cls(*(m[..., i, j] for i in range(3) for j in range(3)))

  def to_array(self) -> jax.Array:
    """[..., 3, 3]."""
    rows = [jnp.stack(self.entries()[3 * i:3 * i + 3], axis=-1) for i in range(3)]
    return jnp.stack(rows, axis=-2)

  def entries(self) -> list[jax.Array]:
    """The nine entries row by row."""
    return [getattr(self, f) for f in _ROT_FIELDS]

  @classmethod
  def from_quaternion(cls, q: jax.Array) -> Rot3:
    """Rotation of a unit quaternion q [..., 4] = (w, x, y, z), real part first.

    Each entry is a quadratic form in q, summed over the same [4, 4] coefficient table
    AlphaFold's `quat_to_rot` uses, so that results round alike.
    """
    products = q[..., :, None, None] * q[..., None, :, None]  # [..., 4, 4, 1]
    entries = jnp.sum(_QUAT_TO_ROT * products, axis=(-3, -2))  # [..., 9]
    return cls(*(entries[..., i] for i in range(9)))

  def to_quaternion(self) -> jax.Array:
    """A unit quaternion [..., 4] of this rotation (sign arbitrary).

    The eigenvector of the largest eigenvalue of the symmetric 4x4 matrix whose
    quadratic form reproduces the matrix entries (AlphaFold's `rot_to_quat`); stable
    for every rotation, unlike formulas that divide by one quaternion component.
    """
    xx, xy, xz, yx, yy, yz, zx, zy, zz = self.entries()
    k = [[xx + yy + zz, zy - yz, xz - zx, yx - xy],
         [zy - yz, xx - yy - zz, xy + yx, xz + zx],
         [xz - zx, xy + yx, yy - xx - zz, yz + zy],
         [yx - xy, xz + zx, yz + zy, zz - xx - yy]]
    k = jnp.stack([jnp.stack(row, axis=-1) for row in k], axis=-2) / 3.0
    _, vectors = jnp.linalg.eigh(k)
    return vectors[..., -1]

  @classmethod
  def from_two_vectors(cls, e0_unnormalized: Vec3, e1_unnormalized: Vec3) -> Rot3:
    """Gram-Schmidt: columns e0 along the first vector, e1 in the plane of both, e2 = e0 x e1."""
    e0 = e0_unnormalized.normalized()
    c = e1_unnormalized.dot(e0)
    e1 = Vec3(e1_unnormalized.x - c * e0.x, e1_unnormalized.y - c * e0.y,
              e1_unnormalized.z - c * e0.z).normalized()
    e2 = e0.cross(e1)
    return cls(e0.x, e1.x, e2.x, e0.y, e1.y, e2.y, e0.z, e1.z, e2.z)

  @classmethod
  def from_x_rotation(cls, sin: jax.Array, cos: jax.Array) -> Rot3:
    """Rotation about the x axis by the angle with this sine and cosine (Suppl. Alg. 25)."""
    one, zero = jnp.ones_like(sin), jnp.zeros_like(sin)
    return cls(one, zero, zero, zero, cos, -sin, zero, sin, cos)

  def inverse(self) -> Rot3:
    return Rot3(self.xx, self.yx, self.zx, self.xy, self.yy, self.zy, self.xz, self.yz, self.zz)

  def apply(self, v: Vec3) -> Vec3:
    return Vec3(self.xx * v.x + self.xy * v.y + self.xz * v.z,
                self.yx * v.x + self.yy * v.y + self.yz * v.z,
                self.zx * v.x + self.zy * v.y + self.zz * v.z)

  def apply_inverse(self, v: Vec3) -> Vec3:
    return self.inverse().apply(v)

  def __matmul__(self, other: Rot3) -> Rot3:
    """Composition: (self @ other) v = self(other(v))."""
    c0 = self.apply(Vec3(other.xx, other.yx, other.zx))
    c1 = self.apply(Vec3(other.xy, other.yy, other.zy))
    c2 = self.apply(Vec3(other.xz, other.yz, other.zz))
    return Rot3(c0.x, c1.x, c2.x, c0.y, c1.y, c2.y, c0.z, c1.z, c2.z)


@_pytree
class Rigid(_Mappable):
  """Rigid transforms x -> rot x + trans, of batch shape [...]."""
  rot: Rot3
  trans: Vec3

  @classmethod
  def identity(cls, shape: Sequence[int], dtype=jnp.float32) -> Rigid:
    return cls(Rot3.identity(shape, dtype), Vec3.zeros(shape, dtype))

  @classmethod
  def from_3_points(cls, point_on_neg_x_axis: Vec3, origin: Vec3, point_on_xy_plane: Vec3
                    ) -> Rigid:
    """Suppl. Alg. 21 'rigidFrom3Points' (for a backbone: x1 = C, x2 = CA, x3 = N)."""
    rot = Rot3.from_two_vectors(origin - point_on_neg_x_axis, point_on_xy_plane - origin)
    return cls(rot, origin)

  def apply(self, v: Vec3) -> Vec3:
    """Local coordinates to global: rot v + trans."""
    return self.rot.apply(v) + self.trans

  def apply_inverse(self, v: Vec3) -> Vec3:
    """Global coordinates to local: rot^T (v - trans)."""
    return self.rot.apply_inverse(v - self.trans)

  def __matmul__(self, other: Rigid) -> Rigid:
    """Composition: (self @ other) v = self(other(v))."""
    return Rigid(self.rot @ other.rot, self.trans + self.rot.apply(other.trans))

  def compose_rotation(self, rot: Rot3) -> Rigid:
    """self @ (rot, 0): rotates first, keeps the translation."""
    return Rigid(self.rot @ rot, self.trans)

  def inverse(self) -> Rigid:
    inv = self.rot.inverse()
    return Rigid(inv, -inv.apply(self.trans))

  def scale_translation(self, factor) -> Rigid:
    return Rigid(self.rot, self.trans * factor)

  def stop_rot_gradient(self) -> Rigid:
    """Rotation held constant under differentiation (Suppl. Alg. 20 line 20)."""
    return Rigid(self.rot.map(jax.lax.stop_gradient), self.trans)

  @classmethod
  def from_tensor_4x4(cls, m: jax.Array) -> Rigid:
    """From [..., 4, 4] homogeneous matrices."""
    if m.shape[-2:] != (4, 4):
      raise ValueError(f'expected trailing axes (4, 4), got shape {m.shape}')
    return cls(Rot3.from_array(m[..., :3, :3]), Vec3.from_array(m[..., :3, 3]))

  def to_tensor_4x4(self) -> jax.Array:
    """[..., 4, 4] homogeneous matrices."""
    top = jnp.concatenate([self.rot.to_array(), self.trans.to_array()[..., None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.asarray([0., 0., 0., 1.], top.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)

  @classmethod
  def from_tensor_flat12(cls, m: jax.Array) -> Rigid:
    """From [..., 12]: rotation row by row, then translation."""
    if m.shape[-1] != 12:
      raise ValueError(f'expected a trailing axis of 12, got shape {m.shape}')
    parts = [m[..., i] for i in range(12)]
    return cls(Rot3(*parts[:9]), Vec3(*parts[9:]))

  def to_tensor_flat12(self) -> jax.Array:
    """[..., 12]: rotation row by row, then translation."""
    return jnp.stack(self.rot.entries() + [self.trans.x, self.trans.y, self.trans.z], axis=-1)

  @classmethod
  def from_tensor_7(cls, t: jax.Array, normalize: bool = False) -> Rigid:
    """From [..., 7]: quaternion (real part first), then translation."""
    return QuatRigid.from_tensor_7(t, normalize).rigid

  def to_tensor_7(self) -> jax.Array:
    """[..., 7]: a unit quaternion (real part first, sign arbitrary), then translation."""
    return jnp.concatenate([self.rot.to_quaternion(), self.trans.to_array()], axis=-1)


@_pytree
class QuatRigid(_Mappable):
  """A rigid transform that also keeps its unit quaternion (AlphaFold's `QuatAffine`).

  The structure module updates backbone frames in quaternion form (Suppl. Alg. 23) and
  carries them between iterations as 7-vectors; `rigid.rot` is always the rotation of
  `quaternion`.
  """
  quaternion: jax.Array  # [..., 4]
  rigid: Rigid

  @classmethod
  def create(cls, quaternion: jax.Array, trans: Vec3, normalize: bool = True) -> QuatRigid:
    if normalize:
      quaternion = quaternion / jnp.linalg.norm(quaternion, axis=-1, keepdims=True)
    return cls(quaternion, Rigid(Rot3.from_quaternion(quaternion), trans))

  @classmethod
  def identity(cls, shape: Sequence[int], dtype=jnp.float32) -> QuatRigid:
    q = jnp.broadcast_to(jnp.asarray([1., 0., 0., 0.], dtype), tuple(shape) + (4,))
    return cls.create(q, Vec3.zeros(shape, dtype), normalize=False)

  @classmethod
  def from_tensor_7(cls, t: jax.Array, normalize: bool = False) -> QuatRigid:
    if t.shape[-1] != 7:
      raise ValueError(f'expected a trailing axis of 7, got shape {t.shape}')
    return cls.create(t[..., :4], Vec3.from_array(t[..., 4:]), normalize)

  def to_tensor_7(self) -> jax.Array:
    return jnp.concatenate([self.quaternion, self.rigid.trans.to_array()], axis=-1)

  def pre_compose(self, update: jax.Array) -> QuatRigid:
    """Suppl. Alg. 23: applies the update [..., 6] = (b, c, d, t_x, t_y, t_z) first.

    The quaternion becomes q + q * (0, b, c, d), i.e. q * (1, b, c, d), renormalised;
    the translation moves by the current rotation of (t_x, t_y, t_z).
    """
    q_times_v = jnp.sum(_QUAT_TIMES_VEC * self.quaternion[..., :, None, None]
                        * update[..., None, :3, None], axis=(-3, -2))
    trans = self.rigid.trans + self.rigid.rot.apply(Vec3.from_array(update[..., 3:]))
    return QuatRigid.create(self.quaternion + q_times_v, trans)

  def scale_translation(self, factor) -> QuatRigid:
    return QuatRigid(self.quaternion, self.rigid.scale_translation(factor))

  def stop_rot_gradient(self) -> QuatRigid:
    return QuatRigid(jax.lax.stop_gradient(self.quaternion), self.rigid.stop_rot_gradient())
