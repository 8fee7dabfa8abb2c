"""A small processed AlphaFold batch from real data, and AlphaFold's trunk run on it.

Shared by the embedder, template and trunk parity tests; the reference run is cached, so a
session that runs several of them initialises AlphaFold's trunk once.

MSA, deletions and templates come from AlphaFold's own feature dict for the query73 protein
(`data/features/alphafold_feature_dict.pickle` in the shared folder, which callers pass in
from the `shared_dir` fixture), the previous structure from PDB 101m; features are laid out
as AlphaFold's `process_features` leaves them (one ensemble member, leading axis removed):
target_feat [N, 22], msa_feat [S, N, 49], extra_msa [E, N] (int), template_aatype [T, N]
(int), template_all_atom_positions [T, N, 37, 3], prev_* ...
Residues past `num_real` and the last MSA and extra-MSA rows are padding.
"""

import functools
import pathlib
import pickle

import flax.linen as nn
import haiku as hk
import jax
import numpy as np
from alphafold.common import protein, residue_constants
from alphafold.model import modules as af

from jaxfold.model import evoformer, template_embedding, trunk
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_reference import (apply_reference, config_from_reference,
                                                flax_params, reference_config, reference_params)

_HHBLITS_TO_OURS = np.asarray(residue_constants.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)


def _deletion_value(deletions: np.ndarray) -> np.ndarray:
  # AlphaFold squashes deletion counts into [0, 1) with arctan(d / 3) * 2 / pi.
  return (np.arctan(deletions / 3.0) * (2.0 / np.pi)).astype(np.float32)


def _pad(x: np.ndarray, size: int, axis: int) -> np.ndarray:
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return np.pad(x, widths)


