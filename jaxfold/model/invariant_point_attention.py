"""Invariant point attention.

Jumper et al. (2021) Suppl. Alg. 22 'InvariantPointAttention'. Each residue emits scalar
queries/keys/values and 3-D query/key/value points in its own backbone frame; points are
moved to the global frame, attention logits combine scalar products, point distances and a
pair bias, and the attended value points are moved back into the query residue's frame, so
the output is invariant to global rotations and translations.

Inputs: single [N_res, c_s], pair [N_res, N_res, c_z], mask [N_res] (1 = real residue),
frames `Rigid` [N_res] (in the units the structure module works in, nm-like: Å / 10).
Output [N_res, num_channel]. Parameters are AlphaFold's: `q_scalar`, `kv_scalar`,
`q_point_local`, `kv_point_local`, `trainable_point_weights`, `attention_2d`,
`output_projection`.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.common.geometry import Rigid, Vec3
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import Linear

# Logit offset for masked residue pairs (AlphaFold's value; not the -1e9 of other attention).
_MASK_LOGIT = 1e5


def _split_xyz(a: jax.Array, per_head: tuple[int, int]) -> Vec3:
  """[N, 3 * H * P] laid out x-block, y-block, z-block -> Vec3 of [N, H, P]."""
  x, y, z = jnp.split(a, 3, axis=-1)
  return Vec3(x, y, z).map(lambda c: c.reshape(c.shape[:-1] + per_head))


class InvariantPointAttention(nn.Module):
  """Suppl. Alg. 22 with AlphaFold's monomer parameterisation (see module docstring)."""
  num_head: int = 12
  num_scalar_qk: int = 16
  num_point_qk: int = 4
  num_scalar_v: int = 16
  num_point_v: int = 8
  num_channel: int = 384
  dist_epsilon: float = 1e-8
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, single: jax.Array, pair: jax.Array, mask: jax.Array,
               frames: Rigid) -> jax.Array:
    h, n = self.num_head, single.shape[0]
    sqk, sv, pqk, pv = self.num_scalar_qk, self.num_scalar_v, self.num_point_qk, self.num_point_v

    q_scalar = Linear(h * sqk, name='q_scalar')(single).reshape(n, h, sqk)
    kv_scalar = Linear(h * (sv + sqk), name='kv_scalar')(single).reshape(n, h, sv + sqk)
    k_scalar, v_scalar = kv_scalar[..., :sqk], kv_scalar[..., sqk:]

    # Points are predicted in each residue's frame and compared in the global frame.
    frames_per_point = frames.map(lambda a: a[:, None, None])
    q_point = frames_per_point.apply(
        _split_xyz(Linear(h * 3 * pqk, name='q_point_local')(single), (h, pqk)))
    kv_point = frames_per_point.apply(
        _split_xyz(Linear(h * 3 * (pqk + pv), name='kv_point_local')(single), (h, pqk + pv)))
    k_point = kv_point.map(lambda c: c[..., :pqk])
    v_point = kv_point.map(lambda c: c[..., pqk:])

    # Each of the three logit terms gets variance 1/3 for unit-variance inputs: a scalar
    # q.k has variance num_scalar_qk, a point term 0.5|q - k|^2 has 9/2 per point.
    scalar_weight = math.sqrt(1.0 / (3 * sqk))
    softplus_inverse_of_one = math.log(math.e - 1.0)
    point_weight_per_head = jax.nn.softplus(self.param(
        'trainable_point_weights', nn.initializers.constant(softplus_inverse_of_one), (h,),
        jnp.float32)).astype(single.dtype) * math.sqrt(1.0 / (3 * pqk * 9.0 / 2))
    pair_weight = math.sqrt(1.0 / 3)

    scalar_logits = jnp.einsum('qhc,khc->hqk', q_scalar * scalar_weight, k_scalar)
    # [H, N_q, N_k, P]: squared distances between query and key points, per point.
    dist2 = sum(jnp.square(jnp.swapaxes(qc, 0, 1)[:, :, None] - jnp.swapaxes(kc, 0, 1)[:, None])
                for qc, kc in ((q_point.x, k_point.x), (q_point.y, k_point.y),
                               (q_point.z, k_point.z)))
    point_logits = -0.5 * jnp.sum(point_weight_per_head[:, None, None, None] * dist2, axis=-1)
    pair_logits = pair_weight * jnp.transpose(Linear(h, name='attention_2d')(pair), [2, 0, 1])
    mask_2d = mask[:, None] * mask[None, :]
    logits = scalar_logits + point_logits + pair_logits - _MASK_LOGIT * (1.0 - mask_2d)
    attn = jax.nn.softmax(logits, axis=-1)  # [H, N_q, N_k]

    result_scalar = jnp.einsum('hqk,khc->qhc', attn, v_scalar).reshape(n, h * sv)
    # Value points are averaged in the global frame, then taken into the query's frame.
    result_point = frames.map(lambda a: a[:, None]).apply_inverse(v_point.map(
        lambda c: jnp.einsum('hqk,khp->qhp', attn, c).reshape(n, h * pv)))
    result_point_norm = jnp.sqrt(self.dist_epsilon + jnp.square(result_point.x)
                                 + jnp.square(result_point.y) + jnp.square(result_point.z))
    result_pair = jnp.einsum('hqk,qkc->qhc', attn, pair).reshape(n, -1)

    features = jnp.concatenate([result_scalar, result_point.x, result_point.y, result_point.z,
                                result_point_norm, result_pair], axis=-1)
    return Linear(self.num_channel, initializer=self.global_config.final_init,
                  name='output_projection')(features)
