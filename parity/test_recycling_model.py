"""The whole model with recycling (Suppl. Alg. 2) against AlphaFold's, end to end.

Real features: AlphaFold's feature dict of the query73 protein, processed by AlphaFold's own
pipeline (`features.np_example_to_features`), so MSA clustering, extra-MSA sampling and the
per-recycle resampling are DeepMind's. The models are the presets at full width with few
blocks (`config.reduced`) and small MSA sizes: each test compiles and runs in about a minute
on two CPU cores, most of it compilation. ColabFold's
`modules.AlphaFold` runs one recycling iteration per call; the reference loops outside,
feeding each call the slice of its iteration and the previous iteration's `prev`.
The full-size parameter tree must equal DeepMind's released checkpoints' key for key.
"""

import dataclasses
import functools
import json
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any

import haiku as hk
import jax
import numpy as np
import pytest
from alphafold.model import features as af_features
from alphafold.model import modules as af_modules

from jaxfold.convert.haiku_tree import from_haiku, to_haiku
from jaxfold.model import config
from jaxfold.model.alphafold import AlphaFold, initial_prev
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_reference import (config_from_reference, reference_config,
                                                reference_params)

# Small MSA sizes: the query73 alignment still fills them, so no row is padding.
MSA_SIZES = {'data.eval.max_msa_clusters': 32, 'data.common.max_extra_msa': 64}
# Head outputs compared as they are. AlphaFold's predicted-aligned-error head output is
# replaced by its confidence metrics (ret['predicted_aligned_error'] becomes the PAE
# array), so that head is compared through its softmax, 'aligned_confidence_probs'.
HEADS = ('distogram', 'masked_msa', 'experimentally_resolved', 'predicted_lddt')
PAE_METRICS = ('aligned_confidence_probs', 'predicted_aligned_error',
               'max_predicted_aligned_error', 'ptm')


def reduced_config(preset: str, num_ensemble: int, num_recycle: int) -> config.AlphaFoldConfig:
  """jaxfold's reduced `preset` with the test's MSA sizes, ensemble and recycling counts."""
  return config.replace(config.reduced(config.preset(preset), num_recycle=num_recycle),
                        {**MSA_SIZES, 'data.eval.num_ensemble': num_ensemble})


def _write_into_reference(ours: Any, node: Any) -> None:
  """Sets every field of the jaxfold config `ours` on AlphaFold's ConfigDict `node`.

  Only differing values are written (ConfigDict keeps each field's type). Fields AlphaFold
  lacks are skipped; the caller's round trip through `config_from_reference` catches any
  such field that the reduction changed.
  """
  for field in dataclasses.fields(ours):
    if field.name not in node:
      continue
    value = getattr(ours, field.name)
    if dataclasses.is_dataclass(value):
      _write_into_reference(value, node[field.name])
    elif node[field.name] != value:
      node[field.name] = value


def _dotted(config_: Any, prefix: str = '') -> dict[str, Any]:
  """{'model.num_recycle': 3, ...}: every leaf field of a nested config dataclass."""
  out = {}
  for field in dataclasses.fields(config_):
    value = getattr(config_, field.name)
    out.update(_dotted(value, f'{prefix}{field.name}.') if dataclasses.is_dataclass(value)
               else {prefix + field.name: value})
  return out


def alphafold_config(ours: config.AlphaFoldConfig, preset: str) -> Any:
  """AlphaFold's ConfigDict for `preset` (float32, one chunk) carrying `ours`' values."""
  cfg = reference_config(preset, one_chunk=True)
  _write_into_reference(ours, cfg)
  ours_fields = _dotted(ours)
  back = _dotted(config_from_reference(config.AlphaFoldConfig, cfg))
  lost = sorted(k for k, v in ours_fields.items() if back[k] != v)
  if lost:
    raise ValueError(f'{preset}: fields that did not carry over to AlphaFold\'s config: {lost}')
  return cfg


@functools.lru_cache(maxsize=None)
def processed_features(shared: pathlib.Path, preset: str, num_ensemble: int, num_recycle: int
                       ) -> tuple[config.AlphaFoldConfig, Any, dict[str, np.ndarray]]:
  """(jaxfold config, AlphaFold config, processed features) of query73 for the reduced preset.

  shared: the shared data folder (the `shared_dir` fixture). Every feature has a leading
  axis of (num_recycle + 1) * num_ensemble.
  """
  ours = reduced_config(preset, num_ensemble, num_recycle)
  cfg = alphafold_config(ours, preset)
  with open(shared / 'data' / 'features' / 'alphafold_feature_dict.pickle', 'rb') as f:
    raw = pickle.load(f)
  feat = af_features.np_example_to_features(raw, cfg, random_seed=0)
  return ours, cfg, {k: np.asarray(v) for k, v in feat.items()}


