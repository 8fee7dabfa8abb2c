"""Meshes, layouts and logical parameter axes on one device (the multi-device behaviour is in
tests/multidevice/, run by test_multidevice.py)."""

import jax
import pytest

from jaxfold.model import config as model_config
from jaxfold.train import sharding, state as state_lib


@pytest.mark.parametrize('text, message', [
    ('data', 'expected axis=size pairs'),
    ('data=two', 'expected axis=size pairs'),
])
def test_a_malformed_mesh_is_named(text, message):
  with pytest.raises(sharding.ShardingError, match=message):
    sharding.parse_mesh(text)


def test_mesh_text_parses_in_order():
  assert sharding.parse_mesh('data=2,fsdp=-1,res=4') == (('data', 2), ('fsdp', -1), ('res', 4))


@pytest.mark.parametrize('axes, layout, message', [
    ((('data', 2),), 'data', 'does not divide 1 devices'),
    ((('model', 1),), 'data', 'distinct names out of data, fsdp, res'),
    ((('data', 1), ('data', 1)), 'data', 'distinct names'),
    ((('data', -1), ('res', -1)), 'dap', 'at most one axis may be -1'),
    ((('data', 1),), 'tensor', "unknown sharding 'tensor'"),
])
def test_a_mesh_that_cannot_be_built_is_refused(axes, layout, message):
  with pytest.raises(sharding.ShardingError, match=message):
    sharding.make_mesh(axes, layout)


def test_the_default_mesh_takes_every_device():
  mesh = sharding.make_mesh((('data', -1),), 'data')
  assert dict(mesh.shape) == {'data': jax.device_count(), 'fsdp': 1, 'res': 1}
  assert sharding.micro_batch_size(None, 128, mesh, sharding.LAYOUTS['data']) == 1
  with pytest.raises(sharding.ShardingError, match='divide global_batch_size 4'):
    sharding.micro_batch_size(3, 4, mesh, sharding.LAYOUTS['data'])


@pytest.mark.parametrize('preset', ['model_1_ptm', 'model_3_ptm'])
def test_every_parameter_has_logical_axes(preset):
  shapes = jax.eval_shape(
      lambda: state_lib.init_params(model_config.preset(preset), jax.random.key(0)))
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  axes = {jax.tree_util.keystr(path): sharding.param_axes([k.key for k in path], x.ndim)
          for path, x in flat}
  assert all(len(names) == x.ndim for (_, x), names in zip(flat, axes.values()))
  stacked = [names for key, names in axes.items() if "['evoformer_iteration']" in key]
  assert stacked and all(names[0] == 'layers' for names in stacked)
  row_query = ("['alphafold_iteration']['evoformer']['evoformer_iteration']"
               "['msa_row_attention_with_pair_bias']['attention']['query_w']")
  assert axes[row_query] == ('layers', 'channel_in', 'heads', 'head_dim')
  # Every matrix names an input or an output channel, which FSDP splits.
  matrices = [names for names in axes.values() if len(names) - (names[0] == 'layers') >= 2
              and names[-2:] != ('heads', 'head_dim')]  # gating biases
  assert all({'channel_in', 'channel_out'} & set(names) for names in matrices)


def test_an_unnamed_parameter_kind_is_refused():
  with pytest.raises(sharding.ShardingError, match="no logical axes for a 2-axis 'mystery'"):
    sharding.param_axes(['head', 'mystery'], 2)
