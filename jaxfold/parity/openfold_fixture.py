"""jaxfold against the recorded OpenFold runs of `shared/fixtures/openfold/`, layer by layer.

A fixture directory holds a run of the real OpenFold code (see its README): the processed
inputs in OpenFold's layout (`inputs.npz`), the outputs of every hooked module
(`outputs.npz`, `output_aliases.json`) and the state-dict manifest whose names regenerate
the weights. `compare` converts the inputs to jaxfold's batch, the weights to jaxfold's
tree, and measures:
- every recorded module output of every recycling iteration, each module fed the inputs
  OpenFold's module received, assembled from the recorded outputs (teacher forcing);
  OpenFold records most Evoformer sub-modules' updates before the residual add, so the
  input of sub-module k is the block input plus the recorded updates 1..k-1 (exceptions
  in _BLOCK_UPDATES); modules whose inputs are features are fed the batch;
- the Evoformer blocks whose predecessor is not recorded (23 and 47 at full size) as the
  stretch of blocks from the last recorded one;
- the heads and confidence metrics fed the recorded final representations / logits;
- the whole model end to end after the same recycling iterations (Jumper et al. (2021)
  Suppl. Alg. 2), with issue #6's tolerances.
Only this module and jaxfold/convert know OpenFold's layout (DESIGN.md).
"""

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import all_atom
from jaxfold.common.errors import JaxfoldError
from jaxfold.common.geometry import Rigid
from jaxfold.convert import openfold_batch
from jaxfold.model import config as model_config
from jaxfold.model.alphafold import initial_prev, model_features
from jaxfold.model.confidence import confidence_metrics
from jaxfold.model.embedders import ExtraMsaEmbedder, InputEmbedder, RecyclingEmbedder
from jaxfold.model.evoformer import EvoformerIteration
from jaxfold.model.heads import (DistogramHead, ExperimentallyResolvedHead, MaskedMsaHead,
                                 PredictedAlignedErrorHead, PredictedLddtHead)
from jaxfold.model.msa_attention import MSAColumnAttention, MSARowAttentionWithPairBias
from jaxfold.model.outer_product_mean import OuterProductMean
from jaxfold.model.primitives import Linear
from jaxfold.model.structure_module import FoldIteration, StructureModule
from jaxfold.model.template_embedding import (TEMPLATE_PAIR_FEATURES, SingleTemplateEmbedding,
                                              TemplateEmbedding, TemplateTorsionEmbedder,
                                              template_pair_features)
from jaxfold.model.transition import Transition
from jaxfold.model.triangle_attention import TriangleAttention
from jaxfold.model.triangle_multiplication import TriangleMultiplication
from jaxfold.parity.agreement import OPENFOLD_MODULE_TOLERANCE as MODULE_TOLERANCE
from jaxfold.parity.agreement import Comparison, Row, rows
from jaxfold.parity.alphafold_model import run_jaxfold

# Issue #6, end to end: absolute errors of the geometry (Å) and the confidence metrics.
END_TO_END = {'final_atom_positions': 0.05, 'plddt': 0.01, 'predicted_aligned_error': 0.01,
              'ptm': 0.01}
TORSION_TOLERANCE = 1e-5  # absolute, sin/cos: jaxfold's torsions against OpenFold's features

# OpenFold's Evoformer sub-modules in block order (the monomer order of Suppl. Alg. 6): the
# stream each updates, jaxfold's (AlphaFold's) module of the same role, and what the hook
# saw. OpenFold records most updates before the residual add ('update'). At inference it
# adds the triangle multiplications' update to the pair in place inside the module, so
# their hooks see the updated pair ('updated'); and it runs the ending-node attention on
# the transposed pair, so that update is recorded transposed ('update_transposed').
_BLOCK_UPDATES = (
    ('msa_att_row', 'msa', 'msa_row_attention_with_pair_bias', 'update'),
    ('msa_att_col', 'msa', 'msa_column_attention', 'update'),
    ('msa_transition', 'msa', 'msa_transition', 'update'),
    ('outer_product_mean', 'pair', 'outer_product_mean', 'update'),
    ('pair_stack.tri_mul_out', 'pair', 'triangle_multiplication_outgoing', 'updated'),
    ('pair_stack.tri_mul_in', 'pair', 'triangle_multiplication_incoming', 'updated'),
    ('pair_stack.tri_att_start', 'pair', 'triangle_attention_starting_node', 'update'),
    ('pair_stack.tri_att_end', 'pair', 'triangle_attention_ending_node', 'update_transposed'),
    ('pair_stack.pair_transition', 'pair', 'pair_transition', 'update'),
)

