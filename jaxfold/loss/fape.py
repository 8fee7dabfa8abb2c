"""Frame aligned point error: the backbone and side-chain FAPE losses.

Jumper et al. (2021) Suppl. 1.9.2 and Alg. 28 'computeFAPE'; the backbone loss is Alg. 20
'StructureModule' line 17 (every layer's backbone frames, averaged over layers, Suppl. 1.9.2
and 1.11.5 for the clamped / unclamped mixture), the side-chain loss Alg. 20 line 28 (the
final layer's 8 rigid-group frames and atom14 positions against the ground truth renamed
for symmetric side chains, Alg. 26; see `jaxfold.loss.symmetry`).

Shapes (one example, L structure-module layers, N residues):
  traj [L, N, 7]                  predicted backbone frames (quaternion, then Å)
  backbone_affine_tensor [N, 7]   ground-truth backbone frames, backbone_affine_mask [N]
  sidechain frames [L, N, 8, 12]  predicted rigid-group frames (`Rigid.to_tensor_flat12`)
  atom14 positions [L, N, 14, 3]  predicted atoms (Å)
Configs use AlphaFold's keys (`model.heads.structure_module.fape` / `.sidechain`), so the
model's `StructureModuleConfig` serves as a `FapeLossConfig` too.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxfold.common.geometry import Rigid, Vec3
from jaxfold.loss import symmetry


@dataclasses.dataclass(frozen=True)
class BackboneFapeConfig:
  """AlphaFold's `structure_module.fape`: clamp and length scale of the backbone FAPE (Å)."""
  clamp_distance: float = 10.0
  loss_unit_distance: float = 10.0


@dataclasses.dataclass(frozen=True)
class SidechainFapeConfig:
  """AlphaFold's `structure_module.sidechain` loss keys: clamp and length scale (Å) of the
  all-atom FAPE and its share of the structure loss."""
  atom_clamp_distance: float = 10.0
  length_scale: float = 10.0
  weight_frac: float = 0.5


@dataclasses.dataclass(frozen=True)
class FapeLossConfig:
  """Both FAPE losses, nested as in AlphaFold's `structure_module` config."""
  fape: BackboneFapeConfig = BackboneFapeConfig()
  sidechain: SidechainFapeConfig = SidechainFapeConfig()


def frame_aligned_point_error(pred_frames: Rigid, target_frames: Rigid, frames_mask: jax.Array,
                              pred_positions: Vec3, target_positions: Vec3,
                              positions_mask: jax.Array, length_scale: float,
                              l1_clamp_distance: float | None = None,
                              epsilon: float = 1e-4) -> jax.Array:
  """Suppl. Alg. 28: the mean distance between positions seen from corresponding frames.

  Every position is expressed in every frame's local coordinates, in the prediction and in
  the target; the error of a (frame, position) pair is the distance between the two,
  sqrt(d^2 + epsilon) so that it has a gradient at d = 0 (identical structures therefore
  score sqrt(epsilon) / length_scale, not 0), clamped at `l1_clamp_distance` when given,
  divided by `length_scale`, and averaged over the pairs both masks keep.

  Args:
    pred_frames, target_frames: Rigid [..., F].
    frames_mask: [F] (or [..., F]) 1 for the frames to align on.
    pred_positions, target_positions: Vec3 [..., P].
    positions_mask: [P] (or [..., P]) 1 for the positions to score.
    length_scale: Å by which distances are divided.
    l1_clamp_distance: Å above which errors are clamped (no gradient); None: no clamp.
    epsilon: regularises the distance and the mean's denominator.

  Returns:
    [...] the error, 0 where either mask is empty.
  """
  def local(frames: Rigid, positions: Vec3) -> Vec3:  # [..., F, P]
    return frames.inverse().map(lambda a: a[..., :, None]).apply(
        positions.map(lambda a: a[..., None, :]))

  diff = local(pred_frames, pred_positions) - local(target_frames, target_positions)
  error = jnp.sqrt(diff.dot(diff) + epsilon)
  if l1_clamp_distance is not None:
    error = jnp.minimum(error, l1_clamp_distance)
  error = error / length_scale * frames_mask[..., :, None] * positions_mask[..., None, :]
  normalization = jnp.sum(frames_mask, axis=-1) * jnp.sum(positions_mask, axis=-1)
  return jnp.sum(error, axis=(-2, -1)) / (epsilon + normalization)


