"""A prediction split over 8 devices by residues (`jaxfold predict --mesh res=8`) computes
what one device computes.

A reduced model_1_ptm (templates, extra MSA, two Evoformer blocks, every head) with perturbed
random weights predicts a crop of 2q2k with one recycling iteration, on one device and on
`res=8`, under predict's chunk settings: a length that 8 divides and one it does not (XLA
pads the last device's rows).
"""

import re

import jax
import numpy as np
import pytest

from jaxfold import inference, memory_plan
from jaxfold.model import config as config_lib, logical_axes
from jaxfold.model.alphafold import AlphaFold, model_features
from jaxfold.model.evoformer import EvoformerIteration
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import sharding

_EVO = 'model.embeddings_and_evoformer.'
NARROW = {_EVO + 'msa_channel': 32, _EVO + 'pair_channel': 16, _EVO + 'seq_channel': 32,
          _EVO + 'extra_msa_channel': 16,
          _EVO + 'evoformer.outer_product_mean.num_outer_channel': 8,
          _EVO + 'evoformer.triangle_multiplication_outgoing.num_intermediate_channel': 16,
          _EVO + 'evoformer.triangle_multiplication_incoming.num_intermediate_channel': 16,
          'model.heads.structure_module.num_channel': 32}
# AlphaFold's subbatches, and the pair in chunks of 8 rows (the 'lean' levels, scaled down).
SETTINGS = {'alphafold': {'subbatch_size': 4},
            'lean': {'subbatch_size': 4, 'pair_chunk_size': 8}}


@pytest.fixture(scope='module')
def network():
  config = config_lib.replace(config_lib.reduced(
      config_lib.preset('model_1_ptm'), num_block=2, extra_msa_num_block=1,
      structure_num_layer=2, num_recycle=1), NARROW)
  return config.model


def _predict(model_config, settings, batch, params, mesh):
  model = AlphaFold(model_config, GlobalConfig(zero_init=False, **SETTINGS[settings]))
  run = inference.jit_prediction(inference.prediction_fn(model, num_recycle=1), mesh)
  compiled = run.lower(params, batch).compile()
  return compiled, compiled(params, batch)


def test_a_chunked_evoformer_block_on_res_8_slices_only_each_devices_rows(network):
  """Every chunked loop of a block (subbatches of 2 rows, the pair 2 rows at a time, in place)
  walks each device's own 4 of 32 rows: no whole MSA or pair is gathered onto a device, and
  the block computes what one device does."""
  block = EvoformerIteration(network.embeddings_and_evoformer.evoformer, global_config=(
      GlobalConfig(subbatch_size=2, pair_chunk_size=2, zero_init=False)))
  rng = np.random.default_rng(1)
  activations = {'msa': rng.normal(size=(16, 32, 32)).astype(np.float32),
                 'pair': rng.normal(size=(32, 32, 16)).astype(np.float32)}
  masks = {'msa': (rng.random((16, 32)) > 0.1).astype(np.float32),
           'pair': np.ones((32, 32), np.float32)}
  params = block.init(jax.random.key(0), activations, masks)
  expected = jax.jit(block.apply)(params, activations, masks)
  mesh = inference.prediction_mesh((('res', 8),))

  def apply(params, activations, masks):
    with logical_axes.use_rules(mesh, sharding.LAYOUTS['dap']):
      return block.apply(params, activations, masks)

  compiled = jax.jit(apply).lower(params, activations, masks).compile()
  gathered = re.findall(r'(f32\[[0-9,]+\])[^ ]* all-gather\(', compiled.as_text())
  assert not {'f32[32,32,16]', 'f32[16,32,32]'} & set(gathered), gathered
  got = compiled(params, activations, masks)
  for key in ('msa', 'pair'):
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # a reduced model compiled twice and run on 8 simulated devices: ~3 min each
@pytest.mark.parametrize('settings,length', [('lean', 40), ('lean', 37), ('alphafold', 40)])
def test_a_prediction_on_res_8_equals_one_device(shared_dir, network, settings, length):
  batch = model_features(training_batch(shared_dir, 'model_1_ptm', crop_size=length,
                                        max_msa_clusters=16, max_extra_msa=32, num_recycle=1),
                         network)
  model = AlphaFold(network, GlobalConfig(zero_init=False))
  params = model.init(jax.random.key(0), {k: v[:1] for k, v in batch.items()})['params']
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + 0.05 * rng.normal(size=p.shape).astype(p.dtype), params)

  _, expected = _predict(network, settings, batch, params, None)
  compiled, got = _predict(network, settings, batch, params,
                           inference.prediction_mesh((('res', 8),)))
  if length % 8 == 0:  # the pair split by rows or columns: [5, 40, 16] or [40, 5, 16]
    per_device = length // 8
    assert re.search(rf'f32\[({per_device},{length}|{length},{per_device}),16\]',
                     compiled.as_text()), 'no per-device slice of the pair'
  for key in ('final_atom_positions', 'plddt', 'predicted_aligned_error', 'ptm'):
    ours, reference = np.asarray(_find(got, key)), np.asarray(_find(expected, key))
    scale = np.max(np.abs(reference))
    assert np.max(np.abs(ours - reference)) <= 1e-4 * scale, key