# OpenFold's fixed per-head widths (openfold/config.py), which AlphaFold states as totals
# over heads defaulting to the input's channel count: a fixture that changes c_m or c_z
# needs them stated, or jaxfold would shrink the attention with the channels.
_MSA_ATTENTION_TOTAL = 8 * 32  # c_hidden_msa_att x heads, main Evoformer
_EXTRA_MSA_ATTENTION_TOTAL = 8 * 8  # the same in the extra-MSA stack
_PAIR_ATTENTION_TOTAL = 4 * 32  # c_hidden_pair_att x heads

# OpenFold config changes that shape only the data or memory use, not the network.
_DATA_ONLY = ('data.predict.max_template_hits', 'globals.chunk_size',
              'model.template.average_templates', 'model.template.offload_templates',
              'raw_feature_crop',
              # The training-mode batch of small_loss: its features are recorded as made.
              'data.train.max_msa_clusters', 'data.train.max_extra_msa', 'data.train.crop_size',
              'data.train.max_templates', 'data.train.uniform_recycling',
              'data.train.spatial_crop_prob', 'data.common.use_templates')
# OpenFold config change -> jaxfold config fields it sets.
_CONFIG_FIELDS = {
    'data.predict.max_msa_clusters': ('data.eval.max_msa_clusters',),
    'data.predict.max_extra_msa': ('data.common.max_extra_msa',),
    'data.predict.max_templates': ('data.eval.max_templates',),
    'data.common.max_recycling_iters': ('data.common.num_recycle', 'model.num_recycle'),
    'globals.c_z': ('model.embeddings_and_evoformer.pair_channel',),
    'globals.c_m': ('model.embeddings_and_evoformer.msa_channel',),
    'globals.c_e': ('model.embeddings_and_evoformer.extra_msa_channel',),
    'globals.c_t': ('model.embeddings_and_evoformer.template.num_channels',),
    'globals.c_s': ('model.embeddings_and_evoformer.seq_channel',
                    'model.heads.structure_module.num_channel'),
    'model.evoformer_stack.no_blocks': ('model.embeddings_and_evoformer.evoformer_num_block',),
    'model.extra_msa.extra_msa_stack.no_blocks':
        ('model.embeddings_and_evoformer.extra_msa_stack_num_block',),
    'model.template.template_pair_stack.no_blocks':
        ('model.embeddings_and_evoformer.template.template_pair_stack.num_block',),
    'model.structure_module.no_blocks': ('model.heads.structure_module.num_layer',),
    'model.template.enabled': ('model.embeddings_and_evoformer.template.enabled',),
}


class FixtureError(JaxfoldError):
  """A fixture directory that is missing a file or does not fit what it claims."""


class UnsupportedFixtureConfig(FixtureError):
  """A fixture whose OpenFold configuration jaxfold's configuration cannot express."""


@dataclasses.dataclass(frozen=True)
class Fixture:
  """One recorded OpenFold run: manifest, inputs (OpenFold layout) and outputs."""
  path: pathlib.Path
  manifest: dict[str, Any]
  inputs: dict[str, np.ndarray]
  outputs: dict[str, np.ndarray]
  aliases: dict[str, str]

  def has(self, key: str) -> bool:
    return key in self.outputs or key in self.aliases

  def output(self, key: str) -> np.ndarray:
    """A recorded output, following output_aliases.json for values stored once."""
    resolved = self.aliases.get(key, key)
    if resolved not in self.outputs:
      raise FixtureError(f'{self.path / "outputs.npz"}: no recorded output {key!r}')
    return self.outputs[resolved]

  @property
  def num_iterations(self) -> int:
    return self.inputs['aatype'].shape[-1]


