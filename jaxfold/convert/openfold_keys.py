"""OpenFold's PyTorch state dict <-> jaxfold's (AlphaFold's) parameter tree: one table.

OpenFold (Ahdritz et al. 2024) implements the AlphaFold2 network of Jumper et al. (2021)
Suppl. Alg. 2-32 with torch modules, so the same weights carry other names and layouts:

- a torch Linear stores its weight as [out, in]; AlphaFold's as [in, out];
- attention projections are Linears over all heads ([H*c, C] for q/k/v/gate, [C, H*c] for the
  output); AlphaFold keeps heads as an axis ([C, H, c] and [H, c, C]);
- repeated blocks are separate modules `....blocks.{i}.`; AlphaFold stacks block i at index i
  of a leading axis;
- LayerNorm `weight` / `bias` are AlphaFold's `scale` / `offset`.

`_TABLE` below states every correspondence once, as data: rows of (OpenFold module, AlphaFold
module, kind), a kind being the parameters such a module holds and the named `_Layout` of
each. The facts are those of OpenFold's own AlphaFold importer
(openfold/utils/import_weights.py), including its one surprise: AlphaFold's incoming triangle
multiplication calls OpenFold's `b` projections `left` and its `a` projections `right`.

Which rows apply is read off the AlphaFold schema of the model configuration
(`jaxfold.convert.schema.parameter_shapes`): template rows exist only when templates are on,
the pTM row only with the predicted-aligned-error head, and block counts come from the
stacked tensors' leading axis. Every conversion is a transpose or reshape of the bytes, so
values and dtypes survive both directions exactly.

OpenFold v1 checkpoints (before the template modules moved into `template_embedder` and the
Evoformer block's `core` was split up) are read through `_V1_RENAMES`; Lightning's `model.`
and DDP/DeepSpeed's `module.` prefixes are removed by `strip_prefixes`.
"""

import dataclasses
import functools
import math
import re
import zlib
from collections.abc import Iterable, Mapping

import jax
import numpy as np

from jaxfold.convert import alphafold_npz
from jaxfold.convert.alphafold_npz import SchemaError
from jaxfold.convert.schema import parameter_shapes
from jaxfold.model import config as model_config_lib
from jaxfold.model.config import ModelConfig

_AF_PREFIX = 'alphafold/alphafold_iteration/'


