"""jaxfold.convert.openfold_keys: the OpenFold <-> AlphaFold table against OpenFold's own key lists.

The references are the state-dict manifests recorded from real OpenFold models
(shared/fixtures/openfold/*/manifest.json: every key and shape) and the fixture README's rule
that regenerates their weights. Round trips use random bit patterns (NaN payloads, infinities,
subnormals), so only byte-exact conversions pass.
"""

import json
import re
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.convert import alphafold_npz
from jaxfold.convert import openfold_keys
from jaxfold.convert.alphafold_npz import SchemaError
from jaxfold.convert.schema import parameter_shapes
from jaxfold.model import config as config_lib

_E = 'model.embeddings_and_evoformer.'
_TEMPLATE_PREFIX = 'template_embedder.'
_TM_PREFIX = 'aux_heads.tm.'


def _manifest(shared_dir, name: str) -> dict:
  path = shared_dir / 'fixtures' / 'openfold' / name / 'manifest.json'
  if not path.exists():
    pytest.skip(f'{path} not present')
  return json.loads(path.read_text())


def _shapes(entries) -> dict[str, tuple[int, ...]]:
  return {entry['name']: tuple(entry['shape']) for entry in entries}


@pytest.fixture(scope='module')
def full_manifest(shared_dir) -> dict:
  return _manifest(shared_dir, 'model_1_ptm_full')


@pytest.fixture(scope='module')
def small_manifest(shared_dir) -> dict:
  return _manifest(shared_dir, 'small')


def _model(name: str, reduced: bool = False):
  config = config_lib.preset(name)
  return (config_lib.reduced(config) if reduced else config).model