def load_fixture(path: str | pathlib.Path, *, outputs: bool = True) -> Fixture:
  """Reads a fixture directory (manifest.json, inputs.npz, outputs.npz, output_aliases.json).

  outputs: False reads only the manifest and inputs (the outputs to come from a live run).
  """
  path = pathlib.Path(path)
  needed = ('manifest.json', 'inputs.npz') + (('outputs.npz',) if outputs else ())
  missing = [n for n in needed if not (path / n).is_file()]
  if missing:
    raise FixtureError(f'{path}: not an OpenFold fixture directory, missing {", ".join(missing)}')
  manifest = json.loads((path / 'manifest.json').read_text())
  if 'state_dict' not in manifest:
    raise FixtureError(f'{path / "manifest.json"}: no key "state_dict"')
  with np.load(path / 'inputs.npz') as f:
    inputs = {k: f[k] for k in f.files}
  if not outputs:
    return Fixture(path, manifest, inputs, {}, {})
  aliases_file = path / 'output_aliases.json'
  aliases = json.loads(aliases_file.read_text()) if aliases_file.is_file() else {}
  with np.load(path / 'outputs.npz') as f:
    recorded = {k: f[k] for k in f.files}
  return Fixture(path, manifest, inputs, recorded, aliases)


# ---------------------------------------------------------------------------------------------
# Inputs: configuration, batch, weights.
# ---------------------------------------------------------------------------------------------

def fixture_config(manifest: Mapping[str, Any], source: str = 'manifest.json'
                   ) -> model_config.AlphaFoldConfig:
  """jaxfold's configuration of the OpenFold run a manifest describes.

  The manifest's `preset` is one of jaxfold's presets; its `config_changes` (OpenFold
  config keys) are translated by _CONFIG_FIELDS. Raises UnsupportedFixtureConfig naming the
  key when jaxfold's configuration cannot state a change.
  """
  name = manifest.get('preset')
  if name not in model_config.PRESETS:
    raise FixtureError(f'{source}: preset {name!r} is not one of jaxfold\'s presets')
  changes: dict[str, Any] = {}
  openfold_changes = dict(manifest.get('config_changes', {}))
  for key, value in openfold_changes.items():
    if key in _DATA_ONLY:
      continue
    if key not in _CONFIG_FIELDS:
      raise UnsupportedFixtureConfig(f'{source}: config change {key}={value!r} has no '
                                     f'jaxfold equivalent')
    changes.update({field: value for field in _CONFIG_FIELDS[key]})
  evo = 'model.embeddings_and_evoformer'
  config = model_config.preset(name)
  if any(key in openfold_changes for key in ('globals.c_m', 'globals.c_e', 'globals.c_z')):
    # OpenFold fixes each stack's attention widths where AlphaFold derives them from the
    # channels: state them, the extra-MSA stack in a block config of its own.
    config = model_config.replace(config, {
        f'{evo}.extra_msa': config.model.embeddings_and_evoformer.evoformer})
    for stack, msa_total in (('evoformer', _MSA_ATTENTION_TOTAL),
                             ('extra_msa', _EXTRA_MSA_ATTENTION_TOTAL)):
      for node, total in (('msa_row_attention_with_pair_bias', msa_total),
                          ('msa_column_attention', msa_total),
                          ('triangle_attention_starting_node', _PAIR_ATTENTION_TOTAL),
                          ('triangle_attention_ending_node', _PAIR_ATTENTION_TOTAL)):
        changes[f'{evo}.{stack}.{node}.key_dim'] = total
        changes[f'{evo}.{stack}.{node}.value_dim'] = total
  return model_config.replace(config, changes)


def batch_from_openfold(inputs: Mapping[str, np.ndarray],
                        config: model_config.ModelConfig) -> dict[str, np.ndarray]:
  """OpenFold's processed batch -> the features jaxfold's model reads, in its layout.

  OpenFold's precomputed template torsion angles are kept, and the model reads them as
  OpenFold's does (`torsion_rows` measures jaxfold's own angles against them).
  """
  try:
    return model_features(openfold_batch.from_openfold(inputs, 'inputs.npz'), config,
                          'inputs.npz')
  except ValueError as e:
    raise FixtureError(str(e)) from e


