"""The AlphaFold model: recycling iterations of the trunk, the structure module and the heads.

Jumper et al. (2021) Suppl. Alg. 2 'Inference'. One `AlphaFoldIteration` (lines 3-22) embeds
the features, runs the Evoformer, averages the representations over the ensemble, and runs
the structure module and the heads. `AlphaFold` repeats it: each iteration receives the
previous one's atom positions, first MSA row and pair representation (Suppl. 1.10
'Recycling'), held constant under differentiation; only the last iteration is
differentiated, as in training.

Batch: AlphaFold's processed features (`RunModel.process_features`), each with a leading
axis of (num_recycle + 1) * num_ensemble when the MSA is resampled in recycling (the
default), else num_ensemble. Iteration r reads the slice [r * E, (r + 1) * E); iterations
past the last slice re-read it.

Outputs (AlphaFold's names): 'structure_module' (see structure_module.StructureModule:
'final_atom_positions' [N_res, 37, 3], 'final_atom_mask', ...), 'distogram', 'masked_msa',
'experimentally_resolved', 'predicted_lddt', 'predicted_aligned_error' (pTM presets) head
outputs, 'confidence' (confidence.confidence_metrics: 'plddt' [N_res],
'predicted_aligned_error' [N_res, N_res], 'ptm', ...), 'prev' (what a further iteration would
receive) and, on request, 'representations' ('msa', 'msa_first_row', 'pair', 'single',
'structure_module').
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.model import confidence
from jaxfold.model.config import ModelConfig
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.heads import (DistogramHead, ExperimentallyResolvedHead, MaskedMsaHead,
                                 PredictedAlignedErrorHead, PredictedLddtHead)
from jaxfold.model.structure_module import StructureModule
from jaxfold.model.template_embedding import TORSION_FEATURES
from jaxfold.model.trunk import EmbeddingsAndEvoformer

PREV_KEYS = ('prev_pos', 'prev_msa_first_row', 'prev_pair')


def initial_prev(num_res: int, config: ModelConfig) -> dict[str, jax.Array]:
  """The first iteration's recycled inputs: zeros (Suppl. Alg. 2 line 2)."""
  evo = config.embeddings_and_evoformer
  return {'prev_pos': jnp.zeros((num_res, 37, 3), jnp.float32),
          'prev_msa_first_row': jnp.zeros((num_res, evo.msa_channel), jnp.float32),
          'prev_pair': jnp.zeros((num_res, num_res, evo.pair_channel), jnp.float32)}


class AlphaFoldIteration(nn.Module):
  """One recycling iteration (Suppl. Alg. 2 lines 3-22), AlphaFold's `alphafold_iteration`.

  batch: features with a leading ensemble axis [E, ...]; prev: PREV_KEYS without it.
  Representations other than the MSA are averaged over the E members (line 17); the MSA
  representation and every per-residue input of the heads come from the first member.
  Heads whose config weight is 0 are not built, as in AlphaFold.
  """
  config: ModelConfig = ModelConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, batch: Mapping[str, jax.Array], prev: Mapping[str, jax.Array],
               deterministic: bool = True) -> dict[str, Any]:
    c, gc = self.config, self.global_config
    trunk = EmbeddingsAndEvoformer(c.embeddings_and_evoformer, gc, name='evoformer')
    members = [{**{k: v[i] for k, v in batch.items()}, **prev}
               for i in range(batch['aatype'].shape[0])]
    representations = trunk(members[0], deterministic)
    if len(members) > 1:
      averaged = ('single', 'pair', 'msa_first_row')
      total = {k: representations[k] for k in averaged}
      for member in members[1:]:
        update = trunk(member, deterministic)
        total = {k: total[k] + update[k] for k in averaged}
      representations.update({k: v / len(members) for k, v in total.items()})
    features = members[0]

    h = c.heads
    ret: dict[str, Any] = {}
    if h.masked_msa.weight:
      ret['masked_msa'] = MaskedMsaHead(h.masked_msa, gc, name='masked_msa_head')(
          representations['msa'])
    if h.distogram.weight:
      ret['distogram'] = DistogramHead(h.distogram, gc, name='distogram_head')(
          representations['pair'])
    if h.experimentally_resolved.weight:
      ret['experimentally_resolved'] = ExperimentallyResolvedHead(
          h.experimentally_resolved, gc, name='experimentally_resolved_head')(
              representations['single'])
    structure = StructureModule(h.structure_module, gc, name='structure_module')(
        representations, features, deterministic)
    representations.update(structure.pop('representations'))
    ret['structure_module'] = structure
    if h.predicted_lddt.weight:
      ret['predicted_lddt'] = PredictedLddtHead(h.predicted_lddt, gc,
                                                name='predicted_lddt_head')(
          representations['structure_module'])
    if h.predicted_aligned_error.weight:
      ret['predicted_aligned_error'] = PredictedAlignedErrorHead(
          h.predicted_aligned_error, gc, name='predicted_aligned_error_head')(
              representations['pair'])
    ret['representations'] = representations
    return ret


