"""Template embedding: template pair features, their pair stack, pointwise attention, and
the template torsion-angle rows of the MSA.

Jumper et al. (2021) Suppl. Alg. 2 'Inference' lines 7-13: template torsion features
embedded as extra MSA rows (lines 7-8), each template's pair features through the
TemplatePairStack (lines 9-11, Alg. 16), and Suppl. Alg. 17 'TemplatePointwiseAttention'
from the pair representation to the templates (line 12).

Shapes: query pair [N_res, N_res, c_z]; template features with a leading template axis T
(template_aatype [T, N_res], template_all_atom_positions [T, N_res, 37, 3], ...); outputs
the pair update [N_res, N_res, c_z] and the template MSA rows [T, N_res, c_m].
"""

import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.common import residue_constants
from jaxfold.common.geometry import Rigid, Rot3, Vec3
from jaxfold.common.all_atom import atom37_to_torsion_angles
from jaxfold.model import attention_core
from jaxfold.model.attention import Attention
from jaxfold.model.embedders import DgramConfig, ParentScoped, dgram_from_positions
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import (LayerNorm, Linear, chunk_offsets, chunk_starts, chunked,
                                       is_chunked, map_chunks, mask_to_bias, put_chunk,
                                       take_chunk)
from jaxfold.model.template_pair_stack import TemplatePairStack, TemplatePairStackConfig

# Template residue types: 20 amino acids, unknown and gap.
_TEMPLATE_AATYPE_CLASSES = 22

# The per-template features that TemplateEmbedding maps SingleTemplateEmbedding over.
TEMPLATE_PAIR_FEATURES = ('template_aatype', 'template_all_atom_positions',
                          'template_all_atom_masks', 'template_pseudo_beta',
                          'template_pseudo_beta_mask')

# Template torsion angles as OpenFold's data pipeline precomputes them, each with the
# prefix 'template_' in a batch; optional (see `template_torsion_angles`).
TORSION_FEATURES = ('torsion_angles_sin_cos', 'alt_torsion_angles_sin_cos',
                    'torsion_angles_mask')


@dataclasses.dataclass(frozen=True)
class TemplateAttentionConfig:
  """AlphaFold's `template.attention`; key_dim / value_dim are totals over heads."""
  gating: bool = False
  key_dim: int = 64
  num_head: int = 4
  value_dim: int = 64


@dataclasses.dataclass(frozen=True)
class TemplateConfig:
  """AlphaFold's `embeddings_and_evoformer.template` config.

  `subbatch_size` chunks the pointwise attention's N_res^2 queries; as in AlphaFold it
  applies only in low-memory mode, which here is `global_config.subbatch_size` being set.
  `use_template_unit_vector` False zeroes the unit-vector features, as every AlphaFold
  monomer preset does. `num_channels` is the template pair width c_t; None takes AlphaFold's
  (the ending-node triangle attention's value width, 64), OpenFold sets it on its own.
  """
  attention: TemplateAttentionConfig = TemplateAttentionConfig()
  dgram_features: DgramConfig = DgramConfig(min_bin=3.25, max_bin=50.75, num_bins=39)
  embed_torsion_angles: bool = False
  enabled: bool = False
  template_pair_stack: TemplatePairStackConfig = TemplatePairStackConfig()
  max_templates: int = 4
  subbatch_size: int = 128
  use_template_unit_vector: bool = False
  num_channels: int | None = None