def fixture_weights(manifest: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The fixture's OpenFold state dict, regenerated by the README's rule from the names."""
  from jaxfold.convert.openfold_keys import rule_weights  # pylint: disable=import-outside-toplevel
  return rule_weights(manifest['state_dict'])


# ---------------------------------------------------------------------------------------------
# jaxfold's modules, each applied alone.
# ---------------------------------------------------------------------------------------------

def _apply(module: nn.Module, params: Any, *args) -> Any:
  return jax.tree.map(np.asarray, jax.jit(module.apply)({'params': params}, *args))


def _block(stacked: Any, index: int) -> Any:
  return jax.tree.map(lambda leaf: leaf[index], stacked)


def _block_update(evo_cfg, params, name: str, act: Mapping[str, np.ndarray],
                  masks: Mapping[str, np.ndarray]) -> np.ndarray:
  """The update of one of _BLOCK_UPDATES by jaxfold's module, built as EvoformerIteration does."""
  sub = getattr(evo_cfg.evoformer, name)
  msa, pair = act['msa'], act['pair']
  if name == 'msa_row_attention_with_pair_bias':
    module, args = MSARowAttentionWithPairBias(sub), (msa, masks['msa'], pair)
  elif name == 'msa_column_attention':
    module, args = MSAColumnAttention(sub), (msa, masks['msa'])
  elif name == 'outer_product_mean':
    module, args = OuterProductMean(evo_cfg.pair_channel, sub), (msa, masks['msa'])
  elif name == 'msa_transition':
    module, args = Transition(sub), (msa,)
  elif name == 'pair_transition':
    module, args = Transition(sub), (pair,)
  elif name.startswith('triangle_multiplication'):
    module, args = TriangleMultiplication(sub), (pair, masks['pair'])
  else:
    module, args = TriangleAttention(sub), (pair, masks['pair'])
  return _apply(module, params, *args)


def _run_blocks(evo_cfg, stacked, start: int, stop: int, activations, masks,
                is_extra_msa: bool) -> dict[str, np.ndarray]:
  """Blocks start..stop-1 of a stack applied one after another."""
  block_cfg = (evo_cfg.extra_msa or evo_cfg.evoformer) if is_extra_msa else evo_cfg.evoformer
  apply = jax.jit(EvoformerIteration(block_cfg, is_extra_msa).apply)
  for index in range(start, stop):
    activations = apply({'params': _block(stacked, index)}, activations, masks)
  return jax.tree.map(np.asarray, activations)


def _template_attention(template_cfg, params, query: np.ndarray, template_pair: np.ndarray,
                        templates: Mapping[str, np.ndarray], mask_2d: np.ndarray) -> np.ndarray:
  """TemplateEmbedding's pointwise attention (Alg. 17) over given template embeddings.

  The embeddings [T, N_res, N_res, c_t] replace SingleTemplateEmbedding's output through
  a method interceptor; each template finds its own by the index carried in its
  (otherwise unread) template_aatype.
  """
  num_templates, num_res = template_pair.shape[:2]
  indexed = dict(templates, template_aatype=np.broadcast_to(
      np.arange(num_templates, dtype=np.int32)[:, None], (num_templates, num_res)))

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, SingleTemplateEmbedding) and context.method_name == '__call__':
      return jnp.take(jnp.asarray(template_pair), args[0]['template_aatype'][0], axis=0)
    return next_fun(*args, **kwargs)

  def run(p, q, t, m):
    with nn.intercept_methods(interceptor):
      return TemplateEmbedding(template_cfg).apply({'params': p}, q, t, m)
  return np.asarray(jax.jit(run)(params, query, indexed, mask_2d))


