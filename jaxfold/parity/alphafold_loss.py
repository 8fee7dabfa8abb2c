"""Every loss term of jaxfold against AlphaFold's own loss code, on a real training example.

One forward pass of jaxfold's model (perturbed random full-size weights converted from
AlphaFold's Haiku tree, one iteration, no dropout) on the processed training batch of 2q2k
chain A (`alphafold_training.training_batch`) gives the outputs. On those same outputs and
the same batch, two things are computed:
- jaxfold's breakdown (`jaxfold.loss.total.alphafold_loss`, fine-tuning weights, without the
  sqrt(length) scaling, which AlphaFold does not apply);
- what AlphaFold's code computes: each head's `.loss(value, batch)` (DistogramHead,
  MaskedMsaHead, ExperimentallyResolvedHead, PredictedLDDTHead, PredictedAlignedErrorHead)
  and `folding.StructureModule.loss` (FAPE, side-chain FAPE, chi and angle-norm losses,
  structural violations and their metrics), and the total as `AlphaFoldIteration` sums it
  (each head's config weight times its 'loss').
jaxfold's outputs are handed to AlphaFold's code in its forms: side-chain frames as
`r3.Rigids`, side-chain atoms as `r3.Vecs` (the backbone trajectory's QuatAffine 7-vectors
are the same in both). Needs the test extra (haiku, alphafold-colabfold).
"""

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.loss import fape as fape_lib
from jaxfold.loss import total
from jaxfold.model import config as model_config
from jaxfold.model.alphafold import model_features
from jaxfold.parity import alphafold_model
from jaxfold.parity.agreement import ALPHAFOLD_MODULE_TOLERANCE, Comparison, Row, scalar_row
from jaxfold.parity.alphafold_reference import config_from_reference
from jaxfold.parity.alphafold_training import CHAIN, training_batch

TOLERANCE = ALPHAFOLD_MODULE_TOLERANCE
# The breakdown's structural-violation metrics, named as AlphaFold's compute_violation_metrics.
VIOLATION_METRICS = ('violations_extreme_ca_ca_distance', 'violations_between_residue_bond',
                     'violations_between_residue_clash', 'violations_within_residue',
                     'violations_per_residue')
# AlphaFold's head name -> jaxfold's breakdown term, for the heads with one term each.
HEAD_TERMS = {'distogram': 'distogram', 'masked_msa': 'masked_msa', 'predicted_lddt': 'plddt',
              'experimentally_resolved': 'experimentally_resolved',
              'predicted_aligned_error': 'aligned_error'}


def loss_config(af_config) -> total.LossConfig:
  """jaxfold's LossConfig with AlphaFold's head weights, unscaled by length as AlphaFold.

  The structure module's weight multiplies the FAPE, torsion and violation terms alike
  (AlphaFold folds the three into the module's 'loss'); the violation term's own factor is
  `structural_violation_loss_weight`.
  """
  heads = af_config.model.heads
  weight = lambda name: float(heads[name].weight) if name in heads else 0.0
  sm = weight('structure_module')
  weights = total.LossWeights(
      fape=sm, supervised_chi=sm, distogram=weight('distogram'),
      masked_msa=weight('masked_msa'), plddt=weight('predicted_lddt'),
      experimentally_resolved=weight('experimentally_resolved'),
      violation=sm * float(heads.structure_module.structural_violation_loss_weight),
      aligned_error=weight('predicted_aligned_error'))
  return dataclasses.replace(total.FINE_TUNING, weights=weights, scale_by_length=False)