def _random_bits(shapes, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  bits = {np.dtype(np.float32): np.uint32, np.dtype(np.float16): np.uint16,
          np.dtype(jnp.bfloat16): np.uint16}[np.dtype(dtype)]
  return {key: rng.integers(0, np.iinfo(bits).max, size=shape, dtype=bits,
                            endpoint=True).view(dtype)
          for key, shape in shapes.items()}


def _assert_bit_identical(got: dict, want: dict) -> None:
  assert sorted(got) == sorted(want)
  for key, array in want.items():
    assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
    assert np.array_equal(np.asarray(got[key]).view(np.uint8), array.view(np.uint8)), key


# --- the layouts compute what the torch Linears compute -------------------------------------

def test_layouts_compute_the_same_projections():
  """Each layout, applied to a torch-layout weight, gives AlphaFold's einsum the same result."""
  rng = np.random.default_rng(0)
  heads, c, channels = 3, 5, 7
  x = rng.standard_normal((4, channels))
  # q/k/v/gate: torch y = x W^T, viewed per head; AlphaFold einsum over [C, H, c].
  w = rng.standard_normal((heads * c, channels))
  af = openfold_keys.HEADS_OUT.to_alphafold(w, (channels, heads, c))
  np.testing.assert_allclose(np.einsum('nC,Chc->nhc', x, af),
                             (x @ w.T).reshape(4, heads, c), rtol=1e-12)
  # Output projection: torch flattens the heads then applies W [C, H*c].
  o = rng.standard_normal((4, heads, c))
  w_out = rng.standard_normal((channels, heads * c))
  af_out = openfold_keys.HEADS_IN.to_alphafold(w_out, (heads, c, channels))
  np.testing.assert_allclose(np.einsum('nhc,hcC->nC', o, af_out),
                             o.reshape(4, heads * c) @ w_out.T, rtol=1e-12)
  bias = rng.standard_normal(heads * c)
  np.testing.assert_array_equal(openfold_keys.HEADS_BIAS.to_alphafold(bias, (heads, c)),
                                bias.reshape(heads, c))
  w_lin = rng.standard_normal((channels, 4))
  np.testing.assert_array_equal(openfold_keys.LINEAR.to_alphafold(w_lin, (4, channels)), w_lin.T)
  for layout, shape in ((openfold_keys.HEADS_OUT, (channels, heads, c)),
                        (openfold_keys.HEADS_IN, (heads, c, channels)),
                        (openfold_keys.HEADS_BIAS, (heads, c)), (openfold_keys.SAME, (heads, c))):
    array = rng.standard_normal(shape)
    assert np.array_equal(layout.to_alphafold(layout.to_openfold(array), shape), array)


# --- the fixture weight rule -------------------------------------------------------------

def test_rule_weights_follow_the_fixture_rule(small_manifest):
  weights = openfold_keys.rule_weights(small_manifest['state_dict'])
  assert sorted(weights) == sorted(_shapes(small_manifest['state_dict']))
  for name, scale, offset in (('evoformer.blocks.0.msa_att_row.mha.linear_q.weight', None, None),
                              ('evoformer.blocks.1.msa_transition.layer_norm.weight', 0.1, 1.0),
                              ('structure_module.linear_in.bias', 0.1, 0.0)):
    shape = weights[name].shape
    z = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(shape)
    want = z / np.sqrt(shape[-1]) if scale is None else offset + scale * z
    assert weights[name].dtype == np.float32
    np.testing.assert_allclose(weights[name], want, rtol=1e-6, atol=1e-7)
  assert all(np.all(w != 0) for w in weights.values())


def test_rule_weights_equal_the_recorded_small_weights(shared_dir, small_manifest):
  torch = pytest.importorskip('torch')
  recorded = torch.load(shared_dir / 'fixtures' / 'openfold' / 'small' / 'weights.pt',
                        weights_only=True)
  weights = openfold_keys.rule_weights(small_manifest['state_dict'])
  _assert_bit_identical({key: value.numpy() for key, value in recorded.items()}, weights)


# --- keys and shapes against OpenFold's manifests -------------------------------------------

def test_full_model_1_ptm_has_exactly_openfolds_state_dict(full_manifest):
  want = _shapes(full_manifest['state_dict'])
  assert len(want) == 5046
  assert openfold_keys.openfold_shapes(_model('model_1_ptm')) == want


@pytest.mark.parametrize('preset, left_out', [('model_1', (_TM_PREFIX,)),
                                              ('model_3_ptm', (_TEMPLATE_PREFIX,)),
                                              ('model_3', (_TEMPLATE_PREFIX, _TM_PREFIX))])
def test_presets_without_templates_or_ptm_head(full_manifest, preset, left_out):
  want = {key: shape for key, shape in _shapes(full_manifest['state_dict']).items()
          if not key.startswith(left_out)}
  assert openfold_keys.openfold_shapes(_model(preset)) == want


def test_reduced_model_has_the_small_fixtures_keys(small_manifest):
  """Same blocks as the small set (2 Evoformer, 1 extra, 1 template, 2 structure layers)."""
  assert (sorted(openfold_keys.openfold_shapes(_model('model_1_ptm', reduced=True)))
          == sorted(_shapes(small_manifest['state_dict'])))


def _small_config():
  """The small fixture's OpenFold config (its manifest's `config_changes`) in jaxfold's terms."""
  attention = lambda total: {'key_dim': total, 'value_dim': total}  # noqa: E731
  changes = {_E + 'msa_channel': 32, _E + 'pair_channel': 16, _E + 'extra_msa_channel': 16,
             _E + 'seq_channel': 32, 'model.heads.structure_module.num_channel': 32,
             _E + 'template.num_channels': 16}
  # OpenFold fixes the attention widths (heads x c_hidden) instead of deriving them from the
  # channels: MSA 8 x 32, extra MSA 8 x 8, triangle 4 x 32.
  for module, total in (('evoformer.msa_row_attention_with_pair_bias', 256),
                        ('evoformer.msa_column_attention', 256),
                        ('evoformer.triangle_attention_starting_node', 128),
                        ('evoformer.triangle_attention_ending_node', 128),
                        ('extra_msa.msa_row_attention_with_pair_bias', 64),
                        ('extra_msa.msa_column_attention', 64),
                        ('extra_msa.triangle_attention_starting_node', 128),
                        ('extra_msa.triangle_attention_ending_node', 128)):
    changes.update({f'{_E}{module}.{field}': value
                    for field, value in attention(total).items()})
  base = config_lib.reduced(config_lib.preset('model_1_ptm'))
  # The extra-MSA stack gets a config of its own (AlphaFold's None shares the Evoformer's).
  base = config_lib.replace(base, {
      _E + 'extra_msa': base.model.embeddings_and_evoformer.evoformer})
  return config_lib.replace(base, changes).model


def test_small_fixture_fits_the_small_config(small_manifest):
  model = _small_config()
  weights = openfold_keys.rule_weights(small_manifest['state_dict'])
  tree = openfold_keys.from_openfold(weights, model, 'small')
  flat = alphafold_npz.flat_keys(tree)
  assert {key: value.shape for key, value in flat.items()} == parameter_shapes(model)
  _assert_bit_identical(openfold_keys.to_openfold(tree, model), weights)


# --- round trips -------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [np.float32, jnp.bfloat16])
def test_round_trips_are_bit_identical(dtype):
  model = _model('model_1_ptm', reduced=True)
  state_dict = _random_bits(openfold_keys.openfold_shapes(model), seed=1, dtype=dtype)
  tree = openfold_keys.from_openfold(state_dict, model)
  flat = alphafold_npz.flat_keys(tree)
  assert {key: value.shape for key, value in flat.items()} == parameter_shapes(model)
  _assert_bit_identical(openfold_keys.to_openfold(tree, model), state_dict)

  af = _random_bits(parameter_shapes(model), seed=2, dtype=dtype)
  back = openfold_keys.from_openfold(
      openfold_keys.to_openfold(alphafold_npz.unflatten(af), model), model)
  _assert_bit_identical(alphafold_npz.flat_keys(back), af)


def test_values_land_where_openfold_puts_them():
  """Spot checks of the table's facts, one per layout, including AlphaFold's a/b swap."""
  model = _model('model_1_ptm', reduced=True)
  state_dict = _random_bits(openfold_keys.openfold_shapes(model), seed=3)
  flat = alphafold_npz.flat_keys(openfold_keys.from_openfold(state_dict, model))
  evo = 'alphafold/alphafold_iteration/evoformer/evoformer_iteration/'
  block1 = 'evoformer.blocks.1.'
  checks = [
      (evo + 'triangle_multiplication_incoming/left_projection//weights', 1,
       state_dict[block1 + 'pair_stack.tri_mul_in.linear_b_p.weight'].T),
      (evo + 'triangle_multiplication_outgoing/left_gate//bias', 1,
       state_dict[block1 + 'pair_stack.tri_mul_out.linear_a_g.bias']),
      (evo + 'msa_row_attention_with_pair_bias/attention//query_w', 1,
       state_dict[block1 + 'msa_att_row.mha.linear_q.weight'].T.reshape(256, 8, 32)),
      (evo + 'msa_column_attention/attention//output_w', 1,
       state_dict[block1 + 'msa_att_col._msa_att.mha.linear_o.weight'].T.reshape(8, 32, 256)),
      (evo + 'outer_product_mean//output_w', 1,
       state_dict[block1 + 'outer_product_mean.linear_out.weight'].T.reshape(32, 32, 128)),
      (evo + 'triangle_attention_ending_node/attention//gating_b', 1,
       state_dict[block1 + 'pair_stack.tri_att_end.mha.linear_g.bias'].reshape(4, 32)),
      ('alphafold/alphafold_iteration/evoformer/extra_msa_stack/msa_column_global_attention/'
       'attention//key_w', 0,
       state_dict['extra_msa_stack.blocks.0.msa_att_col.global_attention.linear_k.weight'].T),
      ('alphafold/alphafold_iteration/structure_module/fold_iteration/rigid_sidechain/'
       'resblock2_1//weights', None,
       state_dict['structure_module.angle_resnet.layers.1.linear_2.weight'].T),
      ('alphafold/alphafold_iteration/structure_module/fold_iteration/invariant_point_attention'
       '//trainable_point_weights', None, state_dict['structure_module.ipa.head_weights']),
      ('alphafold/alphafold_iteration/evoformer/prev_pair_norm//scale', None,
       state_dict['recycling_embedder.layer_norm_z.weight']),
  ]
  for key, block, want in checks:
    got = flat[key] if block is None else flat[key][block]
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), key


