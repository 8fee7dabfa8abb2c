"""The torsion-angle loss: supervised side-chain chi angles and the angle-norm penalty.

Jumper et al. (2021) Suppl. 1.9.1 and Alg. 27 'torsionAngleLoss'. The structure module
predicts each torsion angle as an unnormalised 2-vector; the loss compares the normalised
(sin, cos) of chi1-chi4 with the ground truth, also against the angle shifted by pi for the
chis of 180-degree-symmetric groups (`residue_constants.chi_pi_periodic`), keeping the
smaller error, and pulls the unnormalised vectors toward unit length. Every structure-module
layer's angles count, as in AlphaFold.

Shapes (one example, L layers, N residues): angles_sin_cos and unnormalized_angles_sin_cos
[L, N, 7, 2] (pre-omega, phi, psi, chi1-chi4), chi_angles_sin_cos [N, 4, 2], chi_mask [N, 4].
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import residue_constants as rc

# [21, 4]: 1 for the chis of 180-degree-symmetric groups, per residue type (UNK last).
_CHI_PI_PERIODIC = np.asarray(rc.chi_pi_periodic, np.float32)
_FIRST_CHI = 3  # torsion index of chi1


@dataclasses.dataclass(frozen=True)
class TorsionLossConfig:
  """AlphaFold's `structure_module` torsion-loss weights."""
  chi_weight: float = 0.5
  angle_norm_weight: float = 0.01


def _masked_mean(mask: jax.Array, value: jax.Array) -> jax.Array:
  """Mean of value over the entries mask (broadcast to value's shape) keeps; 0 if none."""
  mask = jnp.broadcast_to(mask, value.shape)
  return jnp.sum(mask * value) / (jnp.sum(mask) + 1e-10)


def supervised_chi_loss(angles_sin_cos: jax.Array, unnormalized_angles_sin_cos: jax.Array,
                        aatype: jax.Array, seq_mask: jax.Array, chi_mask: jax.Array,
                        chi_angles_sin_cos: jax.Array,
                        config: TorsionLossConfig = TorsionLossConfig()) -> dict[str, jax.Array]:
  """Alg. 27 over every layer's predicted angles.

  Args:
    angles_sin_cos: [L, N, 7, 2] normalised predicted torsions per layer.
    unnormalized_angles_sin_cos: [L, N, 7, 2] the same before normalisation.
    aatype: [N] residue types (0-20).
    seq_mask: [N] 1 for real residues (the angle-norm penalty's mask).
    chi_mask: [N, 4] 1 where the ground-truth chi is defined and resolved.
    chi_angles_sin_cos: [N, 4, 2] ground-truth chi1-chi4 as (sin, cos).
    config: the two weights.

  Returns:
    'chi_loss': mean squared (sin, cos) error of the chis (Alg. 27 lines 2-6),
    'angle_norm_loss': mean |norm - 1| of every unnormalised torsion of real residues
    (Alg. 27 line 7), 'loss' = chi_weight * chi_loss + angle_norm_weight * angle_norm_loss.
  """
  pred_chi = angles_sin_cos[..., _FIRST_CHI:, :]  # [L, N, 4, 2]
  pi_periodic = jnp.take(jnp.asarray(_CHI_PI_PERIODIC), aatype, axis=0, mode='clip')  # [N, 4]
  true_chi = chi_angles_sin_cos
  true_chi_shifted = (1.0 - 2.0 * pi_periodic)[..., None] * true_chi  # -(sin, cos) = chi + pi
  sq_error = jnp.minimum(jnp.sum(jnp.square(true_chi - pred_chi), axis=-1),
                         jnp.sum(jnp.square(true_chi_shifted - pred_chi), axis=-1))
  chi_loss = _masked_mean(chi_mask.astype(jnp.float32), sq_error)

  norm = jnp.sqrt(jnp.sum(jnp.square(unnormalized_angles_sin_cos), axis=-1) + 1e-6)  # [L, N, 7]
  angle_norm_loss = _masked_mean(seq_mask.astype(jnp.float32)[:, None], jnp.abs(norm - 1.0))
  return {'chi_loss': chi_loss, 'angle_norm_loss': angle_norm_loss,
          'loss': config.chi_weight * chi_loss + config.angle_norm_weight * angle_norm_loss}