def _example(batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """The first slice of the recycling axis: the example the last (only) iteration reads."""
  return {k: jnp.asarray(v[0]) for k, v in batch.items()}


def jaxfold_terms(outputs: Mapping[str, Any], example: Mapping[str, jax.Array],
                  config: total.LossConfig, violation_weight: float = 1.0
                  ) -> dict[str, jax.Array]:
  """jaxfold's breakdown, plus the last layer's backbone FAPE (AlphaFold's 'fape') and the
  structure module's share as AlphaFold sums it: FAPE + torsion + violation_weight *
  violation (`structural_violation_loss_weight`)."""
  _, breakdown = total.alphafold_loss(outputs, example, config)
  sm = outputs['structure_module']
  _, per_layer = fape_lib.backbone_loss(
      sm['traj'], example['backbone_affine_tensor'], example['backbone_affine_mask'],
      example.get('use_clamped_fape', 1.0), config.fape.fape)
  structure = (breakdown['fape'] + breakdown['supervised_chi']
               + violation_weight * breakdown['violation'])
  return {**breakdown, 'backbone_fape_final_layer': per_layer[-1], 'structure_module': structure}


def alphafold_values(outputs: Mapping[str, Any]) -> dict[str, Any]:
  """jaxfold's outputs in the forms AlphaFold's loss code reads (r3 side-chain objects)."""
  from alphafold.model import r3  # pylint: disable=import-outside-toplevel
  sm = outputs['structure_module']
  sidechains = sm['sidechains']
  value = {k: sm[k] for k in ('traj', 'final_atom14_positions', 'final_atom_positions',
                              'final_affines')}
  value['sidechains'] = {
      'frames': r3.rigids_from_tensor_flat12(sidechains['frames']),
      'atom_pos': r3.vecs_from_tensor(sidechains['atom_pos']),
      'angles_sin_cos': sidechains['angles_sin_cos'],
      'unnormalized_angles_sin_cos': sidechains['unnormalized_angles_sin_cos']}
  ret = {'structure_module': value}
  for name in HEAD_TERMS:
    if name in outputs:
      ret[name] = dict(outputs[name])
  return ret


def alphafold_terms(af_config, outputs: Mapping[str, Any],
                    example: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """AlphaFold's own loss code on jaxfold's outputs: every term and the weighted total.

  Calls each head's `.loss` as `AlphaFoldIteration` does (the pLDDT and aligned-error heads
  are given the whole output dict, the others their own outputs) and sums weight * loss.
  The FAPE and torsion terms are read off `StructureModule.loss`'s outputs, its mean
  backbone FAPE from `folding.backbone_loss`, the violation term from
  `folding.structural_violation_loss` on the violations `StructureModule.loss` found.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  from alphafold.model import folding  # pylint: disable=import-outside-toplevel
  from alphafold.model import modules  # pylint: disable=import-outside-toplevel
  heads, gc = af_config.model.heads, af_config.model.global_config
  classes = {'distogram': modules.DistogramHead, 'masked_msa': modules.MaskedMsaHead,
             'experimentally_resolved': modules.ExperimentallyResolvedHead,
             'predicted_lddt': modules.PredictedLDDTHead,
             'predicted_aligned_error': modules.PredictedAlignedErrorHead}

  def fn(outputs, batch):
    ret = alphafold_values(outputs)
    terms, total_loss = {}, 0.0
    for name in sorted(heads):
      if not heads[name].weight:
        continue
      if name == 'structure_module':
        module = folding.StructureModule(heads[name], gc)
        loss = module.loss(ret[name], batch)
      else:
        whole = name in ('predicted_lddt', 'predicted_aligned_error')
        loss = classes[name](heads[name], gc).loss(ret if whole else ret[name], batch)
      terms[name] = loss
      total_loss += heads[name].weight * loss['loss']

    sm_config, sm = heads.structure_module, terms['structure_module']
    out = {HEAD_TERMS[name]: terms[name]['loss'] for name in HEAD_TERMS if name in terms}
    backbone = {'loss': 0.0}
    folding.backbone_loss(backbone, batch, ret['structure_module'], sm_config)
    frac = sm_config.sidechain.weight_frac
    out.update(
        backbone_fape=backbone['loss'], backbone_fape_final_layer=sm['fape'],
        sidechain_fape=sm['sidechain_fape'],
        fape=(1 - frac) * backbone['loss'] + frac * sm['sidechain_fape'],
        chi=sm['chi_loss'], angle_norm=sm['angle_norm_loss'],
        supervised_chi=(sm_config.chi_weight * sm['chi_loss']
                        + sm_config.angle_norm_weight * sm['angle_norm_loss']),
        structure_module=sm['loss'], unscaled_loss=total_loss)
    value = ret['structure_module']
    if 'violations' not in value:
      value['violations'] = folding.find_structural_violations(
          batch, value['final_atom14_positions'], sm_config)
    violation = {'loss': 0.0}
    folding.structural_violation_loss(violation, batch, value, sm_config)
    out['violation'] = violation['loss'] / sm_config.structural_violation_loss_weight
    metrics = sm['metrics'] or folding.compute_violation_metrics(
        batch, value['final_atom14_positions'], value['violations'])
    out.update({k: metrics[k] for k in VIOLATION_METRICS})
    return out

  return jax.jit(hk.transform(fn).apply)({}, None, outputs, example)


def term_rows(ours: Mapping[str, Any], alphafold: Mapping[str, Any],
              tolerance: float = TOLERANCE) -> list[Row]:
  """One `losses/{name}` row per term AlphaFold computed, the weighted total last."""
  order = ('fape', 'backbone_fape', 'backbone_fape_final_layer', 'sidechain_fape',
           'supervised_chi', 'chi', 'angle_norm', 'violation', *VIOLATION_METRICS,
           'structure_module', *HEAD_TERMS.values())
  table = [scalar_row(f'losses/{name}', ours[name], alphafold[name], tolerance)
           for name in order if name in alphafold]
  table.append(scalar_row('losses/total', ours['unscaled_loss'], alphafold['unscaled_loss'],
                          tolerance))
  return table


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What both losses are computed on: AlphaFold's config, jaxfold's outputs, the example."""
  af_config: Any  # AlphaFold's ConfigDict (its loss settings and head weights)
  outputs: dict[str, Any]  # jaxfold's forward pass, numpy
  example: dict[str, jax.Array]  # the batch's single recycling slice
  seconds: dict[str, float]


def loss_inputs(shared, preset: str = 'model_1_ptm', *,
                params: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                reduced: bool = False, crop_size: int = 64, seed: int = 0,
                progress: Callable[[str], None] = lambda _: None) -> LossInputs:
  """The training example and jaxfold's one forward pass on it (see `compare_losses`)."""
  seconds: dict[str, float] = {}
  clock = time.perf_counter()
  af_cfg = alphafold_model.alphafold_config(preset, num_recycle=0)
  if reduced:
    alphafold_model.apply_depths(af_cfg, model_config.reduced(model_config.preset(preset)))
  cfg = config_from_reference(model_config.AlphaFoldConfig, af_cfg)
  progress(f'features: {CHAIN} training example, crop {crop_size}')
  batch = training_batch(shared, preset, crop_size=crop_size, num_recycle=0, seed=seed)
  if params is None:
    progress('weights: perturbed random')
    params = alphafold_model.perturbed_weights(af_cfg, batch, seed)
  seconds['inputs'] = time.perf_counter() - clock

  clock = time.perf_counter()
  progress('jaxfold: one forward pass')
  tree = from_haiku(params, root='alphafold')
  outputs = alphafold_model.run_jaxfold(cfg.model, tree, model_features(batch, cfg.model), 0)
  outputs = {k: v for k, v in outputs.items() if k not in ('representations', 'prev')}
  seconds['forward'] = time.perf_counter() - clock
  return LossInputs(af_cfg, outputs, _example(batch), seconds)


def loss_rows(inputs: LossInputs, progress: Callable[[str], None] = lambda _: None,
              alphafold_outputs: Mapping[str, Any] | None = None
              ) -> tuple[list[Row], dict[str, float]]:
  """(rows, seconds): both losses on `inputs`. `alphafold_outputs` hands AlphaFold's code
  other outputs than jaxfold's (a check that the comparison can fail)."""
  seconds = {}
  clock = time.perf_counter()
  progress('losses: jaxfold')
  af_cfg = inputs.af_config
  config = loss_config(af_cfg)
  violation_weight = float(af_cfg.model.heads.structure_module.structural_violation_loss_weight)
  ours = jax.jit(lambda o, b: jaxfold_terms(o, b, config, violation_weight))(inputs.outputs,
                                                                           inputs.example)
  ours = jax.tree.map(np.asarray, ours)
  seconds['jaxfold_loss'] = time.perf_counter() - clock

  clock = time.perf_counter()
  progress("losses: AlphaFold's loss code")
  outputs = inputs.outputs if alphafold_outputs is None else alphafold_outputs
  ref = jax.tree.map(np.asarray, alphafold_terms(af_cfg, outputs, inputs.example))
  seconds['alphafold_loss'] = time.perf_counter() - clock
  return term_rows(ours, ref), seconds


def compare_losses(shared, preset: str = 'model_1_ptm', *,
                   params: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                   reduced: bool = False, crop_size: int = 64, seed: int = 0,
                   progress: Callable[[str], None] = lambda _: None) -> Comparison:
  """jaxfold's loss terms against AlphaFold's loss code on one jaxfold forward pass.

  Args:
    shared: the shared data folder (holds data/alignments and data/mmcif for 2q2k).
    preset: one of jaxfold.model.config.PRESETS.
    params: AlphaFold's Haiku parameters ({'alphafold/...': {name: array}}); by default
      perturbed random weights (every layer non-zero, `alphafold_model.perturbed_weights`).
    reduced: a model with fewer blocks (`jaxfold.model.config.reduced`'s depths, every
      channel kept; AlphaFold's config given the same depths), for fast tests.
    crop_size: residues of the training crop.
    seed: the random weights' and the feature processing's seed.
    progress: called with a line before each stage.

  Sets JAX's default matmul precision to 'highest' (float32 matmuls exact on CPU) for the
  comparison and restores it afterwards.
  """
  before = jax.config.jax_default_matmul_precision
  jax.config.update('jax_default_matmul_precision', 'highest')
  try:
    inputs = loss_inputs(shared, preset, params=params, reduced=reduced, crop_size=crop_size,
                         seed=seed, progress=progress)
    table, seconds = loss_rows(inputs, progress)
  finally:
    jax.config.update('jax_default_matmul_precision', before)
  label = f'{preset} (reduced)' if reduced else preset
  return Comparison('AlphaFold loss code (live)', label, 0,
                    inputs.example['aatype'].shape[0], table, {**inputs.seconds, **seconds})