@functools.lru_cache(maxsize=None)
def alphafold_run(shared: pathlib.Path, preset: str, num_ensemble: int = 1, num_recycle: int = 2
                  ) -> tuple[config.AlphaFoldConfig, dict, dict, dict]:
  """(jaxfold config, processed features, haiku params, AlphaFold's last outputs).

  Weights: AlphaFold's initial values with noise (`reference_params(from_shapes=True)`).
  Iteration r reads slice [r * E, (r + 1) * E) of the features and the previous `prev`.
  """
  ours, cfg, feat = processed_features(shared, preset, num_ensemble, num_recycle)

  def forward(batch, prev):
    return af_modules.AlphaFold(cfg.model)(
        {**batch, 'prev': prev}, is_training=False, ensemble_representations=num_ensemble > 1,
        return_representations=True)

  def iteration_slice(r):
    return {k: v[r * num_ensemble:(r + 1) * num_ensemble] for k, v in feat.items()}

  prev = initial_prev(feat['aatype'].shape[1], ours.model)
  params = reference_params(forward, {'batch': iteration_slice(0), 'prev': prev},
                            from_shapes=True)
  apply = jax.jit(hk.transform(forward).apply)
  for r in range(num_recycle + 1):
    ref = apply(params, jax.random.key(0), iteration_slice(r), prev)
    prev = ref['prev']
  return ours, feat, params, jax.tree.map(np.asarray, ref)


def jaxfold_run(ours: config.AlphaFoldConfig, feat: Mapping[str, np.ndarray],
                params: Mapping[str, Mapping[str, np.ndarray]],
                global_config: GlobalConfig = GlobalConfig()) -> dict:
  """jaxfold's AlphaFold on AlphaFold's weights: all recycling iterations in one call."""
  model = AlphaFold(ours.model, global_config)
  run = jax.jit(lambda p, b: model.apply({'params': p}, b,
                                         num_ensemble=ours.data.eval.num_ensemble,
                                         return_representations=True))
  return jax.tree.map(np.asarray, run(from_haiku(params, root='alphafold'), dict(feat)))


def check_outputs(parity, name: str, ours: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
  """Representations, atom positions, head outputs and confidences, each within tolerance."""
  parity.check(f'{name}/representations', ours['representations'], ref['representations'])
  parity.check(f'{name}/final_atom_positions',
               ours['structure_module']['final_atom_positions'],
               ref['structure_module']['final_atom_positions'])
  for head in HEADS:
    parity.check(f'{name}/{head}', ours[head], ref[head])
  metrics = ('plddt',) + (PAE_METRICS if 'ptm' in ref else ())
  assert ('predicted_aligned_error' in ours) == ('ptm' in ref)
  parity.check(f'{name}/confidence', {k: ours['confidence'][k] for k in metrics},
               {k: ref[k] for k in metrics})


# model_3_ptm (no templates) is in the slow tier: ~60 s, and its layers are checked one by one.
@pytest.mark.parametrize('preset', ['model_1_ptm',
                                    pytest.param('model_3_ptm', marks=pytest.mark.slow)])
def test_alphafold_with_recycling(parity, shared_dir, preset):
  """Two recycling iterations, each on its own resampled MSA slice."""
  ours_cfg, feat, params, ref = alphafold_run(shared_dir, preset, num_ensemble=1, num_recycle=2)
  assert feat['aatype'].shape[0] == 3
  check_outputs(parity, f'alphafold[{preset}]', jaxfold_run(ours_cfg, feat, params), ref)


def test_alphafold_with_recycling_and_chunked_attention(parity, shared_dir):
  """Every attention (MSA row and column, triangle, template pointwise) through the chunked
  core, 73 residues in chunks of 16 (the last padded): the same figures as the reference
  implementation."""
  ours_cfg, feat, params, ref = alphafold_run(shared_dir, 'model_1_ptm', num_ensemble=1,
                                              num_recycle=2)
  chunked = GlobalConfig(attention='chunked', attention_chunk_size=16)
  check_outputs(parity, 'alphafold[model_1_ptm, chunked attention]',
                jaxfold_run(ours_cfg, feat, params, chunked), ref)


@pytest.mark.slow  # ~2 min; CASP14's ensembled mode, outside training and default inference
def test_alphafold_ensembling(parity, shared_dir):
  """CASP14 mode: two ensemble members per iteration, representations averaged (line 17)."""
  ours_cfg, feat, params, ref = alphafold_run(shared_dir, 'model_1_ptm', num_ensemble=2,
                                              num_recycle=1)
  assert feat['aatype'].shape[0] == (1 + 1) * 2
  # The two members differ (their MSA samples do), so averaging is exercised.
  assert not np.array_equal(feat['msa_feat'][0], feat['msa_feat'][1])
  check_outputs(parity, 'alphafold[model_1_ptm, 2 members]',
                jaxfold_run(ours_cfg, feat, params), ref)


@pytest.mark.parametrize('preset', ['model_1', 'model_1_ptm', 'model_3_ptm'])
def test_parameter_tree_equals_alphafold_checkpoint(shared_dir, preset):
  """Names and shapes of every parameter at full size, as in DeepMind's params_<preset>.npz."""
  with open(shared_dir / 'fixtures' / 'alphafold' / f'{preset}_manifest.json') as f:
    manifest = {key: tuple(shape) for key, shape in json.load(f).items()}
  # Parameter shapes do not depend on the MSA sizes: reuse the small processed features.
  _, _, feat = processed_features(shared_dir, preset, 1, 0)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in feat.items()}
  shapes = jax.eval_shape(AlphaFold(config.preset(preset).model).init, jax.random.key(0), batch)
  ours = {f'{path}//{name}': tuple(leaf.shape)
          for path, leaves in to_haiku(shapes['params'], root='alphafold').items()
          for name, leaf in leaves.items()}
  assert ours.keys() == manifest.keys(), sorted(ours.keys() ^ manifest.keys())
  assert ours == manifest