def _atom37(atom14: np.ndarray, batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """OpenFold's final_atom_positions from its last layer's atom14 positions."""
  exists = batch['atom37_atom_exists']
  return np.asarray(all_atom.atom14_to_atom37(atom14, batch['residx_atom37_to_atom14'], exists)
                    * exists[..., None])


def _split_7(frames: np.ndarray) -> dict[str, np.ndarray]:
  """[..., 7] frames (unit quaternion, real part first, then translation) in their parts."""
  return {'quaternion': frames[..., :4], 'translation': frames[..., 4:]}


# ---------------------------------------------------------------------------------------------
# The comparisons.
# ---------------------------------------------------------------------------------------------

def torsion_rows(fixture: Fixture, batch: Mapping[str, np.ndarray]) -> list[Row]:
  """jaxfold's template torsion angles from the template atoms against OpenFold's features.

  Angles are compared where OpenFold's mask says they are defined. An undefined angle (its
  atoms absent, e.g. the pre-omega after a gap) is the direction of a zero-length vector:
  rounding noise that differs with the order of operations (compiled or eager). The model
  never has to reproduce it: it reads OpenFold's precomputed angles from the batch.
  """
  # Compiled, as inside the model.
  torsions = jax.jit(all_atom.atom37_to_torsion_angles)(
      batch['template_aatype'][0], batch['template_all_atom_positions'][0],
      batch['template_all_atom_masks'][0])
  ref = {k: np.moveaxis(fixture.inputs[f'template_{k}'], -1, 0)[0]
         for k in ('torsion_angles_sin_cos', 'alt_torsion_angles_sin_cos', 'torsion_angles_mask')}
  defined = ref['torsion_angles_mask'][..., None]
  ours = {k: np.asarray(torsions[k]) * (defined if k.endswith('sin_cos') else 1) for k in ref}
  ref = {k: v * (defined if k.endswith('sin_cos') else 1) for k, v in ref.items()}
  return rows('inputs/template (defined angles)', ours, ref, TORSION_TOLERANCE, 'absolute')


def iteration_rows(fixture: Fixture, cfg: model_config.ModelConfig, tree: Mapping[str, Any],
                   batch: Mapping[str, np.ndarray], iteration: int,
                   progress: Callable[[str], None] = lambda _: None) -> list[Row]:
  """Every recorded module of one recycling iteration, each fed its recorded inputs."""
  evo_cfg = cfg.embeddings_and_evoformer
  evo = tree['alphafold_iteration']['evoformer']
  prefix = f'iter{iteration}/'
  rec = lambda key: fixture.output(prefix + key)
  member = {k: v[iteration] for k, v in batch.items()}
  num_res = member['aatype'].shape[0]
  mask_2d = member['seq_mask'][:, None] * member['seq_mask'][None, :]
  table: list[Row] = []

  progress(prefix + 'embedders')
  msa, pair = _apply(InputEmbedder(evo_cfg.msa_channel, evo_cfg.pair_channel,
                                   evo_cfg.max_relative_feature), evo,
                     member['target_feat'], member['msa_feat'], member['residue_index'])
  table += rows(prefix + 'input_embedder', [msa, pair],
                [rec('input_embedder/0'), rec('input_embedder/1')], MODULE_TOLERANCE)

  if iteration == 0:
    prev = initial_prev(num_res, cfg)
  else:
    last = f'iter{iteration - 1}/'
    prev = {'prev_pos': _atom37(fixture.output(last + 'structure_module/positions')[-1], member),
            'prev_msa_first_row': fixture.output(last + 'evoformer/0')[0],
            'prev_pair': fixture.output(last + 'evoformer/1')}
  # With zero MSA and pair the embedder returns its updates, which OpenFold records.
  msa_update, pair_update = _apply(
      RecyclingEmbedder(evo_cfg.pair_channel, evo_cfg.prev_pos, evo_cfg.recycle_pos,
                        evo_cfg.recycle_features), evo,
      np.zeros((1, num_res, evo_cfg.msa_channel), np.float32), np.zeros_like(pair),
      member['aatype'], prev['prev_pos'], prev['prev_msa_first_row'], prev['prev_pair'])
  table += rows(prefix + 'recycling_embedder', [msa_update[0], pair_update],
                [rec('recycling_embedder/0'), rec('recycling_embedder/1')], MODULE_TOLERANCE)
  pair_in = rec('input_embedder/1') + rec('recycling_embedder/1')
  msa_in = rec('input_embedder/0').copy()
  msa_in[0] += rec('recycling_embedder/0')
  msa_mask = member['msa_mask']

  if evo_cfg.template.enabled:
    table += _template_rows(fixture, evo_cfg, evo['template_embedding'], member, pair_in,
                            mask_2d, prefix, progress)
    pair_in = pair_in + rec('template_embedder.template_pointwise_att')
    templates = {k: v for k, v in member.items() if k.startswith('template_')}
    rows_out, rows_mask = _apply(TemplateTorsionEmbedder(evo_cfg.msa_channel), evo, templates)
    table += rows(prefix + 'template_embedder.template_single_embedder', rows_out,
                  rec('template_embedder.template_single_embedder'), MODULE_TOLERANCE)
    msa_in = np.concatenate([msa_in, rec('template_embedder.template_single_embedder')])
    msa_mask = np.concatenate([msa_mask, rows_mask])

  progress(prefix + 'extra-MSA stack')
  extra = _apply(ExtraMsaEmbedder(evo_cfg.extra_msa_channel), evo, member['extra_msa'],
                 member['extra_has_deletion'], member['extra_deletion_value'])
  table += rows(prefix + 'extra_msa_embedder', extra, rec('extra_msa_embedder'), MODULE_TOLERANCE)
  out = _run_blocks(evo_cfg, evo['extra_msa_stack'], 0, evo_cfg.extra_msa_stack_num_block,
                    {'msa': rec('extra_msa_embedder'), 'pair': pair_in},
                    {'msa': member['extra_msa_mask'], 'pair': mask_2d}, True)
  table += rows(prefix + 'extra_msa_stack', out['pair'], rec('extra_msa_stack'), MODULE_TOLERANCE)

  table += _evoformer_rows(fixture, evo_cfg, evo, {'msa': msa_in, 'pair': rec('extra_msa_stack')},
                           {'msa': msa_mask, 'pair': mask_2d}, prefix, progress)
  single = _apply(Linear(evo_cfg.seq_channel), evo['single_activations'], rec('evoformer/0')[0])
  table += rows(prefix + 'evoformer/2', single, rec('evoformer/2'), MODULE_TOLERANCE)

  progress(prefix + 'structure module')
  table += _structure_rows(cfg, tree['alphafold_iteration']['structure_module'],
                           {'single': rec('evoformer/2'), 'pair': rec('evoformer/1')}, member,
                           lambda key: rec('structure_module/' + key), prefix + 'structure_module')
  return table


def _template_rows(fixture: Fixture, evo_cfg, params, member, query, mask_2d, prefix,
                   progress) -> list[Row]:
  """The template pair embedder, pair stack and pointwise attention."""
  progress(prefix + 'templates')
  rec = lambda key: fixture.output(prefix + 'template_embedder.' + key)
  cfg = evo_cfg.template
  templates = {k: member[k] for k in TEMPLATE_PAIR_FEATURES}
  single = params['single_template_embedding']
  num_templates = member['template_aatype'].shape[0]
  # OpenFold embeds the templates one at a time; its hook kept the last call's output.
  last = {k: v[num_templates - 1] for k, v in templates.items()}
  features = template_pair_features(last, cfg.dgram_features, cfg.use_template_unit_vector)
  embedded = _apply(Linear(rec('template_pair_embedder').shape[-1], initializer='relu'),
                    single['embedding2d'], features)
  table = rows(prefix + 'template_embedder.template_pair_embedder', embedded,
               rec('template_pair_embedder'), MODULE_TOLERANCE)
  # Only the last template's stack input is recorded: the stack row is jaxfold's whole
  # embedding of each template from its features (pair features, embedder, stack, LayerNorm).
  embed = jax.jit(SingleTemplateEmbedding(cfg).apply)
  stacked = np.stack([embed({'params': single}, {k: v[t] for k, v in templates.items()}, mask_2d)
                      for t in range(num_templates)])
  table += rows(prefix + 'template_embedder.template_pair_stack', stacked,
                rec('template_pair_stack'), MODULE_TOLERANCE)
  attended = _template_attention(cfg, params, query, rec('template_pair_stack'),
                                 {**templates, 'template_mask': member['template_mask']}, mask_2d)
  table += rows(prefix + 'template_embedder.template_pointwise_att', attended,
                rec('template_pointwise_att'), MODULE_TOLERANCE)
  return table


def _evoformer_rows(fixture: Fixture, evo_cfg, evo, inputs, masks, prefix, progress
                    ) -> list[Row]:
  """Block 0's sub-modules, then each recorded block fed the previous recorded block."""
  rec = lambda key: fixture.output(prefix + key)
  stacked = evo['evoformer_iteration']
  block0 = _block(stacked, 0)
  progress(prefix + 'Evoformer block 0 sub-modules')
  act = dict(inputs)
  table: list[Row] = []
  for openfold_name, stream, name, recorded_as in _BLOCK_UPDATES:
    key = f'evoformer.blocks.0.{openfold_name}'
    if not fixture.has(prefix + key):
      continue
    update = _block_update(evo_cfg, block0[name], name, act, masks)
    if recorded_as == 'updated':
      table += rows(f'{prefix}{key} (input + update)', act[stream] + update, rec(key),
                    MODULE_TOLERANCE)
      act[stream] = rec(key)
    else:
      ref = rec(key)
      if recorded_as == 'update_transposed':
        ref = np.swapaxes(ref, 0, 1)
      table += rows(prefix + key, update, ref, MODULE_TOLERANCE)
      act[stream] = act[stream] + ref

  recorded = [i for i in range(evo_cfg.evoformer_num_block)
              if fixture.has(f'{prefix}evoformer.blocks.{i}/0')]
  start, act = 0, dict(inputs)
  for index in recorded:
    progress(f'{prefix}Evoformer blocks {start}-{index}')
    out = _run_blocks(evo_cfg, stacked, start, index + 1, act, masks, False)
    label = f'evoformer.blocks.{index}'
    if index > start:  # the preceding block is not recorded: a stretch of blocks
      label += f' (blocks {start}-{index} fed block {start - 1})'
    key = f'evoformer.blocks.{index}'
    table += rows(prefix + label, [out['msa'], out['pair']], [rec(key + '/0'), rec(key + '/1')],
                  MODULE_TOLERANCE)
    start, act = index + 1, {'msa': rec(key + '/0'), 'pair': rec(key + '/1')}
  return table


def _structure_module(cfg: model_config.ModelConfig, params, representations, member
                      ) -> tuple[dict[str, Any], np.ndarray]:
  """jaxfold's structure module, and its single state after each layer [L, N_res, c_s].

  jaxfold returns only the last layer's state; the others are copied out of the running
  layer loop by a method interceptor on FoldIteration.
  """
  states: list[np.ndarray] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, FoldIteration) and context.method_name == '__call__':
      jax.debug.callback(lambda act: states.append(np.asarray(act)), out[0], ordered=True)
    return out

  def run(p, reps, batch):
    with nn.intercept_methods(interceptor):
      return StructureModule(cfg.heads.structure_module).apply({'params': p}, reps, batch)
  out = jax.tree.map(np.asarray, jax.jit(run)(params, representations, member))
  jax.effects_barrier()
  return out, np.stack(states)