def _next_prev(ret: Mapping[str, Any], pair_dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """What the next iteration recycles, constant under differentiation (Suppl. 1.10).

  The pair in `pair_dtype`: between iterations it is kept in the compute dtype, the one the
  trunk computed it in (so nothing is rounded, unless ensemble members were averaged): in
  bfloat16 it then takes half the memory, and the next iteration builds its input pair in
  the same buffer (`RecyclingEmbedder`).
  """
  prev = {'prev_pos': ret['structure_module']['final_atom_positions'],
          'prev_msa_first_row': ret['representations']['msa_first_row'],
          'prev_pair': ret['representations']['pair'].astype(pair_dtype)}
  return jax.tree.map(jax.lax.stop_gradient, prev)


class AlphaFold(nn.Module):
  """AlphaFold with recycling (Suppl. Alg. 2), AlphaFold's root module `alphafold`.

  Its parameters are those of one `alphafold_iteration`, shared by every iteration.
  """
  config: ModelConfig = ModelConfig()
  global_config: GlobalConfig = GlobalConfig()

  def setup(self):
    self.iteration = AlphaFoldIteration(self.config, self.global_config,
                                        name='alphafold_iteration')

  def __call__(self, batch: Mapping[str, jax.Array], *, num_recycle: int | jax.Array | None = None,
               num_ensemble: int = 1, deterministic: bool = True,
               prev: Mapping[str, jax.Array] | None = None,
               return_representations: bool = False) -> dict[str, Any]:
    """Runs num_recycle + 1 iterations and returns the last one's outputs.

    Args:
      batch: processed features, leading axis as in the module docstring.
      num_recycle: recycling iterations; defaults to the config's. May be a traced integer
        (the loop is a `while_loop`), so one compiled model serves every count.
      num_ensemble: E, the ensemble members per iteration (AlphaFold's
        `data.eval.num_ensemble`; 1 except in CASP14's ensembled mode).
      deterministic: no dropout; otherwise a 'dropout' RNG is needed.
      prev: the first iteration's recycled inputs (PREV_KEYS); zeros by default.
      return_representations: also return 'representations'.
    """
    num_recycle = self.config.num_recycle if num_recycle is None else num_recycle
    num_res = batch['aatype'].shape[1]
    if prev is None:
      prev = initial_prev(num_res, self.config)
    if set(prev) != set(PREV_KEYS):
      raise ValueError(f'prev must have exactly the keys {PREV_KEYS}, got {sorted(prev)}')

    def iteration_batch(index):
      if not self.config.resample_msa_in_recycling:
        return batch
      # dynamic_slice clamps: iterations beyond the batch's slices re-read the last one.
      return {k: jax.lax.dynamic_slice_in_dim(v, index * num_ensemble, num_ensemble)
              for k, v in batch.items()}

    dtype = self.global_config.compute_dtype

    def body(module, carry):
      index, prev = carry
      ret = module.iteration(iteration_batch(index), prev, deterministic)
      return index + 1, _next_prev(ret, dtype)

    prev = dict(prev, prev_pair=prev['prev_pair'].astype(dtype))
    carry = (jnp.asarray(0), jax.tree.map(jax.lax.stop_gradient, prev))
    # Parameters are created by the final call; a while_loop cannot create them.
    if not self.is_initializing():
      carry = nn.while_loop(lambda _, carry: carry[0] < num_recycle, body, self, carry,
                            split_rngs={'dropout': True})
    index, prev = carry
    ret = self.iteration(iteration_batch(index), prev, deterministic)
    ret['prev'] = _next_prev(ret)
    representations = ret.pop('representations')
    if return_representations:
      ret['representations'] = representations
    if 'predicted_lddt' in ret:
      ret['confidence'] = confidence.confidence_metrics(ret, mask=batch['seq_mask'][0])
    return ret


def feature_shapes(config: ModelConfig, num_res: int, num_seq: int, num_extra: int,
                   num_templates: int = 4, num_slices: int = 1,
                   template_torsions: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every processed feature the model reads, leading axis included.

  num_slices: the batch's leading axis, (num_recycle + 1) * num_ensemble.
  template_torsions: include the optional precomputed template torsion angles
  (OpenFold's; see `template_embedding.template_torsion_angles`).
  """
  f32, i32 = jnp.float32, jnp.int32
  per_res = {
      'aatype': ((num_res,), i32), 'residue_index': ((num_res,), i32),
      'seq_mask': ((num_res,), f32), 'target_feat': ((num_res, 22), f32),
      'msa_feat': ((num_seq, num_res, 49), f32), 'msa_mask': ((num_seq, num_res), f32),
      'extra_msa': ((num_extra, num_res), i32),
      'extra_has_deletion': ((num_extra, num_res), f32),
      'extra_deletion_value': ((num_extra, num_res), f32),
      'extra_msa_mask': ((num_extra, num_res), f32),
      'atom14_atom_exists': ((num_res, 14), f32), 'atom37_atom_exists': ((num_res, 37), f32),
      'residx_atom37_to_atom14': ((num_res, 37), i32),
  }
  if config.embeddings_and_evoformer.template.enabled:
    t = num_templates
    per_res.update({
        'template_aatype': ((t, num_res), i32), 'template_mask': ((t,), f32),
        'template_all_atom_positions': ((t, num_res, 37, 3), f32),
        'template_all_atom_masks': ((t, num_res, 37), f32),
        'template_pseudo_beta': ((t, num_res, 3), f32),
        'template_pseudo_beta_mask': ((t, num_res), f32),
    })
    if template_torsions:
      per_res.update({
          'template_torsion_angles_sin_cos': ((t, num_res, 7, 2), f32),
          'template_alt_torsion_angles_sin_cos': ((t, num_res, 7, 2), f32),
          'template_torsion_angles_mask': ((t, num_res, 7), f32),
      })
  return {k: jax.ShapeDtypeStruct((num_slices,) + shape, dtype)
          for k, (shape, dtype) in per_res.items()}



def model_features(batch: Mapping[str, np.ndarray], config: ModelConfig, source: str = 'batch'
                   ) -> dict[str, np.ndarray]:
  """The features of a processed batch that the model reads, each checked against
  `feature_shapes` (the batch's own sizes); the optional template torsion angles are kept
  when present. Raises ValueError naming `source` and every missing or misshaped feature.
  """
  if 'aatype' not in batch or np.ndim(batch['aatype']) != 2:
    raise ValueError(f'{source}: expected processed features with a leading recycle axis '
                     f"('aatype' [N_slices, N_res]); got "
                     f"{np.shape(batch['aatype']) if 'aatype' in batch else 'no aatype'}")
  slices, num_res = batch['aatype'].shape
  size = lambda key, axis, default: batch[key].shape[axis] if key in batch else default
  expected = feature_shapes(config, num_res, size('msa_feat', 1, 1), size('extra_msa', 1, 1),
                            size('template_mask', 1, 4), slices, template_torsions=True)
  optional = {f'template_{k}' for k in TORSION_FEATURES}
  missing = sorted(set(expected) - set(batch) - optional)
  if missing:
    raise ValueError(f'{source}: missing features for this preset: {", ".join(missing)}')
  expected = {k: v for k, v in expected.items() if k in batch}
  wrong = [f'{k} {batch[k].shape} {batch[k].dtype} (expected {v.shape} {v.dtype})'
           for k, v in expected.items()
           if batch[k].shape != v.shape or np.dtype(batch[k].dtype).kind != np.dtype(v.dtype).kind]
  if wrong:
    raise ValueError(f'{source}: features of the wrong shape or type: {"; ".join(wrong)}')
  return {k: np.asarray(batch[k], v.dtype) for k, v in expected.items()}
