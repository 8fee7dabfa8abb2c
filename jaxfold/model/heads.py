"""AlphaFold2's output heads: distogram, masked MSA, pLDDT, experimentally resolved, PAE.

Jumper et al. (2021) Suppl. 1.9.6 / Alg. 29 'predictPerResidueLDDT_Ca' (pLDDT), 1.9.7
'TM-score prediction' (predicted aligned error), 1.9.8 'Distogram prediction', 1.9.9
'Masked MSA prediction' and 1.9.10 'Experimentally resolved prediction'.

Each head reads one representation and returns AlphaFold's output dict: 'logits', plus
the bin edges under AlphaFold's key ('bin_edges' for the distogram, 'breaks' for PAE).
Parameter names are AlphaFold's (`distogram_head/half_logits`, `predicted_lddt_head/act_0`
...). The configs carry all of AlphaFold's `heads.<name>` keys; `weight` and the resolution
filter only matter to the losses.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.common import residue_constants
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear


@dataclasses.dataclass(frozen=True)
class DistogramConfig:
  """AlphaFold's `heads.distogram`: num_bins - 1 edges evenly from first to last break (Å)."""
  first_break: float = 2.3125
  last_break: float = 21.6875
  num_bins: int = 64
  weight: float = 0.3


@dataclasses.dataclass(frozen=True)
class MaskedMsaConfig:
  """AlphaFold's `heads.masked_msa`: 20 amino acids, unknown, gap and the mask token."""
  num_output: int = 23
  weight: float = 2.0


@dataclasses.dataclass(frozen=True)
class PredictedLddtConfig:
  """AlphaFold's `heads.predicted_lddt`: num_bins equal bins over lDDT-Cα in [0, 1]."""
  filter_by_resolution: bool = True
  max_resolution: float = 3.0
  min_resolution: float = 0.1
  num_bins: int = 50
  num_channels: int = 128
  weight: float = 0.01


@dataclasses.dataclass(frozen=True)
class ExperimentallyResolvedConfig:
  """AlphaFold's `heads.experimentally_resolved` (all loss settings: the head is one Linear)."""
  filter_by_resolution: bool = True
  max_resolution: float = 3.0
  min_resolution: float = 0.1
  weight: float = 0.01


@dataclasses.dataclass(frozen=True)
class PredictedAlignedErrorConfig:
  """AlphaFold's `heads.predicted_aligned_error`.

  num_bins - 1 edges evenly over [0, max_error_bin] Å; the last bin is open-ended.
  `num_channels` is in AlphaFold's config but used by no layer. `weight` is AlphaFold's
  base value 0.0, which leaves the head out; the `_ptm` presets set 0.1.
  """
  filter_by_resolution: bool = True
  max_error_bin: float = 31.0
  max_resolution: float = 3.0
  min_resolution: float = 0.1
  num_bins: int = 64
  num_channels: int = 128
  weight: float = 0.0


class DistogramHead(nn.Module):
  """Distogram prediction, Jumper et al. (2021) Suppl. 1.9.8.

  Input: pair [N_res, N_res, c_z]. Output: 'logits' [N_res, N_res, num_bins], symmetric in
  the two residue axes; 'bin_edges' [num_bins - 1] (float32, Å).
  """
  config: DistogramConfig = DistogramConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    half_logits = Linear(cfg.num_bins, initializer=self.global_config.final_init,
                         name='half_logits')(pair)
    # Summing with the transpose makes p(d_ij) = p(d_ji), as distances are symmetric.
    logits = half_logits + jnp.swapaxes(half_logits, -2, -3)
    edges = jnp.linspace(cfg.first_break, cfg.last_break, cfg.num_bins - 1)
    return {'logits': logits, 'bin_edges': edges}


class MaskedMsaHead(nn.Module):
  """Masked MSA (BERT-style) prediction, Jumper et al. (2021) Suppl. 1.9.9.

  Input: msa [N_seq, N_res, c_m]. Output: 'logits' [N_seq, N_res, num_output].
  """
  config: MaskedMsaConfig = MaskedMsaConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array) -> dict[str, jax.Array]:
    logits = Linear(self.config.num_output, initializer=self.global_config.final_init,
                    name='logits')(msa)
    return {'logits': logits}


class PredictedLddtHead(nn.Module):
  """pLDDT, Jumper et al. (2021) Suppl. Alg. 29 'predictPerResidueLDDT_Ca' (Suppl. 1.9.6).

  Input: the structure module's final single representation [N_res, c_s]. Output:
  'logits' [N_res, num_bins] over binned lDDT-Cα (see confidence.compute_plddt).
  """
  config: PredictedLddtConfig = PredictedLddtConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, structure_single: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    act = LayerNorm(name='input_layer_norm')(structure_single)
    act = jax.nn.relu(Linear(cfg.num_channels, initializer='relu', name='act_0')(act))
    act = jax.nn.relu(Linear(cfg.num_channels, initializer='relu', name='act_1')(act))
    logits = Linear(cfg.num_bins, initializer=self.global_config.final_init, name='logits')(act)
    return {'logits': logits}


class ExperimentallyResolvedHead(nn.Module):
  """'Experimentally resolved' prediction, Jumper et al. (2021) Suppl. 1.9.10.

  Input: the Evoformer's single representation [N_res, c_s]. Output: 'logits'
  [N_res, 37], one sigmoid logit per atom37 slot.
  """
  config: ExperimentallyResolvedConfig = ExperimentallyResolvedConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, single: jax.Array) -> dict[str, jax.Array]:
    logits = Linear(residue_constants.atom_type_num, initializer=self.global_config.final_init,
                    name='logits')(single)
    return {'logits': logits}


class PredictedAlignedErrorHead(nn.Module):
  """Predicted aligned error (pTM head), Jumper et al. (2021) Suppl. 1.9.7.

  Input: pair [N_res, N_res, c_z]. Output: 'logits' [N_res, N_res, num_bins] (row i = the
  frame of residue i, column j = the residue whose error it predicts); 'breaks'
  [num_bins - 1] (float32, Å).
  """
  config: PredictedAlignedErrorConfig = PredictedAlignedErrorConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, pair: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    logits = Linear(cfg.num_bins, initializer=self.global_config.final_init, name='logits')(pair)
    breaks = jnp.linspace(0.0, cfg.max_error_bin, cfg.num_bins - 1)
    return {'logits': logits, 'breaks': breaks}