def _structure_rows(cfg: model_config.ModelConfig, params, representations, member,
                    rec: Callable[[str], np.ndarray], name: str) -> list[Row]:
  """The structure module's per-layer outputs against OpenFold's `sm` dict."""
  out, states = _structure_module(cfg, params, representations, member)
  side = out['sidechains']
  # Quaternion and translation apart: the translations' Å scale would hide rotation errors.
  ours = {'frames': _split_7(out['traj']), 'positions': side['atom_pos'],
          'angles': side['angles_sin_cos'],
          'unnormalized_angles': side['unnormalized_angles_sin_cos'],
          'sidechain_frames': Rigid.from_tensor_flat12(side['frames']).to_tensor_4x4(),
          'states': states,
          'single': out['representations']['structure_module']}
  ref = {k: rec(k) for k in ours}
  ref['frames'] = _split_7(ref['frames'])
  return rows(name, ours, ref, MODULE_TOLERANCE)


def head_rows(fixture: Fixture, cfg: model_config.ModelConfig, tree: Mapping[str, Any],
              seq_mask: np.ndarray) -> list[Row]:
  """The heads fed the recorded final representations; confidence from the recorded logits."""
  h, iteration = cfg.heads, tree['alphafold_iteration']
  rec = lambda key: fixture.output('final/' + key)
  heads = (('masked_msa_logits', MaskedMsaHead(h.masked_msa), 'masked_msa_head', 'msa'),
           ('distogram_logits', DistogramHead(h.distogram), 'distogram_head', 'pair'),
           ('experimentally_resolved_logits',
            ExperimentallyResolvedHead(h.experimentally_resolved),
            'experimentally_resolved_head', 'single'),
           ('lddt_logits', PredictedLddtHead(h.predicted_lddt), 'predicted_lddt_head',
            'sm/single'),
           ('tm_logits', PredictedAlignedErrorHead(h.predicted_aligned_error),
            'predicted_aligned_error_head', 'pair'))
  table: list[Row] = []
  prediction = {}
  for key, module, scope, source in heads:
    if scope in iteration and fixture.has('final/' + key):
      out = _apply(module, iteration[scope], rec(source))
      table += rows(f'final/{key} (head fed final/{source})', out['logits'], rec(key),
                    MODULE_TOLERANCE)
      # The confidence metrics below read OpenFold's own logits.
      prediction[scope.removesuffix('_head')] = {**out, 'logits': rec(key)}
  metrics = jax.tree.map(np.asarray, confidence_metrics(prediction, mask=seq_mask))
  for ours, key in (('plddt', 'plddt'), ('aligned_confidence_probs', 'aligned_confidence_probs'),
                    ('predicted_aligned_error', 'predicted_aligned_error'),
                    ('max_predicted_aligned_error', 'max_predicted_aligned_error'),
                    ('ptm', 'ptm_score')):
    if ours in metrics and fixture.has('final/' + key):
      table += rows(f'final/{key} (from final logits)', metrics[ours], rec(key), MODULE_TOLERANCE)
  return table


