"""Predicted aligned error (pTM head) loss, Jumper et al. (2021) Suppl. 1.9.7 'TM-score prediction'.

For every pair (i, j), e_ij is how far residue j's Cα lands from its true place when the
predicted structure is aligned on the backbone frame of residue i:
  e_ij = | T_i^-1 x_j - T_i^true^-1 x_j^true |,
with T the backbone frames and x the frames' origins (Cα). e_ij falls into one of
`num_bins` bins (num_bins - 1 edges evenly over [0, max_error_bin] Å, the last bin open);
the loss is the cross entropy of the head's logits [N_res, N_res, num_bins] against that
bin, averaged over pairs of residues that both have a true backbone frame, and multiplied
by 0 unless the resolution lies in [min_resolution, max_resolution]. The target is held
constant (AlphaFold's `PredictedAlignedErrorHead.loss`, OpenFold's `tm_loss`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxfold.common.geometry import Rigid
from jaxfold.loss.resolution import resolution_weight


@dataclasses.dataclass(frozen=True)
class AlignedErrorLossConfig:
  """AlphaFold's `heads.predicted_aligned_error` loss settings; the bins are the head's (its
  outputs' 'breaks')."""
  filter_by_resolution: bool = True
  min_resolution: float = 0.1
  max_resolution: float = 3.0
  eps: float = 1e-8


def _local_origins(frames: Rigid) -> jax.Array:
  """[N, N] components: entry (i, j) is frame j's origin in frame i's coordinates."""
  return frames.map(lambda x: x[:, None]).apply_inverse(frames.trans.map(lambda x: x[None, :]))


def aligned_error_squared(predicted_affines: jax.Array, true_affines: jax.Array) -> jax.Array:
  """[N_res, N_res] squared aligned error e_ij^2 (Å^2) between two sets of backbone frames.

  Both [N_res, 7] (quaternion, real part first, then translation in Å), used as given (not
  normalised), as AlphaFold's `QuatAffine.from_tensor` does. Row i: aligned on frame i.
  """
  predicted = _local_origins(Rigid.from_tensor_7(predicted_affines))
  true = _local_origins(Rigid.from_tensor_7(true_affines))
  return (jnp.square(predicted.x - true.x) + jnp.square(predicted.y - true.y)
          + jnp.square(predicted.z - true.z))


def aligned_error_loss(logits: jax.Array, breaks: jax.Array, final_affines: jax.Array,
                       backbone_affine_tensor: jax.Array, backbone_affine_mask: jax.Array,
                       resolution: jax.Array,
                       config: AlignedErrorLossConfig = AlignedErrorLossConfig()) -> jax.Array:
  """Cross entropy of the predicted aligned error head against the binned true error.

  Args:
    logits: [N_res, N_res, num_bins] the head's logits (row: alignment frame).
    breaks: [num_bins - 1] the head's bin edges (Å), increasing.
    final_affines: [N_res, 7] the structure module's final backbone frames (Å; the
      structure module's 'final_affines', equal to 'traj'[-1]).
    backbone_affine_tensor: [N_res, 7] the true backbone frames (Å).
    backbone_affine_mask: [N_res] 1 where the true backbone frame exists.
    resolution: [] the structure's resolution (Å).
    config: resolution filter and epsilon (the bins come with `breaks`).

  Returns:
    [] the loss; 0 when filtered out by resolution or when no frame exists.
  """
  if logits.shape[-1] != breaks.shape[-1] + 1:
    raise ValueError(f'logits have {logits.shape[-1]} bins but breaks {breaks.shape} '
                     'define one more than its length')
  error2 = jax.lax.stop_gradient(aligned_error_squared(final_affines, backbone_affine_tensor))
  true_bins = jnp.sum(error2[..., None] > jnp.square(breaks), axis=-1)
  errors = optax.softmax_cross_entropy_with_integer_labels(logits, true_bins)
  square_mask = backbone_affine_mask[:, None] * backbone_affine_mask[None, :]
  loss = jnp.sum(errors * square_mask) / (config.eps + jnp.sum(square_mask))
  loss *= resolution_weight(resolution, config)
  return loss