def backbone_loss(traj: jax.Array, backbone_affine_tensor: jax.Array,
                  backbone_affine_mask: jax.Array, use_clamped_fape: jax.Array | float = 1.0,
                  config: BackboneFapeConfig = BackboneFapeConfig()
                  ) -> tuple[jax.Array, jax.Array]:
  """Backbone FAPE of every structure-module layer (Alg. 20 line 17), C-alpha positions
  scored in backbone frames.

  Args:
    traj: [L, N, 7] predicted backbone frames per layer (quaternion, then Å).
    backbone_affine_tensor: [N, 7] ground-truth backbone frames.
    backbone_affine_mask: [N] 1 where the ground-truth frame exists.
    use_clamped_fape: scalar in [0, 1]: the weight of the clamped FAPE, the rest going to
      the unclamped one (Suppl. 1.11.5; AlphaFold draws 0 or 1 per example).
    config: AlphaFold's `structure_module.fape`.

  Returns:
    (loss, per_layer): the mean over layers [] and each layer's FAPE [L] (AlphaFold reports
    the last as 'fape').
  """
  pred = Rigid.from_tensor_7(traj)
  target = Rigid.from_tensor_7(backbone_affine_tensor)

  def per_layer_fape(clamp):
    return frame_aligned_point_error(pred, target, backbone_affine_mask, pred.trans,
                                     target.trans, backbone_affine_mask,
                                     length_scale=config.loss_unit_distance,
                                     l1_clamp_distance=clamp)

  use_clamped_fape = jnp.asarray(use_clamped_fape, jnp.float32)
  per_layer = (per_layer_fape(config.clamp_distance) * use_clamped_fape
               + per_layer_fape(None) * (1.0 - use_clamped_fape))
  return jnp.mean(per_layer), per_layer


def sidechain_loss(pred_frames: jax.Array, pred_positions: jax.Array,
                   renamed_gt_frames: jax.Array, rigidgroups_gt_exists: jax.Array,
                   renamed_atom14_gt_positions: jax.Array, renamed_atom14_gt_exists: jax.Array,
                   config: SidechainFapeConfig = SidechainFapeConfig()) -> jax.Array:
  """All-atom FAPE of the final layer (Alg. 20 line 28): every atom in every rigid group's frame.

  Args:
    pred_frames: [L, N, 8, 12] predicted rigid-group frames per layer (the last is scored).
    pred_positions: [L, N, 14, 3] predicted atom14 positions per layer (the last is scored).
    renamed_gt_frames: [N, 8, 12] ground-truth frames after renaming
      (`symmetry.rename_rigidgroup_frames`).
    rigidgroups_gt_exists: [N, 8].
    renamed_atom14_gt_positions: [N, 14, 3], renamed_atom14_gt_exists: [N, 14]
      (`symmetry.compute_renamed_ground_truth`).
    config: AlphaFold's `structure_module.sidechain`.

  Returns:
    [] the side-chain FAPE.
  """
  return frame_aligned_point_error(
      pred_frames=Rigid.from_tensor_flat12(pred_frames[-1].reshape(-1, 12)),
      target_frames=Rigid.from_tensor_flat12(renamed_gt_frames.reshape(-1, 12)),
      frames_mask=rigidgroups_gt_exists.reshape(-1),
      pred_positions=Vec3.from_array(pred_positions[-1].reshape(-1, 3)),
      target_positions=Vec3.from_array(renamed_atom14_gt_positions.reshape(-1, 3)),
      positions_mask=renamed_atom14_gt_exists.reshape(-1),
      length_scale=config.length_scale,
      l1_clamp_distance=config.atom_clamp_distance)


def fape_loss(structure_module: Mapping[str, Any], batch: Mapping[str, jax.Array],
              config: FapeLossConfig = FapeLossConfig()) -> dict[str, jax.Array]:
  """The structure module's FAPE term as AlphaFold's `StructureModule.loss` forms it.

  Args:
    structure_module: the model's 'structure_module' outputs ('traj', 'sidechains' with
      'frames' and 'atom_pos', 'final_atom14_positions').
    batch: AlphaFold's ground-truth features: backbone_affine_tensor, backbone_affine_mask,
      atom14_gt_positions, atom14_alt_gt_positions, atom14_gt_exists, atom14_alt_gt_exists,
      atom14_atom_is_ambiguous, rigidgroups_gt_frames, rigidgroups_alt_gt_frames,
      rigidgroups_gt_exists and optionally use_clamped_fape (clamped when absent).
    config: AlphaFold's `structure_module` FAPE keys.

  Returns:
    'loss' = (1 - weight_frac) * 'backbone_loss' + weight_frac * 'sidechain_fape' (OpenFold's
    'fape' term); 'backbone_loss' (mean over layers), 'fape' (last layer's backbone FAPE),
    'sidechain_fape', and the renaming of `symmetry.compute_renamed_ground_truth`.
  """
  backbone, per_layer = backbone_loss(
      structure_module['traj'], batch['backbone_affine_tensor'], batch['backbone_affine_mask'],
      batch.get('use_clamped_fape', 1.0), config.fape)
  renamed = symmetry.compute_renamed_ground_truth(batch,
                                                  structure_module['final_atom14_positions'])
  sidechain = sidechain_loss(
      structure_module['sidechains']['frames'], structure_module['sidechains']['atom_pos'],
      symmetry.rename_rigidgroup_frames(renamed['alt_naming_is_better'],
                                        batch['rigidgroups_gt_frames'],
                                        batch['rigidgroups_alt_gt_frames']),
      batch['rigidgroups_gt_exists'], renamed['renamed_atom14_gt_positions'],
      renamed['renamed_atom14_gt_exists'], config.sidechain)
  weight = config.sidechain.weight_frac
  return {'loss': (1.0 - weight) * backbone + weight * sidechain, 'backbone_loss': backbone,
          'fape': per_layer[-1], 'sidechain_fape': sidechain, **renamed}
