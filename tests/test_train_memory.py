"""The training step's memory settings and `jaxfold plan --train`.

'lean' training settings (`memory_plan.TRAIN_SETTINGS`: blockwise attention whose backward
pass recomputes its logits, rows in subbatches) must change memory only: per attention module
the values and every gradient equal AlphaFold's settings' within 1e-5, with weights perturbed
so that no layer is zero; through a whole trunk (slow tier) the gradient stays as close to
float64 as AlphaFold's settings' own. The plan's batch is a synthetic chain through the real
training pipeline; it must have a real example's every shape.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold import cli, memory_plan
from jaxfold.model import config as model_config
from jaxfold.model.alphafold import initial_prev
from jaxfold.model.axial_attention import AttentionConfig
from jaxfold.model.msa_attention import MSARowAttentionWithPairBias
from jaxfold.model.triangle_attention import ENDING_NODE, TriangleAttention
from jaxfold.model.trunk import EmbeddingsAndEvoformer
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train.step import model_keys


def test_the_synthetic_example_has_a_real_examples_shapes(shared_dir):
  shapes = memory_plan.preset_shapes('model_1_ptm', 64, msa_clusters=28, extra_msa=96,
                                     num_recycle=2, train=True)
  config = memory_plan.train_config(shapes, memory_plan.global_config('lean', train=True))
  ours = memory_plan.training_example(config)
  real = training_batch(shared_dir, 'model_1_ptm', crop_size=64, max_msa_clusters=32,
                        max_extra_msa=96, num_recycle=2)
  assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {
      k: (v.shape, v.dtype) for k, v in real.items()}
  assert ours['msa_feat'].shape == (3, 28, 64, 49)  # the clusters less the 4 template rows
  assert ours['template_aatype'].shape == (3, 4, 64)


def _perturbed(params, seed):
  """Every weight moved off its initial value (AlphaFold zero-initialises output layers)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([p + 0.05 * jax.random.normal(k, p.shape, p.dtype)
                            for p, k in zip(leaves, keys)])


def _lean(subbatch_size, attention_chunk_size=256):
  return dataclasses.replace(memory_plan.global_config('lean', train=True), use_remat=False,
                             subbatch_size=subbatch_size,
                             attention_chunk_size=attention_chunk_size)


# The two orientations of the subbatched axis (rows; columns, transposed) and both kinds of
# bias (the pair's, a triangle's own); the starting node and column attention repeat them
# (`test_attention_core` checks the kernel's own gradients).
_MODULES = {
    'triangle_attention_ending_node': lambda gc: TriangleAttention(ENDING_NODE, gc),
    'msa_row_attention_with_pair_bias': lambda gc: MSARowAttentionWithPairBias(
        AttentionConfig(), gc),
}


@pytest.mark.parametrize('name', sorted(_MODULES))
def test_lean_training_settings_give_each_attentions_gradients(name):
  """Values and gradients (weights and inputs) with padded rows and columns: rows in
  subbatches of 8 (a shorter last one), attention in 8 x 8 blocks."""
  rng = np.random.default_rng(0)
  num_seq, num_res = 13, 21
  msa = rng.standard_normal((num_seq, num_res, 256)).astype(np.float32)
  pair = rng.standard_normal((num_res, num_res, 128)).astype(np.float32)
  seq_mask = (np.arange(num_res) < 18).astype(np.float32)
  msa_mask = (np.arange(num_seq) < 11)[:, None] * seq_mask[None, :]
  pair_mask = seq_mask[:, None] * seq_mask[None, :]
  if name.startswith('triangle'):
    inputs, mask, weights = [pair], pair_mask, rng.standard_normal(pair.shape)
  else:
    inputs, mask, weights = [msa, pair], msa_mask, rng.standard_normal(msa.shape)
  arguments = lambda x: (x[0], mask, *x[1:])  # (act, mask[, pair])
  modules = {'alphafold': _MODULES[name](memory_plan.global_config('alphafold', train=True)),
             'lean': _MODULES[name](_lean(8, attention_chunk_size=8))}
  params = _perturbed(modules['alphafold'].init(jax.random.key(0), *arguments(inputs)), seed=1)

  def objective(module):
    return lambda p, x: jnp.vdot(weights, module.apply(p, *arguments(x)))

  ref, ours = (jax.jit(jax.value_and_grad(objective(modules[k]), argnums=(0, 1)))(
      params, inputs) for k in ('alphafold', 'lean'))
  leaves = {jax.tree_util.keystr(path): (r, o) for (path, r), o in zip(
      jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(ours))}
  for path, (r, o) in leaves.items():
    scale = float(jnp.max(jnp.abs(r)))
    if name == 'msa_row_attention_with_pair_bias' and 'feat_2d_norm' in path and 'offset' in path:
      # Zero in exact arithmetic: the offset adds a constant over the keys to every logit,
      # which the softmax ignores; both are rounding noise, small beside the other weights'.
      scale = float(jnp.max(jnp.abs(leaves[path.replace('offset', 'scale')][0])))
    assert scale > 0, path
    assert float(jnp.max(jnp.abs(o - r))) <= 1e-5 * scale, path


