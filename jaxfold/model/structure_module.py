"""The structure module: backbone frames and all atoms from the single and pair representations.

Jumper et al. (2021) Suppl. Alg. 20 'StructureModule' (with Alg. 22 'InvariantPointAttention',
Alg. 23 'Backbone update', Alg. 24 'computeAllAtomCoordinates'). Eight iterations of one
shared `FoldIteration` refine per-residue backbone frames, starting from the identity; the
rotation is held constant under differentiation between iterations (Alg. 20 line 20).

Inputs: representations {'single': [N_res, c_s], 'pair': [N_res, N_res, c_z]}, batch with
'seq_mask' [N_res], 'aatype' [N_res], 'atom14_atom_exists' [N_res, 14],
'residx_atom37_to_atom14' [N_res, 37], 'atom37_atom_exists' [N_res, 37].
Outputs (AlphaFold's names; L = num_layer):
  'traj' [L, N_res, 7]                backbone frames per iteration, quaternion then Å
  'sidechains' 'angles_sin_cos' / 'unnormalized_angles_sin_cos' [L, N_res, 7, 2],
               'atom_pos' [L, N_res, 14, 3] (Å), 'frames' [L, N_res, 8, 12] (Å; the
               12-vector of `geometry.Rigid.to_tensor_flat12`, AlphaFold's r3.Rigids leaves)
  'representations' {'structure_module': [N_res, num_channel]}
  'final_atom14_positions' [N_res, 14, 3], 'final_atom14_mask' [N_res, 14],
  'final_atom_positions' [N_res, 37, 3], 'final_atom_mask' [N_res, 37], 'final_affines' [N_res, 7].
Geometry is computed in at least float32 (AlphaFold casts its trunk's bfloat16 outputs
to float32 before the heads), whatever `global_config.dtype`.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.common.geometry import QuatRigid, Rigid
from jaxfold.common import all_atom
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.invariant_point_attention import InvariantPointAttention
from jaxfold.model.primitives import LayerNorm, Linear, residual_dropout


@dataclasses.dataclass(frozen=True)
class FapeConfig:
  """AlphaFold's `heads.structure_module.fape` (used by the loss)."""
  clamp_distance: float = 10.0
  clamp_type: str = 'relu'
  loss_unit_distance: float = 10.0


@dataclasses.dataclass(frozen=True)
class SidechainConfig:
  """AlphaFold's `heads.structure_module.sidechain`: the angle ResNet and side-chain FAPE."""
  atom_clamp_distance: float = 10.0
  num_channel: int = 128
  num_residual_block: int = 2
  weight_frac: float = 0.5
  length_scale: float = 10.0


@dataclasses.dataclass(frozen=True)
class StructureModuleConfig:
  """AlphaFold's `heads.structure_module` with its monomer values (loss keys included)."""
  num_layer: int = 8
  fape: FapeConfig = FapeConfig()
  angle_norm_weight: float = 0.01
  chi_weight: float = 0.5
  clash_overlap_tolerance: float = 1.5
  compute_in_graph_metrics: bool = True
  dropout: float = 0.1
  num_channel: int = 384
  num_head: int = 12
  num_layer_in_transition: int = 3
  num_point_qk: int = 4
  num_point_v: int = 8
  num_scalar_qk: int = 16
  num_scalar_v: int = 16
  position_scale: float = 10.0
  sidechain: SidechainConfig = SidechainConfig()
  structural_violation_loss_weight: float = 1.0
  violation_tolerance_factor: float = 12.0
  weight: float = 1.0


def _l2_normalize(x: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  return x / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), epsilon))


class MultiRigidSidechain(nn.Module):
  """Torsion angles and all atoms from the single representation (Alg. 20 line 11, Alg. 24).

  Inputs: backb_to_global Rigid [N_res] (Å), representations [act [N_res, num_channel],
  initial_act [N_res, c_s]], aatype [N_res]. Outputs: 'angles_sin_cos' and
  'unnormalized_angles_sin_cos' [N_res, 7, 2], 'atom_pos' [N_res, 14, 3],
  'frames' [N_res, 8, 12].
  """
  config: SidechainConfig = SidechainConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, backb_to_global: Rigid, representations: list[jax.Array],
               aatype: jax.Array) -> dict[str, jax.Array]:
    c = self.config
    # One projection per input, summed: a Linear of their concatenation.
    names = ['input_projection'] + [f'input_projection_{i}' for i in range(1, len(representations))]
    act = sum(Linear(c.num_channel, name=name)(jax.nn.relu(x))
              for name, x in zip(names, representations))
    for block in range(c.num_residual_block):
      suffix = f'_{block}' if block else ''
      update = Linear(c.num_channel, initializer='relu', name=f'resblock1{suffix}')(
          jax.nn.relu(act))
      act = act + Linear(c.num_channel, initializer=self.global_config.final_init,
                         name=f'resblock2{suffix}')(jax.nn.relu(update))
    unnormalized = Linear(14, name='unnormalized_angles')(jax.nn.relu(act))
    unnormalized = unnormalized.reshape(act.shape[:-1] + (7, 2))
    angles = _l2_normalize(unnormalized)

    frames = all_atom.torsion_angles_to_frames(aatype, backb_to_global, angles)
    atom_pos = all_atom.frames_and_literature_positions_to_atom14_pos(aatype, frames)
    return {
        'angles_sin_cos': angles,
        'unnormalized_angles_sin_cos': unnormalized,
        'atom_pos': atom_pos.to_array(),
        'frames': frames.to_tensor_flat12(),
    }