def template_pair_features(template: Mapping[str, jax.Array], dgram_features: DgramConfig,
                           use_template_unit_vector: bool,
                           rows: Mapping[str, jax.Array] | None = None) -> jax.Array:
  """The 88 pair features of one template (Suppl. Alg. 2 line 9), as [N_res, N_res, 88].

  In order: distogram of pseudo-β positions (39), pseudo-β mask 2-D (1), residue j and
  residue i one-hot (22 + 22), unit vector from residue i's backbone frame to residue j's
  Cα (3), backbone mask 2-D (1); everything is zeroed where either backbone is missing.
  `template` holds one template's TEMPLATE_PAIR_FEATURES (no template axis); `rows` (default:
  `template`) the same for a chunk of R residues i, whose rows [R, N_res, 88] are returned.
  """
  rows = template if rows is None else rows
  num_rows, num_res = rows['template_aatype'].shape[0], template['template_aatype'].shape[0]
  dgram = dgram_from_positions(template['template_pseudo_beta'], dgram_features,
                               rows['template_pseudo_beta'])
  aatype, aatype_rows = (jax.nn.one_hot(t['template_aatype'], _TEMPLATE_AATYPE_CLASSES)
                         for t in (template, rows))

  n, ca, c = (residue_constants.atom_order[a] for a in ('N', 'CA', 'C'))

  def atoms_and_backbone_mask(t):
    positions = t['template_all_atom_positions'].astype(jnp.float32)
    atom_mask = t['template_all_atom_masks']
    return (lambda i: Vec3.from_array(positions[:, i]),
            atom_mask[:, n] * atom_mask[:, ca] * atom_mask[:, c])

  (atom, backbone_mask), (atom_rows, backbone_mask_rows) = map(atoms_and_backbone_mask,
                                                               (template, rows))
  # AlphaFold's template frame: Cα at the origin, C on the +x axis, N in the xy-plane.
  frames = Rigid(Rot3.from_two_vectors(atom_rows(c) - atom_rows(ca),
                                       atom_rows(n) - atom_rows(ca)), atom_rows(ca))
  local = frames.map(lambda a: a[:, None]).apply_inverse(atom(ca).map(lambda a: a[None, :]))
  backbone_mask_2d = backbone_mask_rows[:, None] * backbone_mask[None, :]
  if use_template_unit_vector:
    inv_distance = jax.lax.rsqrt(1e-6 + local.dot(local)) * backbone_mask_2d
    unit_vector = (local * inv_distance).to_array()
  else:
    unit_vector = jnp.zeros((num_rows, num_res, 3), jnp.float32)

  pb_mask_2d = (rows['template_pseudo_beta_mask'][:, None]
                * template['template_pseudo_beta_mask'][None, :])
  features = jnp.concatenate([
      dgram,
      pb_mask_2d[..., None],
      jnp.broadcast_to(aatype[None, :, :], (num_rows,) + aatype.shape),
      jnp.broadcast_to(aatype_rows[:, None, :], (num_rows, num_res, aatype.shape[-1])),
      unit_vector,
      backbone_mask_2d[..., None],
  ], axis=-1)
  # Regions without a template backbone would otherwise carry arbitrary distogram values.
  return features * backbone_mask_2d[..., None]


class SingleTemplateEmbedding(nn.Module):
  """One template's pair embedding (Suppl. Alg. 2 lines 9 and 11).

  Inputs: one template's TEMPLATE_PAIR_FEATURES (no template axis), mask_2d [N_res, N_res]
  (residue padding, not template coverage). Output [N_res, N_res, c_t]: the features
  through `embedding2d`, the TemplatePairStack and `output_layer_norm`.
  """
  config: TemplateConfig = TemplateConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, template: Mapping[str, jax.Array], mask_2d: jax.Array,
               deterministic: bool = True) -> jax.Array:
    c = self.config
    dtype = self.global_config.compute_dtype
    num_channels = c.num_channels or c.template_pair_stack.triangle_attention_ending_node.value_dim
    embedding2d = Linear(num_channels, initializer='relu', name='embedding2d')

    def embed_rows(_, *row_features):  # with `pair_chunk_size`, no whole [N, N, 88] features
      features = template_pair_features(template, c.dgram_features, c.use_template_unit_vector,
                                        dict(zip(template, row_features)))
      return embedding2d(features.astype(dtype))

    act = chunked(self, embed_rows, self.global_config.pair_chunk_size, list(template.values()))
    act = TemplatePairStack(c.template_pair_stack, self.global_config,
                            name='template_pair_stack')(act, mask_2d.astype(dtype), deterministic)
    return LayerNorm(name='output_layer_norm')(act)