@pytest.mark.slow
def test_lean_training_settings_keep_the_trunks_float32_gradient_error():
  """The trunk of model_1_ptm (one Evoformer and one extra-MSA block) with dropout, rows in
  subbatches of 8, under a random linear function of its outputs, judged against the
  same trunk in float64 (a few minutes: three compilations).

  With perturbed weights some triangle-attention softmaxes are nearly one-hot, and AlphaFold's
  own float32 gradient of those weights lies up to 2% from the float64 one (measured 1.96e-2,
  extra-MSA stack, ending node, query weights); no fixed tolerance separates correct from
  wrong there. Each leaf of the lean gradient must be within 1e-5 of float64 (relative to the
  leaf's largest entry) or within 10 times AlphaFold's settings' own error on it: measured at
  most 4.6 times, mostly below 2.
  """
  jax.config.update('jax_enable_x64', True)
  try:
    _trunk_gradient_errors()
  finally:
    jax.config.update('jax_enable_x64', False)


def _trunk_gradient_errors():
  network = model_config.reduced(model_config.preset('model_1_ptm'), num_block=1,
                                 extra_msa_num_block=1, num_recycle=0)
  shapes = memory_plan.preset_shapes('model_1_ptm', 24, msa_clusters=12, extra_msa=20,
                                     num_recycle=0, train=True)
  config = dataclasses.replace(
      memory_plan.train_config(shapes, memory_plan.global_config('alphafold', train=True)),
      model=network)
  example = memory_plan.training_example(config)
  batch = {**{k: jnp.asarray(example[k][0]) for k in model_keys(config) if k in example},
           **initial_prev(24, network.model)}
  evoformer = network.model.embeddings_and_evoformer
  settings = {'alphafold': memory_plan.global_config('alphafold', train=True),
              'lean': _lean(8)}
  settings['float64'] = dataclasses.replace(settings['alphafold'], dtype='float64')
  trunks = {name: EmbeddingsAndEvoformer(evoformer, gc) for name, gc in settings.items()}
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
  params = _perturbed(trunks['alphafold'].init(rngs, batch, deterministic=False)['params'], 2)
  outputs = jax.eval_shape(lambda: trunks['alphafold'].apply(
      {'params': params}, batch, deterministic=False, rngs=rngs))
  weights = {k: jax.random.normal(jax.random.key(3 + i), v.shape)
             for i, (k, v) in enumerate(sorted(outputs.items()))}

  def gradient(name):
    dtype = jnp.float64 if name == 'float64' else jnp.float32
    cast = lambda tree: jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def objective(p):
      out = trunks[name].apply({'params': p}, cast(batch), deterministic=False, rngs=rngs)
      return sum(jnp.vdot(cast(weights[k]), v.astype(dtype)) for k, v in out.items())
    return jax.jit(jax.grad(objective))(cast(params))

  grads = {name: jax.tree.leaves(gradient(name)) for name in trunks}
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  for path, exact, ref, ours in zip(paths, grads['float64'], grads['alphafold'], grads['lean']):
    scale = float(jnp.max(jnp.abs(exact)))
    if scale == 0:  # the template layers: the synthetic chain has no template hits
      assert float(jnp.max(jnp.abs(ours))) == 0, path
      continue
    ours_error = float(jnp.max(jnp.abs(ours - exact))) / scale
    reference_error = float(jnp.max(jnp.abs(ref - exact))) / scale
    assert ours_error <= max(1e-5, 10 * reference_error), (path, ours_error, reference_error)


@pytest.mark.slow
def test_plan_of_a_training_step(capsys):
  """One real compilation of a full-size training step (a few minutes)."""
  status = cli.main(['--quiet', 'plan', '--train', '--preset', 'model_3_ptm', '--crop', '32',
                     '--msa-clusters', '16', '--extra-msa', '32', '--num-recycle', '1',
                     '--json'])
  out, err = capsys.readouterr()
  assert status == 0, err
  plan = json.loads(out)
  assert plan['train'] and plan['settings'] == 'lean'
  assert plan['global_config']['attention'] == 'chunked'
  assert plan['global_config']['use_remat']
  # The arguments hold the parameters, their average and Adam's two moments (92.9 M float32
  # each; 1.49 GB planned), and the batch.
  assert 4 * 92e6 * 4 < plan['argument_bytes'] < 4 * 93e6 * 4 + 100e6
  assert plan['total_bytes'] == (plan['argument_bytes'] + plan['output_bytes']
                                 + plan['temp_bytes'] - plan['alias_bytes'])


@pytest.mark.slow
def test_plan_of_a_training_step_on_8_devices():
  """DAP over 8 simulated devices: the whole state on each, a part of the activations
  (AlphaFold's initial-training crop, where they outweigh the gradient and Adam's update)."""
  command = [sys.executable, '-m', 'jaxfold.cli', '--quiet', 'plan', '--train', '--preset',
             'model_3_ptm', '--crop', '256', '--msa-clusters', '128', '--extra-msa', '1024',
             '--num-recycle', '0', '--json']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  plans = [json.loads(subprocess.run(command + mesh, env=env, check=True, capture_output=True,
                                     text=True).stdout)
           for mesh in ([], ['--mesh', 'res=8'])]
  one, dap = plans
  assert dap['mesh'] == [['res', 8]] and one['mesh'] == []
  assert dap['argument_bytes'] == pytest.approx(one['argument_bytes'], rel=0.05)
  print(f"temporaries: one device {one['temp_bytes'] / 2**30:.2f} GiB, "
        f"res=8 {dap['temp_bytes'] / 2**30:.2f} GiB")
  assert dap['temp_bytes'] < one['temp_bytes'] / 2