class FoldIteration(nn.Module):
  """One structure-module iteration (Alg. 20 lines 6-11): IPA, transition, backbone update
  (Alg. 23), side chains.

  Inputs: act [N_res, num_channel], affine QuatRigid [N_res] (translations in units of
  position_scale Å), initial_act [N_res, c_s], pair [N_res, N_res, c_z] (layer-normed),
  seq_mask [N_res], aatype [N_res]. Returns (act, updated affine, side-chain outputs).
  """
  config: StructureModuleConfig = StructureModuleConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, act: jax.Array, affine: QuatRigid, initial_act: jax.Array,
               pair: jax.Array, seq_mask: jax.Array, aatype: jax.Array, deterministic: bool
               ) -> tuple[jax.Array, QuatRigid, dict[str, jax.Array]]:
    c, gc = self.config, self.global_config
    attn = InvariantPointAttention(
        num_head=c.num_head, num_scalar_qk=c.num_scalar_qk, num_point_qk=c.num_point_qk,
        num_scalar_v=c.num_scalar_v, num_point_v=c.num_point_v, num_channel=c.num_channel,
        global_config=gc, name='invariant_point_attention')(act, pair, seq_mask, affine.rigid)
    # AlphaFold drops out the whole updated stream here, not just the update.
    act = residual_dropout(act + attn, c.dropout, None, deterministic)
    act = LayerNorm(name='attention_layer_norm')(act)

    update = act
    for i in range(c.num_layer_in_transition):
      last = i == c.num_layer_in_transition - 1
      update = Linear(c.num_channel, initializer=gc.final_init if last else 'relu',
                      name='transition' + (f'_{i}' if i else ''))(update)
      if not last:
        update = jax.nn.relu(update)
    act = residual_dropout(act + update, c.dropout, None, deterministic)
    act = LayerNorm(name='transition_layer_norm')(act)

    affine = affine.pre_compose(
        Linear(6, initializer=gc.final_init, name='affine_update')(act))
    sidechains = MultiRigidSidechain(c.sidechain, gc, name='rigid_sidechain')(
        affine.rigid.scale_translation(c.position_scale), [act, initial_act], aatype)
    return act, affine, sidechains


class StructureModule(nn.Module):
  """Suppl. Alg. 20 'StructureModule' as AlphaFold's head (see the module docstring)."""
  config: StructureModuleConfig = StructureModuleConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, representations: Mapping[str, jax.Array], batch: Mapping[str, Any],
               deterministic: bool = True) -> dict[str, Any]:
    c, gc = self.config, self.global_config
    dtype = jnp.promote_types(representations['single'].dtype, jnp.float32)
    single = representations['single'].astype(dtype)
    pair = representations['pair'].astype(dtype)
    seq_mask = batch['seq_mask'].astype(dtype)
    aatype = batch['aatype']
    if seq_mask.ndim != 1:
      raise ValueError(f"batch['seq_mask'] must be [N_res], got shape {seq_mask.shape}")

    initial_act = LayerNorm(name='single_layer_norm')(single)
    act = Linear(c.num_channel, name='initial_projection')(initial_act)
    pair = LayerNorm(name='pair_layer_norm')(pair)

    def iteration(fold, carry, _):
      act, affine = carry
      act, affine, sidechains = fold(act, QuatRigid.from_tensor_7(affine), initial_act, pair,
                                     seq_mask, aatype, deterministic)
      # The next iteration sees this rotation as a constant (Alg. 20 line 20).
      return (act, affine.stop_rot_gradient().to_tensor_7()), (affine.to_tensor_7(), sidechains)

    scan = nn.scan(iteration, variable_broadcast='params',
                   split_rngs={'params': False, 'dropout': True}, length=c.num_layer)
    identity = QuatRigid.identity(seq_mask.shape, dtype).to_tensor_7()
    (act, _), (affines, sidechains) = scan(FoldIteration(c, gc, name='fold_iteration'),
                                           (act, identity), None)

    traj = affines * jnp.asarray([1.0] * 4 + [c.position_scale] * 3)
    atom14 = sidechains['atom_pos'][-1]
    atom37_exists = batch['atom37_atom_exists']
    atom37 = all_atom.atom14_to_atom37(atom14, batch['residx_atom37_to_atom14'], atom37_exists)
    return {
        'representations': {'structure_module': act},
        'traj': traj,
        'sidechains': sidechains,
        'final_atom14_positions': atom14,
        'final_atom14_mask': batch['atom14_atom_exists'],
        'final_atom_positions': atom37 * atom37_exists[:, :, None],
        'final_atom_mask': atom37_exists,
        'final_affines': traj[-1],
    }