class TemplateEmbedding(nn.Module):
  """All templates embedded and attended to from the pair (Suppl. Alg. 2 lines 9-12, Alg. 17).

  Inputs: query_embedding [N_res, N_res, c_z], templates: TEMPLATE_PAIR_FEATURES with a
  leading axis T plus template_mask [T], mask_2d [N_res, N_res]. Output: the pair update
  [N_res, N_res, c_z], zero when no template exists; with `add_to_input`, query_embedding +
  update (added in place chunk by chunk when `pair_chunk_size` is set).

  The templates share one SingleTemplateEmbedding (one set of weights, and as in AlphaFold
  the same dropout masks). With `global_config.subbatch_size` set they are embedded one
  at a time, which bounds memory without changing the result; with `pair_chunk_size` set
  they are also never stacked (`_streamed`).
  """
  config: TemplateConfig = TemplateConfig()
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, query_embedding: jax.Array, templates: Mapping[str, jax.Array],
               mask_2d: jax.Array, deterministic: bool = True, add_to_input: bool = False
               ) -> jax.Array:
    c, gc = self.config, self.global_config
    # Without any template the update is exactly zero (and so is its gradient).
    any_template = (jnp.sum(templates['template_mask']) > 0).astype(query_embedding.dtype)
    dtype = query_embedding.dtype
    num_res, _, query_channels = query_embedding.shape
    template_mask = templates['template_mask'].astype(dtype)
    num_templates = template_mask.shape[0]
    single = SingleTemplateEmbedding(c, gc, name='single_template_embedding')
    attention_gc = dataclasses.replace(
        gc, subbatch_size=c.subbatch_size if gc.subbatch_size else None)
    attention = Attention(num_head=c.attention.num_head, output_dim=query_channels,
                          key_dim=c.attention.key_dim, value_dim=c.attention.value_dim,
                          gating=c.attention.gating, global_config=attention_gc,
                          name='attention')
    features = [templates[k] for k in TEMPLATE_PAIR_FEATURES]
    chunk = gc.pair_chunk_size
    if is_chunked(chunk, num_res) and not self.is_initializing():
      return self._streamed(single, features, template_mask, query_embedding, mask_2d,
                            deterministic, any_template, add_to_input)
    embed_all = nn.vmap(
        lambda mdl, feats: mdl(dict(zip(TEMPLATE_PAIR_FEATURES, feats)), mask_2d,
                               deterministic),
        in_axes=0, variable_axes={'params': None},
        split_rngs={'params': False, 'dropout': False})
    template_pair = chunked(self, lambda _, *feats: embed_all(single, feats),
                            1 if gc.subbatch_size else None, features)
    mask_bias = mask_to_bias(template_mask, dtype)

    def rows(_, query_rows: jax.Array, template_rows: jax.Array) -> jax.Array:
      # query_rows [r, N, c_z]; template_rows [r, T, N, c_t]: one query per pair position.
      r = query_rows.shape[0]
      flat_query = query_rows.reshape(r * num_res, 1, query_channels)
      flat_templates = jnp.moveaxis(template_rows, 1, 2).reshape(
          r * num_res, num_templates, template_rows.shape[-1])
      bias = jnp.broadcast_to(mask_bias, (r * num_res, 1, 1, num_templates))
      return attention(flat_query, flat_templates, bias).reshape(r, num_res, query_channels)

    embedding = chunked(self, rows, chunk, [query_embedding, template_pair], axis=(0, 1))
    embedding = embedding * any_template
    return query_embedding + embedding if add_to_input else embedding

  def _streamed(self, single: nn.Module, features: list[jax.Array], template_mask: jax.Array,
                query: jax.Array, mask_2d: jax.Array, deterministic: bool,
                any_template: jax.Array, add_to_input: bool) -> jax.Array:
    """Alg. 17 with the templates embedded one at a time and never stacked.

    The softmax over templates is computed online (`attention_core`'s 'chunked' way, over
    templates): after each template, every pair position keeps its running maximum logit,
    sum of exponentials and weighted sum of values per head, in float32, updated `chunk`
    pair rows at a time. Only one template's pair exists at a time; with `add_to_input` the
    result is added into the query in place. The running state starts from the first
    template's logits and values, not from constants, which XLA would keep alive from the
    start of the program.
    """
    c, gc = self.config, self.global_config
    p = self.variables['params']['attention']
    num_res, chunk = query.shape[0], gc.pair_chunk_size
    key_dim = c.attention.key_dim // c.attention.num_head
    num_chunks, start_of = chunk_starts(num_res, chunk)
    w = lambda name: p[name].astype(query.dtype)
    f32 = jnp.float32

    def logits_and_values(start, template_pair, bias):  # [r, N, heads], [r, N, heads, d]
      rows = lambda x: take_chunk(x, start, chunk, 0)
      pair_rows = rows(template_pair)
      q = jnp.einsum('rnc,chd->rnhd', rows(query), w('query_w')) * key_dim**-0.5
      k = jnp.einsum('rnc,chd->rnhd', pair_rows, w('key_w'))
      v = jnp.einsum('rnc,chd->rnhd', pair_rows, w('value_w')).astype(f32)
      logits = jnp.einsum('rnhd,rnhd->rnh', q, k).astype(f32) + bias
      return jnp.clip(logits, -attention_core.LOGIT_CLIP, attention_core.LOGIT_CLIP), v

    def first_state(template_pair, bias):  # after one template: its logits, exp(0) = 1, values
      def rows(start):
        logits, v = logits_and_values(start, template_pair, bias)
        return logits, jnp.ones_like(logits), v
      return map_chunks(rows, num_res, chunk)

    def accumulate(carry, template_pair, bias):
      def body(i, carry):
        start = start_of(i)
        logits, v = logits_and_values(start, template_pair, bias)
        top, total, acc = (take_chunk(x, start, chunk, 0) for x in carry)
        # One template is a block of one key per pair position and head.
        updated = attention_core.online_softmax_step(top, total, acc, logits[..., None],
                                                     lambda p: p * v)
        # The last chunk overlaps the one before: its first rows are already updated.
        fresh = (chunk_offsets(start, chunk, num_res) >= i * chunk)[:, None, None]
        return tuple(put_chunk(x, jnp.where(fresh[(...,) + (None,) * (y.ndim - 3)], y, old),
                               start, 0)
                     for x, y, old in zip(carry, updated, (top, total, acc)))
      return jax.lax.fori_loop(0, num_chunks, body, carry)

    def embed(feats):
      return single(dict(zip(TEMPLATE_PAIR_FEATURES, feats)), mask_2d, deterministic)

    def step(mdl, carry, xs):
      *feats, bias = xs
      return accumulate(carry, embed(feats), bias), None

    biases = mask_to_bias(template_mask, f32)
    carry = first_state(embed([x[0] for x in features]), biases[0])
    if len(biases) > 1:
      scan = nn.scan(step, variable_broadcast='params',
                     split_rngs={'params': False, 'dropout': False})
      carry, _ = scan(self, carry, ([x[1:] for x in features] + [biases[1:]]))
    _, total, acc = carry

    def output(_, query_rows, acc_rows, total_rows):
      values = (acc_rows / total_rows[..., None]).astype(query.dtype)
      if c.attention.gating:
        gate = jnp.einsum('rnc,chd->rnhd', query_rows, w('gating_w'))
        values = values * jax.nn.sigmoid(gate + w('gating_b'))
      update = (jnp.einsum('rnhd,hdo->rno', values, w('output_w')) + w('output_b')) * any_template
      return query_rows + update if add_to_input else update

    return chunked(self, output, chunk, [query, acc, total], in_place=add_to_input)