def processed_batch(shared: pathlib.Path, num_res: int = 16, num_real: int = 14, num_seq: int = 4,
                    num_extra: int = 6, templates: tuple[int, ...] = (0, 2),
                    template_mask: tuple[float, ...] = (1.0, 0.0), start: int = 8,
                    msa_channel: int = 256, pair_channel: int = 128, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """AlphaFold's processed features for residues [start, start + num_real), padded to num_res.

  shared: the shared data folder (the `shared_dir` fixture).
  """
  rng = np.random.default_rng(seed)
  with open(shared / 'data' / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    raw = pickle.load(f)
  window = slice(start, start + num_real)
  aatype = np.argmax(raw['aatype'][window], axis=-1).astype(np.int32)
  msa = _HHBLITS_TO_OURS[raw['msa'][:, window]].astype(np.int32)
  deletions = raw['deletion_matrix_int'][:, window].astype(np.float32)

  # Cluster centres: the query and rows with deletions in the window; extra rows: more
  # rows with deletions and rows spread over the alignment. The last row of each set is
  # padding.
  with_deletions = np.nonzero(np.any(deletions > 0, axis=1))[0]
  centres = np.concatenate([[0], with_deletions[:num_seq - 2]])
  spread = np.linspace(1, len(msa) - 1, num_extra - 1 - (num_extra - 1) // 2).astype(int)
  extra = np.concatenate([with_deletions[num_seq:num_seq + (num_extra - 1) // 2], spread])
  clustered = msa[centres].copy()
  clustered[1:][rng.random(clustered[1:].shape) < 0.15] = 22  # BERT-masked positions
  # Profiles over the extra rows stand in for the cluster statistics.
  profile = np.mean(np.eye(23, dtype=np.float32)[msa[extra]], axis=0)
  deletion_mean = _deletion_value(np.mean(deletions[extra], axis=0))
  msa_feat = np.concatenate([
      np.eye(23, dtype=np.float32)[clustered],
      (deletions[centres] > 0).astype(np.float32)[..., None],
      _deletion_value(deletions[centres])[..., None],
      np.broadcast_to(profile, (len(centres),) + profile.shape),
      np.broadcast_to(deletion_mean[..., None], (len(centres), num_real, 1)),
  ], axis=-1)

  t = list(templates)
  t_aatype = _HHBLITS_TO_OURS[np.argmax(raw['template_aatype'][t][:, window], axis=-1)]
  t_pos = raw['template_all_atom_positions'][t][:, window]
  t_mask = raw['template_all_atom_masks'][t][:, window]
  t_pb, t_pb_mask = (np.asarray(x) for x in af.pseudo_beta_fn(t_aatype, t_pos, t_mask))

  with open(shared / 'data' / 'pdb' / '101m.pdb') as f:
    prev = protein.from_pdb_string(f.read())

  seq_mask = np.zeros(num_res, np.float32)
  seq_mask[:num_real] = 1.0
  row_mask = lambda rows: np.concatenate([np.ones(rows - 1), [0.0]]).astype(np.float32)
  batch = {
      'aatype': _pad(aatype, num_res, 0),
      'residue_index': _pad(raw['residue_index'][window].astype(np.int32), num_res, 0),
      'seq_mask': seq_mask,
      'target_feat': _pad(np.concatenate([
          raw['between_segment_residues'][window, None].astype(np.float32),
          np.eye(21, dtype=np.float32)[aatype]], axis=-1), num_res, 0),
      'msa_feat': _pad(_pad(msa_feat, num_seq, 0), num_res, 1).astype(np.float32),
      'msa_mask': row_mask(num_seq)[:, None] * seq_mask[None],
      'extra_msa': _pad(_pad(msa[extra], num_extra, 0), num_res, 1),
      'extra_has_deletion': _pad(_pad((deletions[extra] > 0).astype(np.float32),
                                      num_extra, 0), num_res, 1),
      'extra_deletion_value': _pad(_pad(_deletion_value(deletions[extra]), num_extra, 0),
                                   num_res, 1),
      'extra_msa_mask': row_mask(num_extra)[:, None] * seq_mask[None],
      'template_aatype': _pad(t_aatype.astype(np.int32), num_res, 1),
      'template_all_atom_positions': _pad(t_pos, num_res, 1).astype(np.float32),
      'template_all_atom_masks': _pad(t_mask, num_res, 1).astype(np.float32),
      'template_mask': np.asarray(template_mask, np.float32),
      'template_pseudo_beta': _pad(t_pb, num_res, 1).astype(np.float32),
      'template_pseudo_beta_mask': _pad(t_pb_mask, num_res, 1).astype(np.float32),
      'prev_pos': _pad(prev.atom_positions[:num_real], num_res, 0).astype(np.float32),
      'prev_msa_first_row': 3.0 * rng.standard_normal((num_res, msa_channel)).astype(np.float32),
      'prev_pair': 3.0 * rng.standard_normal((num_res, num_res, pair_channel)).astype(np.float32),
  }
  batch['extra_msa'] = batch['extra_msa'].astype(np.int32)
  return batch


# Few blocks keep the reference fast; every channel size stays model_1_ptm's. Two main
# blocks exercise the stacked parameter axis.
NUM_BLOCKS = {'evoformer_num_block': 2, 'extra_msa_stack_num_block': 1, 'template_num_block': 1}


def trunk_config():
  """AlphaFold's model_1_ptm `embeddings_and_evoformer` (templates and torsions on), few blocks."""
  cfg = reference_config('model_1_ptm').model
  evo = cfg.embeddings_and_evoformer
  evo.evoformer_num_block = NUM_BLOCKS['evoformer_num_block']
  evo.extra_msa_stack_num_block = NUM_BLOCKS['extra_msa_stack_num_block']
  evo.template.template_pair_stack.num_block = NUM_BLOCKS['template_num_block']
  return evo, cfg.global_config


def _record(store: dict, name: str, value) -> None:
  """Copies `value` out of the running computation (also from inside a scan) into store[name]."""
  jax.debug.callback(lambda v: store.setdefault(name, []).append(jax.tree.map(np.asarray, v)),
                     value, ordered=True)


def _capture(store: dict):
  """Haiku interceptor: Evoformer blocks' inputs and TemplateEmbedding's output."""
  def interceptor(next_f, args, kwargs, context):
    out = next_f(*args, **kwargs)
    if context.method_name == '__call__':
      if isinstance(context.module, af.EvoformerIteration):
        name = 'extra_msa_stack' if context.module.is_extra_msa else 'evoformer_iteration'
        _record(store, name, {'activations': kwargs['activations'], 'masks': kwargs['masks']})
      elif isinstance(context.module, af.TemplateEmbedding):
        _record(store, 'template_embedding', out)
    return out
  return interceptor


@functools.lru_cache(maxsize=1)
def alphafold_trunk_run(shared: pathlib.Path) -> tuple[dict, dict, dict, dict]:
  """(batch, haiku params, outputs, captures) of AlphaFold's EmbeddingsAndEvoformer.

  shared: the shared data folder (the `shared_dir` fixture), as for `processed_batch`.

  captures: 'evoformer_iteration' / 'extra_msa_stack': the first block's inputs
  {'activations': {'msa', 'pair'}, 'masks': {'msa', 'pair'}}; 'template_embedding': the
  template pair update.
  """
  batch = processed_batch(shared)
  evo_cfg, gc = trunk_config()
  store: dict = {}

  def trunk(batch, capture):
    module = af.EmbeddingsAndEvoformer(evo_cfg, gc)
    if not capture:
      return module(batch, is_training=False)
    with hk.experimental.intercept_methods(_capture(store)):
      return module(batch, is_training=False)

  params = reference_params(functools.partial(trunk, capture=False), {'batch': batch},
                            from_shapes=True)
  outputs = apply_reference(functools.partial(trunk, capture=True), params, {'batch': batch},
                            jit=True)
  outputs = jax.tree.map(np.asarray, outputs)
  jax.effects_barrier()
  captures = {name: values[0] for name, values in store.items()}
  return batch, params, outputs, captures


def jaxfold_trunk_run(params: dict, batch: dict, global_config: GlobalConfig = GlobalConfig()
                      ) -> tuple[dict, dict]:
  """(outputs, captures) of jaxfold's EmbeddingsAndEvoformer on AlphaFold's weights.

  captures as in `alphafold_trunk_run`, taken with Flax's method interception.
  """
  cfg = config_from_reference(trunk.EmbeddingsAndEvoformerConfig, trunk_config()[0])
  model = trunk.EmbeddingsAndEvoformer(cfg, global_config)
  store: dict = {}

  def interceptor(next_f, args, kwargs, context):
    out = next_f(*args, **kwargs)
    if context.method_name == '__call__':
      if isinstance(context.module, evoformer.EvoformerIteration):
        name = 'extra_msa_stack' if context.module.is_extra_msa else 'evoformer_iteration'
        _record(store, name, {'activations': args[0], 'masks': args[1]})
      elif isinstance(context.module, template_embedding.TemplateEmbedding):
        # The trunk has it add its update into the pair (its first argument): the update.
        _record(store, 'template_embedding',
                out - args[0] if kwargs.get('add_to_input', False) else out)
    return out

  def run(params, batch):
    with nn.intercept_methods(interceptor):
      return model.apply({'params': params}, batch)

  outputs = jax.tree.map(np.asarray, jax.jit(run)(flax_params(params), batch))
  jax.effects_barrier()
  return outputs, {name: values[0] for name, values in store.items()}
