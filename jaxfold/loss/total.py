"""AlphaFold2's training loss: every term, its weight, and their sum.

Jumper et al. (2021) Suppl. 1.9 eq. 7 and Table 4:
  L = 0.5 L_FAPE(backbone, averaged over layers) + 0.5 L_FAPE(side chains) + L_torsion
      + 0.3 L_distogram + 2.0 L_msa + 0.01 L_pLDDT
      (+ 0.01 L_experimentally_resolved + 1.0 L_violation in fine-tuning)
      (+ 0.1 L_aligned_error for the pTM models)
and the sum is multiplied by sqrt(min(N_res, crop size)) (Suppl. 1.9; OpenFold scales by
the chain's length `seq_length` and the batch's residue count, which is the crop size).
The weights are OpenFold's `config.loss` as well (its `fape` term is the two FAPE halves,
its `supervised_chi` the chi and angle-norm parts with their weights inside).

`alphafold_loss(outputs, batch, config)` reads one example: the model's outputs as jaxfold's
AlphaFold module returns them (or `jaxfold.parity.openfold_loss` converts OpenFold's), and
AlphaFold's ground-truth and processed features. It returns the scaled total and a breakdown
of every unweighted term (and their parts), the weighted sum before scaling and the
structural-violation metrics.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxfold.loss.aligned_error import AlignedErrorLossConfig, aligned_error_loss
from jaxfold.loss.distogram import DistogramLossConfig, distogram_loss
from jaxfold.loss.experimentally_resolved import (ExperimentallyResolvedLossConfig,
                                                  experimentally_resolved_loss)
from jaxfold.loss.fape import FapeLossConfig, fape_loss
from jaxfold.loss.masked_msa import MaskedMsaLossConfig, masked_msa_loss
from jaxfold.loss.plddt import PlddtLossConfig, plddt_loss
from jaxfold.loss.torsion import TorsionLossConfig, supervised_chi_loss
from jaxfold.loss.violations import (ViolationConfig, find_violations, violation_loss,
                                     violation_metrics)


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """The weight of each unweighted term in the total (Suppl. Table 4, initial training)."""
  fape: float = 1.0  # 0.5 backbone + 0.5 side chains, inside the term
  supervised_chi: float = 1.0  # chi 0.5 + angle norm 0.01, inside the term
  distogram: float = 0.3
  masked_msa: float = 2.0
  plddt: float = 0.01
  experimentally_resolved: float = 0.0
  violation: float = 0.0
  aligned_error: float = 0.0


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Every loss setting. `crop_size` None turns the sqrt(min(N_res, crop)) scaling off."""
  weights: LossWeights = LossWeights()
  fape: FapeLossConfig = FapeLossConfig()
  torsion: TorsionLossConfig = TorsionLossConfig()
  violation: ViolationConfig = ViolationConfig()
  distogram: DistogramLossConfig = DistogramLossConfig()
  masked_msa: MaskedMsaLossConfig = MaskedMsaLossConfig()
  plddt: PlddtLossConfig = PlddtLossConfig()
  experimentally_resolved: ExperimentallyResolvedLossConfig = ExperimentallyResolvedLossConfig()
  aligned_error: AlignedErrorLossConfig = AlignedErrorLossConfig()
  scale_by_length: bool = True


# Suppl. Table 4: initial training, then fine-tuning (violations and experimentally resolved
# atoms switched on; the pTM models' aligned-error head trained at 0.1).
INITIAL_TRAINING = LossConfig()
FINE_TUNING = LossConfig(weights=LossWeights(experimentally_resolved=0.01, violation=1.0,
                                             aligned_error=0.1))

# The breakdown's term names -> OpenFold's (losses.json, `AlphaFoldLoss` with breakdown).
OPENFOLD_NAMES = {'fape': 'fape', 'supervised_chi': 'supervised_chi', 'distogram': 'distogram',
                  'masked_msa': 'masked_msa', 'plddt': 'plddt_loss',
                  'experimentally_resolved': 'experimentally_resolved',
                  'violation': 'violation', 'aligned_error': 'tm',
                  'unscaled_loss': 'unscaled_loss', 'loss': 'loss'}