@dataclasses.dataclass(frozen=True)
class _Layout:
  """How an AlphaFold tensor is laid out as an OpenFold tensor.

  input_axes: None keeps the tensor as it is apart from `flatten`; otherwise the AlphaFold
    tensor's first `input_axes` axes are a torch Linear's inputs and the rest its outputs,
    both flattened and then transposed to torch's [out, in].
  flatten: (with input_axes None) the tensor is flattened to one axis, e.g. a per-head bias.
  """
  input_axes: int | None = None
  flatten: bool = False

  def openfold_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.input_axes is not None:
      return (math.prod(shape[self.input_axes:]), math.prod(shape[:self.input_axes]))
    return (math.prod(shape),) if self.flatten else tuple(shape)

  def to_openfold(self, array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.reshape(self.openfold_shape(array.shape)[::-1]).T
                                if self.input_axes is not None else
                                array.reshape(self.openfold_shape(array.shape)))

  def to_alphafold(self, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray((array.T if self.input_axes is not None else array
                                 ).reshape(shape))


SAME = _Layout()
# torch Linear [out, in] <-> AlphaFold [in, out].
LINEAR = _Layout(input_axes=1)
# q/k/v/gate projections: [H*c, C] <-> [C, H, c].
HEADS_OUT = _Layout(input_axes=1)
# attention output projection [C, H*c] <-> [H, c, C]; outer product mean [c_z, c*c] <-> [c, c, c_z].
HEADS_IN = _Layout(input_axes=2)
# per-head bias [H*c] <-> [H, c].
HEADS_BIAS = _Layout(flatten=True)

# A module kind: (OpenFold parameter, AlphaFold parameter, layout) for each tensor it holds.
_Kind = tuple[tuple[str, str, _Layout], ...]
LINEAR_KIND: _Kind = (('weight', 'weights', LINEAR), ('bias', 'bias', SAME))
LAYER_NORM: _Kind = (('weight', 'scale', SAME), ('bias', 'offset', SAME))
# Projection of the pair to one attention bias per head (no bias term): AlphaFold keeps it in
# the attention module itself as 'feat_2d_weights' [c_z, H].
PAIR_BIAS: _Kind = (('weight', 'feat_2d_weights', LINEAR),)
ATTENTION: _Kind = (('linear_q.weight', 'query_w', HEADS_OUT),
                    ('linear_k.weight', 'key_w', HEADS_OUT),
                    ('linear_v.weight', 'value_w', HEADS_OUT),
                    ('linear_o.weight', 'output_w', HEADS_IN),
                    ('linear_o.bias', 'output_b', SAME))
GATED_ATTENTION: _Kind = ATTENTION + (('linear_g.weight', 'gating_w', HEADS_OUT),
                                      ('linear_g.bias', 'gating_b', HEADS_BIAS))
# Global column attention (Alg. 19) has one key and one value head: plain Linears.
GLOBAL_ATTENTION: _Kind = tuple(
    (of, af, LINEAR if af in ('key_w', 'value_w') else layout)
    for of, af, layout in GATED_ATTENTION)
OUTER_PRODUCT_OUTPUT: _Kind = (('weight', 'output_w', HEADS_IN), ('bias', 'output_b', SAME))
POINT_WEIGHTS: _Kind = (('head_weights', 'trainable_point_weights', SAME),)

# Rows: (OpenFold module, AlphaFold module under 'alphafold/alphafold_iteration/', kind).
_Rows = tuple[tuple[str, str, _Kind], ...]


def _pair_block(of: str) -> _Rows:
  """The pair modules of an Evoformer, extra-MSA or template pair block; `of` prefixes OpenFold's."""
  rows: list[tuple[str, str, _Kind]] = []
  for of_name, af_name in (('tri_att_start', 'triangle_attention_starting_node'),
                           ('tri_att_end', 'triangle_attention_ending_node')):
    rows += [(f'{of}{of_name}.layer_norm', f'{af_name}/query_norm', LAYER_NORM),
             (f'{of}{of_name}.linear', af_name, PAIR_BIAS),
             (f'{of}{of_name}.mha', f'{af_name}/attention', GATED_ATTENTION)]
  # AlphaFold's incoming update names OpenFold's b projections left (import_weights.py).
  for of_name, af_name, left, right in (('tri_mul_out', 'triangle_multiplication_outgoing', 'a', 'b'),
                                        ('tri_mul_in', 'triangle_multiplication_incoming', 'b', 'a')):
    rows += [(f'{of}{of_name}.layer_norm_in', f'{af_name}/layer_norm_input', LAYER_NORM),
             (f'{of}{of_name}.layer_norm_out', f'{af_name}/center_layer_norm', LAYER_NORM),
             (f'{of}{of_name}.linear_{left}_p', f'{af_name}/left_projection', LINEAR_KIND),
             (f'{of}{of_name}.linear_{right}_p', f'{af_name}/right_projection', LINEAR_KIND),
             (f'{of}{of_name}.linear_{left}_g', f'{af_name}/left_gate', LINEAR_KIND),
             (f'{of}{of_name}.linear_{right}_g', f'{af_name}/right_gate', LINEAR_KIND),
             (f'{of}{of_name}.linear_g', f'{af_name}/gating_linear', LINEAR_KIND),
             (f'{of}{of_name}.linear_z', f'{af_name}/output_projection', LINEAR_KIND)]
  return tuple(rows) + _transition(f'{of}pair_transition', 'pair_transition')


def _transition(of: str, af: str) -> _Rows:
  return ((f'{of}.layer_norm', f'{af}/input_layer_norm', LAYER_NORM),
          (f'{of}.linear_1', f'{af}/transition1', LINEAR_KIND),
          (f'{of}.linear_2', f'{af}/transition2', LINEAR_KIND))


_MSA_BLOCK: _Rows = (
    ('msa_att_row.layer_norm_m', 'msa_row_attention_with_pair_bias/query_norm', LAYER_NORM),
    ('msa_att_row.layer_norm_z', 'msa_row_attention_with_pair_bias/feat_2d_norm', LAYER_NORM),
    ('msa_att_row.linear_z', 'msa_row_attention_with_pair_bias', PAIR_BIAS),
    ('msa_att_row.mha', 'msa_row_attention_with_pair_bias/attention', GATED_ATTENTION),
    *_transition('msa_transition', 'msa_transition'),
    ('outer_product_mean.layer_norm', 'outer_product_mean/layer_norm_input', LAYER_NORM),
    ('outer_product_mean.linear_1', 'outer_product_mean/left_projection', LINEAR_KIND),
    ('outer_product_mean.linear_2', 'outer_product_mean/right_projection', LINEAR_KIND),
    ('outer_product_mean.linear_out', 'outer_product_mean', OUTER_PRODUCT_OUTPUT),
    *_pair_block('pair_stack.'),
)
_EVOFORMER_BLOCK: _Rows = _MSA_BLOCK + (
    ('msa_att_col._msa_att.layer_norm_m', 'msa_column_attention/query_norm', LAYER_NORM),
    ('msa_att_col._msa_att.mha', 'msa_column_attention/attention', GATED_ATTENTION),
)
_EXTRA_MSA_BLOCK: _Rows = _MSA_BLOCK + (
    ('msa_att_col.layer_norm_m', 'msa_column_global_attention/query_norm', LAYER_NORM),
    ('msa_att_col.global_attention', 'msa_column_global_attention/attention', GLOBAL_ATTENTION),
)

_TEMPLATE = 'evoformer/template_embedding'
_SINGLE_TEMPLATE = f'{_TEMPLATE}/single_template_embedding'
_FOLD = 'structure_module/fold_iteration'
_IPA = f'{_FOLD}/invariant_point_attention'
_SIDECHAIN = f'{_FOLD}/rigid_sidechain'

# Modules that occur once.
_SINGLE_ROWS: _Rows = (
    ('input_embedder.linear_tf_m', 'evoformer/preprocess_1d', LINEAR_KIND),
    ('input_embedder.linear_msa_m', 'evoformer/preprocess_msa', LINEAR_KIND),
    ('input_embedder.linear_tf_z_i', 'evoformer/left_single', LINEAR_KIND),
    ('input_embedder.linear_tf_z_j', 'evoformer/right_single', LINEAR_KIND),
    ('input_embedder.linear_relpos', 'evoformer/pair_activiations', LINEAR_KIND),
    ('recycling_embedder.linear', 'evoformer/prev_pos_linear', LINEAR_KIND),
    ('recycling_embedder.layer_norm_m', 'evoformer/prev_msa_first_row_norm', LAYER_NORM),
    ('recycling_embedder.layer_norm_z', 'evoformer/prev_pair_norm', LAYER_NORM),
    ('template_embedder.template_single_embedder.linear_1', 'evoformer/template_single_embedding',
     LINEAR_KIND),
    ('template_embedder.template_single_embedder.linear_2', 'evoformer/template_projection',
     LINEAR_KIND),
    ('template_embedder.template_pair_embedder.linear', f'{_SINGLE_TEMPLATE}/embedding2d',
     LINEAR_KIND),
    ('template_embedder.template_pair_stack.layer_norm', f'{_SINGLE_TEMPLATE}/output_layer_norm',
     LAYER_NORM),
    ('template_embedder.template_pointwise_att.mha', f'{_TEMPLATE}/attention', ATTENTION),
    ('extra_msa_embedder.linear', 'evoformer/extra_msa_activations', LINEAR_KIND),
    ('evoformer.linear', 'evoformer/single_activations', LINEAR_KIND),
    ('structure_module.layer_norm_s', 'structure_module/single_layer_norm', LAYER_NORM),
    ('structure_module.layer_norm_z', 'structure_module/pair_layer_norm', LAYER_NORM),
    ('structure_module.linear_in', 'structure_module/initial_projection', LINEAR_KIND),
    ('structure_module.ipa', _IPA, POINT_WEIGHTS),
    ('structure_module.ipa.linear_q', f'{_IPA}/q_scalar', LINEAR_KIND),
    ('structure_module.ipa.linear_kv', f'{_IPA}/kv_scalar', LINEAR_KIND),
    ('structure_module.ipa.linear_q_points.linear', f'{_IPA}/q_point_local', LINEAR_KIND),
    ('structure_module.ipa.linear_kv_points.linear', f'{_IPA}/kv_point_local', LINEAR_KIND),
    ('structure_module.ipa.linear_b', f'{_IPA}/attention_2d', LINEAR_KIND),
    ('structure_module.ipa.linear_out', f'{_IPA}/output_projection', LINEAR_KIND),
    ('structure_module.layer_norm_ipa', f'{_FOLD}/attention_layer_norm', LAYER_NORM),
    ('structure_module.transition.layers.0.linear_1', f'{_FOLD}/transition', LINEAR_KIND),
    ('structure_module.transition.layers.0.linear_2', f'{_FOLD}/transition_1', LINEAR_KIND),
    ('structure_module.transition.layers.0.linear_3', f'{_FOLD}/transition_2', LINEAR_KIND),
    ('structure_module.transition.layer_norm', f'{_FOLD}/transition_layer_norm', LAYER_NORM),
    ('structure_module.bb_update.linear', f'{_FOLD}/affine_update', LINEAR_KIND),
    ('structure_module.angle_resnet.linear_in', f'{_SIDECHAIN}/input_projection', LINEAR_KIND),
    ('structure_module.angle_resnet.linear_initial', f'{_SIDECHAIN}/input_projection_1',
     LINEAR_KIND),
    ('structure_module.angle_resnet.layers.0.linear_1', f'{_SIDECHAIN}/resblock1', LINEAR_KIND),
    ('structure_module.angle_resnet.layers.0.linear_2', f'{_SIDECHAIN}/resblock2', LINEAR_KIND),
    ('structure_module.angle_resnet.layers.1.linear_1', f'{_SIDECHAIN}/resblock1_1', LINEAR_KIND),
    ('structure_module.angle_resnet.layers.1.linear_2', f'{_SIDECHAIN}/resblock2_1', LINEAR_KIND),
    ('structure_module.angle_resnet.linear_out', f'{_SIDECHAIN}/unnormalized_angles',
     LINEAR_KIND),
    ('aux_heads.plddt.layer_norm', 'predicted_lddt_head/input_layer_norm', LAYER_NORM),
    ('aux_heads.plddt.linear_1', 'predicted_lddt_head/act_0', LINEAR_KIND),
    ('aux_heads.plddt.linear_2', 'predicted_lddt_head/act_1', LINEAR_KIND),
    ('aux_heads.plddt.linear_3', 'predicted_lddt_head/logits', LINEAR_KIND),
    ('aux_heads.distogram.linear', 'distogram_head/half_logits', LINEAR_KIND),
    ('aux_heads.masked_msa.linear', 'masked_msa_head/logits', LINEAR_KIND),
    ('aux_heads.experimentally_resolved.linear', 'experimentally_resolved_head/logits',
     LINEAR_KIND),
    ('aux_heads.tm.linear', 'predicted_aligned_error_head/logits', LINEAR_KIND),
)

# Stacks: OpenFold's `{prefix}.{i}.` modules are index i of AlphaFold's stacked tensors.
_STACKS: tuple[tuple[str, str, _Rows], ...] = (
    ('evoformer.blocks', 'evoformer/evoformer_iteration', _EVOFORMER_BLOCK),
    ('extra_msa_stack.blocks', 'evoformer/extra_msa_stack', _EXTRA_MSA_BLOCK),
    ('template_embedder.template_pair_stack.blocks',
     f'{_SINGLE_TEMPLATE}/template_pair_stack/__layer_stack_no_state', _pair_block('')),
)


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One AlphaFold tensor and its OpenFold tensor(s): one, or one per block when stacked."""
  alphafold_key: str
  openfold_keys: tuple[str, ...]
  layout: _Layout
  stacked: bool


def _table() -> tuple[tuple[str, str, _Layout, bool], ...]:
  """Every (OpenFold key or key template with '{i}', AlphaFold key, layout, stacked) row."""
  rows = [(f'{of}.{of_param}', f'{_AF_PREFIX}{af}//{af_param}', layout, False)
          for of, af, kind in _SINGLE_ROWS for of_param, af_param, layout in kind]
  rows += [(f'{of_stack}.{{i}}.{of}.{of_param}', f'{_AF_PREFIX}{af_stack}/{af}//{af_param}',
            layout, True)
           for of_stack, af_stack, block in _STACKS
           for of, af, kind in block for of_param, af_param, layout in kind]
  return tuple(rows)


TABLE = _table()


def _entries(alphafold_shapes: Mapping[str, tuple[int, ...]]) -> list[_Entry]:
  """The table's rows that exist in an AlphaFold schema, with their block counts.

  Raises:
    ValueError: a tensor of the schema has no row (a configuration OpenFold cannot express).
  """
  entries = []
  for of_key, af_key, layout, is_stacked in TABLE:
    if af_key not in alphafold_shapes:
      continue
    blocks = range(alphafold_shapes[af_key][0]) if is_stacked else [None]
    entries.append(_Entry(af_key, tuple(of_key.format(i=i) for i in blocks), layout,
                          is_stacked))
  uncovered = sorted(alphafold_shapes.keys() - {entry.alphafold_key for entry in entries})
  if uncovered:
    raise ValueError(f'{len(uncovered)} parameter(s) of this model configuration have no '
                     f'OpenFold counterpart: {alphafold_npz._listed(uncovered)}')
  return entries


@functools.lru_cache(maxsize=16)
def _alphafold_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
  return parameter_shapes(model_config)


def openfold_shapes(model_config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """The OpenFold state dict (v2 names) a model configuration has: {key: shape}."""
  shapes = {}
  for entry in _entries(_alphafold_shapes(model_config)):
    block_shape = _alphafold_shapes(model_config)[entry.alphafold_key][int(entry.stacked):]
    for key in entry.openfold_keys:
      shapes[key] = entry.layout.openfold_shape(block_shape)
  return shapes


def to_openfold(tree: Mapping, model_config: ModelConfig) -> dict[str, np.ndarray]:
  """jaxfold parameters as an OpenFold state dict (v2 names), bytes and dtypes unchanged.

  Args:
    tree: nested jaxfold parameters (numpy or jax arrays) of `model_config`.
    model_config: the model's configuration (`AlphaFoldConfig.model`).

  Returns:
    {OpenFold key: numpy array} in torch layouts ([out, in] Linears, one key per block),
    contiguous, ready for torch.from_numpy.

  Raises:
    SchemaError: the tree's tensors differ from the configuration's.
  """
  flat = {key: np.asarray(jax.device_get(value))
          for key, value in alphafold_npz.flat_keys(tree).items()}
  alphafold_npz.check_schema({key: value.shape for key, value in flat.items()},
                             _alphafold_shapes(model_config), 'jaxfold parameters',
                             schema_name='the model configuration')
  state_dict = {}
  for entry in _entries(_alphafold_shapes(model_config)):
    array = flat[entry.alphafold_key]
    blocks = list(array) if entry.stacked else [array]
    for key, block in zip(entry.openfold_keys, blocks):
      state_dict[key] = entry.layout.to_openfold(block)
  return state_dict


def from_openfold(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig,
                  source: str = 'state dict') -> dict:
  """An OpenFold state dict as a nested jaxfold tree, bytes and dtypes unchanged.

  Accepts OpenFold v1 and v2 names, with or without `model.` / `module.` prefixes. Every
  name, shape and dtype is checked before any tensor is converted.

  Args:
    state_dict: {OpenFold key: numpy array}.
    model_config: the configuration the weights must fit (`AlphaFoldConfig.model`).
    source: names the state dict's origin (a file path) in error messages.

  Raises:
    ValueError: two keys name the same tensor once prefixes and v1 names are resolved.
    SchemaError: missing, unexpected, misshaped or wrongly typed tensors, all listed in one
      line, with the preset the keys fit when it is not the configured one.
  """
  canonical = _canonical(state_dict, source)
  expected = openfold_shapes(model_config)
  try:
    alphafold_npz.check_schema(
        {key: np.shape(value) for key, value in canonical.items()}, expected, source,
        flat_dtypes={key: np.asarray(value).dtype for key, value in canonical.items()},
        schema_name='the model configuration (OpenFold names)')
  except SchemaError as error:
    fitting = _fitting_presets(canonical)
    if fitting and _structure(canonical) != _structure(expected):
      raise SchemaError(f'{error}; the keys fit preset {fitting[0]!r}'
                        + (f' (as do {", ".join(fitting[1:])})' if fitting[1:] else '')
                        + ': choose it with --preset') from None
    raise
  alphafold_shapes = _alphafold_shapes(model_config)
  flat = {}
  for entry in _entries(alphafold_shapes):
    shape = alphafold_shapes[entry.alphafold_key]
    blocks = [entry.layout.to_alphafold(np.asarray(canonical[key]), shape[int(entry.stacked):])
              for key in entry.openfold_keys]
    flat[entry.alphafold_key] = np.stack(blocks) if entry.stacked else blocks[0]
  return alphafold_npz.unflatten(flat, source)


_PREFIXES = ('module.', 'model.')


def strip_prefixes(state_dict: Mapping[str, np.ndarray], source: str = 'state dict'
                   ) -> dict[str, np.ndarray]:
  """Removes Lightning's `model.` and DDP/DeepSpeed's `module.` prefixes (either, both, any order).

  Raises:
    ValueError: two keys become the same.
  """
  def stripped(key: str) -> str:
    while key.startswith(_PREFIXES):
      key = key.split('.', 1)[1]
    return key

  return _renamed(state_dict, stripped, source)


# OpenFold v1 -> v2 names (OpenFold's convert_deprecated_v1_keys states the same facts):
# the template modules moved into `template_embedder` (the angle embedder renamed), the
# Evoformer block's `core` was split into the block and its `pair_stack`, and the IPA point
# projections gained an inner `linear`. Anchored so that v2 names never match.
_V1_RENAMES = (
    (re.compile(r'^template_angle_embedder\.'), 'template_embedder.template_single_embedder.'),
    (re.compile(r'^(template_pair_embedder|template_pair_stack|template_pointwise_att)\.'),
     r'template_embedder.\1.'),
    (re.compile(r'\.core\.(msa_transition|outer_product_mean)\.'), r'.\1.'),
    (re.compile(r'\.core\.(tri_mul_out|tri_mul_in|tri_att_start|tri_att_end|pair_transition)\.'),
     r'.pair_stack.\1.'),
    (re.compile(r'\.ipa\.(linear_q_points|linear_kv_points)\.(weight|bias)$'),
     r'.ipa.\1.linear.\2'),
)


def v2_names(state_dict: Mapping[str, np.ndarray], source: str = 'state dict'
             ) -> dict[str, np.ndarray]:
  """OpenFold v1 key names rewritten as v2 names; v2 names are kept.

  Raises:
    ValueError: a v1 and a v2 key name the same tensor.
  """
  def renamed(key: str) -> str:
    for pattern, replacement in _V1_RENAMES:
      key = pattern.sub(replacement, key)
    return key

  return _renamed(state_dict, renamed, source)


def _renamed(state_dict: Mapping[str, np.ndarray], rename, source: str) -> dict[str, np.ndarray]:
  out: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  for key, value in state_dict.items():
    new = rename(key)
    if new in out:
      raise ValueError(f'{source}: keys {origin[new]!r} and {key!r} both name tensor {new!r}')
    out[new], origin[new] = value, key
  return out


def _canonical(state_dict: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  return v2_names(strip_prefixes(state_dict, source), source)


def _structure(keys: Iterable[str]) -> frozenset[str]:
  """Key names with block indices erased: which modules exist, not how many blocks."""
  return frozenset(re.sub(r'\.blocks\.\d+\.', '.blocks.*.', key) for key in keys)


def _fitting_presets(keys: Iterable[str]) -> list[str]:
  """The presets whose modules (block counts aside) are exactly those the keys name."""
  structure = _structure(keys)
  return [name for name in model_config_lib.PRESETS
          if _structure(openfold_shapes(model_config_lib.preset(name).model)) == structure]


def suggest_preset(keys: Iterable[str]) -> str | None:
  """The first preset (in `PRESETS` order) whose modules the OpenFold keys name; None if none.

  Block counts are ignored, so a reduced model suggests the preset it was reduced from.
  v1 names and `model.` / `module.` prefixes are accepted.
  """
  fitting = _fitting_presets(_canonical(dict.fromkeys(keys), 'keys'))
  return fitting[0] if fitting else None


def rule_weights(manifest_entries: Iterable[Mapping]) -> dict[str, np.ndarray]:
  """The recorded OpenFold fixtures' weights, regenerated from their names (fixture README rule).

  Args:
    manifest_entries: a manifest's `state_dict` list: {'name': OpenFold key, 'shape': [...]}.

  Returns:
    {name: float32 array}: N(0, 1) from a generator seeded with the name's CRC-32, scaled by
    1/sqrt(last dim) for matrices; vectors are 1 + 0.1 N for '.weight' keys, 0.1 N otherwise.
  """
  weights = {}
  for entry in manifest_entries:
    name, shape = entry['name'], tuple(entry['shape'])
    noise = np.random.default_rng(zlib.crc32(name.encode('utf-8'))).standard_normal(
        shape).astype(np.float32)
    if len(shape) >= 2:
      weights[name] = (noise / np.sqrt(shape[-1])).astype(np.float32)
    elif name.endswith('.weight'):
      weights[name] = (1.0 + 0.1 * noise).astype(np.float32)
    else:
      weights[name] = (0.1 * noise).astype(np.float32)
  return weights