@pytest.mark.slow
def test_full_size_rule_weights_round_trip(full_manifest):
  """All 93,237,338 parameters: OpenFold -> jaxfold -> OpenFold is the identity."""
  model = _model('model_1_ptm')
  weights = openfold_keys.rule_weights(full_manifest['state_dict'])
  tree = openfold_keys.from_openfold(weights, model, 'model_1_ptm_full')
  flat = alphafold_npz.flat_keys(tree)
  assert {key: value.shape for key, value in flat.items()} == parameter_shapes(model)
  assert sum(value.size for value in flat.values()) == 93_237_338
  _assert_bit_identical(openfold_keys.to_openfold(tree, model), weights)


# --- names: v1, prefixes -----------------------------------------------------------------

_V2_TO_V1 = ((r'^template_embedder\.template_single_embedder\.', 'template_angle_embedder.'),
             (r'^template_embedder\.', ''),
             (r'\.pair_stack\.', '.core.'),
             (r'\.(msa_transition|outer_product_mean)\.', r'.core.\1.'),
             (r'\.(linear_q_points|linear_kv_points)\.linear\.', r'.\1.'))


def _as_v1(key: str) -> str:
  for pattern, replacement in _V2_TO_V1:
    key = re.sub(pattern, replacement, key)
  return key