def end_to_end_rows(fixture: Fixture, ours: Mapping[str, Any]) -> list[Row]:
  """jaxfold's whole model after the recycling iterations against final/*.

  Geometry and confidence carry issue #6's absolute tolerances; the representations,
  logits and per-layer structure outputs are measured and reported.
  """
  rec = lambda key: fixture.output('final/' + key)
  reps, sm = ours['representations'], ours['structure_module']
  table = rows('end to end/final_atom_positions', sm['final_atom_positions'],
               rec('final_atom_positions'), END_TO_END['final_atom_positions'], 'absolute')
  conf = ours['confidence']
  for name, key in (('plddt', 'plddt'), ('predicted_aligned_error', 'predicted_aligned_error'),
                    ('ptm', 'ptm_score')):
    if name in conf:
      table += rows(f'end to end/{key}', conf[name], rec(key), END_TO_END[name], 'absolute')
  measured = {'msa': reps['msa'], 'pair': reps['pair'], 'single': reps['single'],
              'sm/single': reps['structure_module'], 'sm/frames': sm['traj'],
              'sm/positions': sm['sidechains']['atom_pos'],
              'lddt_logits': ours['predicted_lddt']['logits'],
              'distogram_logits': ours['distogram']['logits'],
              'masked_msa_logits': ours['masked_msa']['logits'],
              'experimentally_resolved_logits': ours['experimentally_resolved']['logits']}
  if 'predicted_aligned_error' in ours:
    measured['tm_logits'] = ours['predicted_aligned_error']['logits']
  for key, value in measured.items():
    table += rows(f'end to end/{key}', value, rec(key), None)
  return table