def loss_terms(outputs: Mapping[str, Any], batch: Mapping[str, jax.Array],
               config: LossConfig = INITIAL_TRAINING) -> dict[str, jax.Array]:
  """Every unweighted term (the LossWeights names) and its parts, and violation metrics."""
  sm = outputs['structure_module']
  atom14 = sm['final_atom14_positions']
  terms = {}

  fape = fape_loss(sm, batch, config.fape)
  terms.update(fape=fape['loss'], backbone_fape=fape['backbone_loss'],
               sidechain_fape=fape['sidechain_fape'])

  chi = supervised_chi_loss(sm['sidechains']['angles_sin_cos'],
                            sm['sidechains']['unnormalized_angles_sin_cos'], batch['aatype'],
                            batch['seq_mask'], batch['chi_mask'], batch['chi_angles_sin_cos'],
                            config.torsion)
  terms.update(supervised_chi=chi['loss'], chi=chi['chi_loss'],
               angle_norm=chi['angle_norm_loss'])

  terms['distogram'] = distogram_loss(
      outputs['distogram']['logits'], outputs['distogram']['bin_edges'], batch['pseudo_beta'],
      batch['pseudo_beta_mask'], config.distogram)
  terms['masked_msa'] = masked_msa_loss(outputs['masked_msa']['logits'], batch['true_msa'],
                                        batch['bert_mask'], config.masked_msa)
  terms['plddt'] = plddt_loss(outputs['predicted_lddt']['logits'], sm['final_atom_positions'],
                              batch['all_atom_positions'], batch['all_atom_mask'],
                              batch['resolution'], config.plddt)
  terms['experimentally_resolved'] = experimentally_resolved_loss(
      outputs['experimentally_resolved']['logits'], batch['atom37_atom_exists'],
      batch['all_atom_mask'], batch['resolution'], config.experimentally_resolved)

  violations = find_violations(batch['aatype'], batch['residue_index'], atom14,
                               batch['atom14_atom_exists'], config.violation)
  terms['violation'] = violation_loss(violations, batch['atom14_atom_exists'])
  terms.update(violation_metrics(batch['residue_index'], atom14, batch['atom14_atom_exists'],
                                 batch['seq_mask'], violations))

  if 'predicted_aligned_error' in outputs:
    pae = outputs['predicted_aligned_error']
    terms['aligned_error'] = aligned_error_loss(
        pae['logits'], pae['breaks'], sm['final_affines'], batch['backbone_affine_tensor'],
        batch['backbone_affine_mask'], batch['resolution'], config.aligned_error)
  return terms


def alphafold_loss(outputs: Mapping[str, Any], batch: Mapping[str, jax.Array],
                   config: LossConfig = INITIAL_TRAINING
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The total loss of one example and its breakdown.

  Returns (loss, breakdown): breakdown holds `loss_terms`, 'unscaled_loss' (the weighted
  sum) and 'loss' (times sqrt(min(seq_length, N_res)) when `config.scale_by_length`).
  A model without the aligned-error head leaves that term out; its weight must then be 0.
  """
  terms = loss_terms(outputs, batch, config)
  weights = dataclasses.asdict(config.weights)
  if weights['aligned_error'] and 'aligned_error' not in terms:
    raise ValueError('the aligned-error loss has weight '
                     f'{weights["aligned_error"]} but the outputs have no '
                     "'predicted_aligned_error' head")
  unscaled = sum(weight * terms[name] for name, weight in weights.items() if name in terms)
  loss = unscaled
  if config.scale_by_length:
    num_res = batch['aatype'].shape[0]
    loss = unscaled * jnp.sqrt(jnp.minimum(jnp.asarray(batch['seq_length'], jnp.float32),
                                           num_res))
  return loss, {**terms, 'unscaled_loss': unscaled, 'loss': loss}