def _find(outputs, key):
  for path, leaf in jax.tree_util.tree_leaves_with_path(outputs):
    if getattr(path[-1], 'key', None) == key:
      return leaf
  raise KeyError(key)


@pytest.mark.slow  # two full-size compilations, about a minute
def test_the_plan_of_a_prediction_on_res_8_is_a_fraction_of_one_device():
  """The full-size model at 512 residues: each of 8 devices plans well under one device's."""
  one, split = (memory_plan.plan(memory_plan.preset_shapes(
      'model_1_ptm', 512, extra_msa=256, num_recycle=0, mesh=mesh), 'lean')
                for mesh in ((), (('res', 8),)))
  print(f'one device {memory_plan.gib(one.total_bytes)}, res=8 '
        f'{memory_plan.gib(split.total_bytes)} per device')
  assert split.temp_bytes < one.temp_bytes / 2


@pytest.mark.slow  # the full-size model compiled twice, once over 8 simulated devices
def test_predict_on_res_8_writes_the_one_device_prediction(shared_dir, tmp_path, monkeypatch):
  """`jaxfold predict --mesh res=8` as a user runs it: query73 (73 residues, which 8 does not
  divide) with small random full-size model_3_ptm weights, one recycling iteration."""
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  from jaxfold.convert import alphafold_npz, schema  # pylint: disable=import-outside-toplevel
  from jaxfold.parity import alphafold_model  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  flat = {key: 0.02 * rng.standard_normal(shape, dtype=np.float32) for key, shape in
          schema.parameter_shapes(config_lib.preset('model_3_ptm').model).items()}
  weights = tmp_path / 'params_model_3_ptm.npz'
  alphafold_npz.write_npz(alphafold_npz.unflatten(flat), weights)
  monkeypatch.setenv('JAXFOLD_SHARED', str(shared_dir))
  batch = alphafold_model.query73_features(alphafold_model.alphafold_config(
      'model_3_ptm', num_recycle=1, max_msa_clusters=8, max_extra_msa=16))
  np.savez(tmp_path / 'query73.npz', **batch)
  outputs = {}
  for name, extra in (('one', []), ('res8', ['--mesh', 'res=8'])):
    argv = ['--quiet', 'predict', '--params', str(weights), '--preset', 'model_3_ptm',
            '--batch', str(tmp_path / 'query73.npz'), '--num-recycle', '1',
            '--output', str(tmp_path / name), *extra]
    assert cli.main(argv) == 0
    with np.load(tmp_path / name / 'outputs.npz') as npz:
      outputs[name] = dict(npz)
  assert outputs['one'].keys() == outputs['res8'].keys()
  for key in ('final_atom_positions', 'plddt', 'predicted_aligned_error'):
    scale = np.max(np.abs(outputs['one'][key]))
    assert np.max(np.abs(outputs['res8'][key] - outputs['one'][key])) <= 1e-4 * scale, key