def compare(fixture_dir: str | pathlib.Path, state_dict: Mapping[str, np.ndarray] | None = None,
            *, live: bool = False, end_to_end: bool = True,
            progress: Callable[[str], None] = lambda _: None) -> Comparison:
  """jaxfold with OpenFold's weights against a recorded OpenFold run, every row.

  Args:
    fixture_dir: a fixture directory (see the module docstring).
    state_dict: OpenFold's weights (numpy, OpenFold key names); by default regenerated
      from the manifest by the fixture's rule.
    live: run OpenFold itself on the fixture's inputs and weights, its modules recorded with
      hooks (`openfold_live`, needs the openfold package), instead of reading outputs.npz.
    end_to_end: also run the whole model (the slowest part at full size).
    progress: called with a line before each stage.
  """
  from jaxfold.convert.openfold_keys import from_openfold  # pylint: disable=import-outside-toplevel
  seconds: dict[str, float] = {}
  clock = time.perf_counter()
  fixture = load_fixture(fixture_dir, outputs=not live)
  cfg = fixture_config(fixture.manifest, str(fixture.path / 'manifest.json'))
  batch = batch_from_openfold(fixture.inputs, cfg.model)
  if state_dict is None:
    progress('weights: regenerated from the manifest\'s names')
    state_dict = fixture_weights(fixture.manifest)
  tree = from_openfold(state_dict, cfg.model, str(fixture.path))
  seconds['inputs'] = time.perf_counter() - clock
  reference = f'OpenFold (recorded in {fixture.path})'
  if live:
    from jaxfold.parity import openfold_live  # pylint: disable=import-outside-toplevel
    clock = time.perf_counter()
    progress('OpenFold live, its modules recorded with hooks')
    recorded, aliases = openfold_live.record_outputs(fixture.manifest, fixture.inputs,
                                                     state_dict)
    fixture = dataclasses.replace(fixture, outputs=recorded, aliases=aliases)
    reference = f'OpenFold (live, on the inputs of {fixture.path})'
    seconds['openfold'] = time.perf_counter() - clock

  clock = time.perf_counter()
  table = torsion_rows(fixture, batch) if cfg.model.embeddings_and_evoformer.template.enabled \
      else []
  for iteration in range(fixture.num_iterations):
    if fixture.has(f'iter{iteration}/input_embedder/0'):
      table += iteration_rows(fixture, cfg.model, tree, batch, iteration, progress)
  table += head_rows(fixture, cfg.model, tree, batch['seq_mask'][0])
  seconds['modules'] = time.perf_counter() - clock

  if end_to_end:
    clock = time.perf_counter()
    num_recycle = fixture.num_iterations - 1
    progress(f'jaxfold end to end: {num_recycle + 1} iterations')
    ours = run_jaxfold(cfg.model, tree, batch, num_recycle)
    table += end_to_end_rows(fixture, ours)
    seconds['end_to_end'] = time.perf_counter() - clock
  return Comparison(reference, fixture.manifest['preset'], fixture.num_iterations - 1, batch['aatype'].shape[1], table, seconds)