def test_v1_names_and_prefixes_read_as_v2():
  model = _model('model_1_ptm', reduced=True)
  state_dict = _random_bits(openfold_keys.openfold_shapes(model), seed=4)
  v1 = {_as_v1(key): value for key, value in state_dict.items()}
  assert 'template_angle_embedder.linear_1.weight' in v1
  assert 'evoformer.blocks.0.core.tri_mul_in.linear_a_p.weight' in v1
  assert 'structure_module.ipa.linear_q_points.weight' in v1
  assert openfold_keys.v2_names(v1) == state_dict
  want = alphafold_npz.flat_keys(openfold_keys.from_openfold(state_dict, model))
  for prefix in ('model.', 'module.', 'module.model.'):
    got = openfold_keys.from_openfold({prefix + key: value for key, value in v1.items()}, model)
    _assert_bit_identical(alphafold_npz.flat_keys(got), want)


def test_strip_prefixes_refuses_two_keys_for_one_tensor():
  value = np.zeros(1, np.float32)
  assert openfold_keys.strip_prefixes({'model.a.b': value, 'module.c': value}) == {
      'a.b': value, 'c': value}
  with pytest.raises(ValueError, match=r"ckpt: keys 'model\.a' and 'a' both name tensor 'a'"):
    openfold_keys.strip_prefixes({'model.a': value, 'a': value}, 'ckpt')


# --- errors as a user meets them ---------------------------------------------------------

def test_every_mismatch_is_listed_in_one_message():
  model = _model('model_1_ptm', reduced=True)
  state_dict = _random_bits(openfold_keys.openfold_shapes(model), seed=5)
  del state_dict['evoformer.linear.bias']
  state_dict['evoformer.blocks.0.unknown.weight'] = np.zeros(3, np.float32)
  state_dict['aux_heads.distogram.linear.weight'] = np.zeros((64, 3), np.float32)
  state_dict['aux_heads.masked_msa.linear.bias'] = np.zeros(23, np.int64)
  with pytest.raises(SchemaError) as error:
    openfold_keys.from_openfold(state_dict, model, 'weights.pt')
  message = str(error.value)
  assert '\n' not in message and message.startswith('weights.pt: ')
  assert '1 missing (evoformer.linear.bias)' in message
  assert '1 unexpected (evoformer.blocks.0.unknown.weight)' in message
  assert 'aux_heads.distogram.linear.weight: got (64, 3), expected (64, 128)' in message
  assert 'aux_heads.masked_msa.linear.bias: int64' in message
  assert 'preset' not in message  # the modules are the configured ones: no other preset fits


def test_ptm_head_for_model_1_suggests_the_ptm_preset():
  with_ptm = _random_bits(openfold_keys.openfold_shapes(_model('model_1_ptm')), seed=6)
  with pytest.raises(SchemaError, match=r"2 unexpected \(aux_heads\.tm\.linear\.bias, "
                     r"aux_heads\.tm\.linear\.weight\).*fit preset 'model_1_ptm' "
                     r"\(as do model_2_ptm\)"):
    openfold_keys.from_openfold(with_ptm, _model('model_1'), 'ptm.pt')


def test_missing_templates_suggest_a_template_free_preset(full_manifest):
  no_templates = {key: np.zeros(shape, np.float32)
                  for key, shape in _shapes(full_manifest['state_dict']).items()
                  if not key.startswith(_TEMPLATE_PREFIX)}
  with pytest.raises(SchemaError, match=r"missing.*fit preset 'model_3_ptm' "
                     r"\(as do model_4_ptm, model_5_ptm\)"):
    openfold_keys.from_openfold(no_templates, _model('model_1_ptm'))


def test_suggest_preset(small_manifest):
  small_keys = [entry['name'] for entry in small_manifest['state_dict']]
  assert openfold_keys.suggest_preset(small_keys) == 'model_1_ptm'
  assert openfold_keys.suggest_preset(
      ['model.' + _as_v1(key) for key in small_keys if not key.startswith(_TM_PREFIX)]) == 'model_1'
  assert openfold_keys.suggest_preset(['unrelated.weight']) is None


def test_to_openfold_checks_the_tree_against_the_config():
  model = _model('model_1_ptm', reduced=True)
  with pytest.raises(SchemaError, match='jaxfold parameters: does not match'):
    openfold_keys.to_openfold(alphafold_npz.unflatten(
        _random_bits(parameter_shapes(_model('model_1', reduced=True)))), model)


def test_a_config_openfold_cannot_express_is_refused():
  model = config_lib.replace(config_lib.reduced(config_lib.preset('model_3')),
                             {'model.heads.structure_module.sidechain.num_residual_block': 3}).model
  with pytest.raises(ValueError, match=r'no OpenFold counterpart: .*resblock1_2'):
    openfold_keys.openfold_shapes(model)