def template_torsion_angles(templates: Mapping[str, jax.Array],
                            placeholder_for_undefined: bool = False) -> dict[str, jax.Array]:
  """The templates' torsion angles: precomputed features when given, else from their atoms.

  AlphaFold computes them inside the model from `template_aatype`,
  `template_all_atom_positions` and `template_all_atom_masks`; OpenFold's data pipeline
  computes them beforehand as `template_torsion_angles_sin_cos` [T, N_res, 7, 2],
  `template_alt_torsion_angles_sin_cos` and `template_torsion_angles_mask` [T, N_res, 7].
  A batch holding those three is read as it is, so the model sees the numbers OpenFold's
  model sees. This matters for angles whose atoms are absent (e.g. the pre-omega after a
  gap): their mask is 0 but their sin/cos still enter the features, and being the angle of
  a zero-length vector they are rounding noise that differs between implementations.
  Returns 'torsion_angles_sin_cos', 'alt_torsion_angles_sin_cos', 'torsion_angles_mask'.
  """
  if all(f'template_{k}' in templates for k in TORSION_FEATURES):
    return {k: templates[f'template_{k}'] for k in TORSION_FEATURES}
  return atom37_to_torsion_angles(
      templates['template_aatype'], templates['template_all_atom_positions'],
      templates['template_all_atom_masks'], placeholder_for_undefined=placeholder_for_undefined)


class TemplateTorsionEmbedder(ParentScoped):
  """Template torsion angles as extra MSA rows (Suppl. Alg. 2 lines 7-8).

  Inputs: the template features, template_aatype [T, N_res] and either the atoms
  (template_all_atom_positions [T, N_res, 37, 3], template_all_atom_masks [T, N_res, 37])
  or precomputed torsion angles (see `template_torsion_angles`). Outputs: rows
  [T, N_res, msa_channel] and their mask [T, N_res] (the ψ-angle mask: it depends only on
  one residue's backbone).
  Features (57): aatype one-hot (22), torsion sin/cos (14), alternative torsion sin/cos
  (14), torsion mask (7). Its layers sit in the parent's scope, as in AlphaFold.
  """
  msa_channel: int = 256
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, templates: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    gc = self.global_config
    template_aatype = templates['template_aatype']
    num_templates, num_res = template_aatype.shape
    torsions = template_torsion_angles(templates, placeholder_for_undefined=not gc.zero_init)
    features = jnp.concatenate([
        jax.nn.one_hot(template_aatype, _TEMPLATE_AATYPE_CLASSES),
        torsions['torsion_angles_sin_cos'].reshape(num_templates, num_res, 14),
        torsions['alt_torsion_angles_sin_cos'].reshape(num_templates, num_res, 14),
        torsions['torsion_angles_mask'],
    ], axis=-1).astype(gc.compute_dtype)
    act = Linear(self.msa_channel, initializer='relu', name='template_single_embedding')(features)
    act = Linear(self.msa_channel, initializer='relu',
                 name='template_projection')(jax.nn.relu(act))
    psi_mask = torsions['torsion_angles_mask'][:, :, 2]
    return act, psi_mask.astype(gc.compute_dtype)
