"""The live AlphaFold (JAX/Haiku) reference: its config, perturbed random weights, runs.

Imports haiku and alphafold only when called: jaxfold itself never needs them. The
reference is ColabFold's packaging of DeepMind's code (`alphafold-colabfold`), set to
DeepMind's numerics: float32, no Pallas kernels, unfused triangle projections.
"""

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxfold.convert.haiku_tree import from_haiku


def reference_config(preset: str = 'model_1_ptm', deterministic: bool = True):
  """AlphaFold's model config for `preset`, with DeepMind's float32 settings."""
  from alphafold.model import config as af_config  # pylint: disable=import-outside-toplevel
  cfg = af_config.model_config(preset)
  gc = cfg.model.global_config
  gc.bfloat16 = False
  gc.use_pallas = False
  gc.deterministic = deterministic
  if 'fp8' in gc:
    gc.fp8 = False
  if 'length_buckets' in gc:
    gc.length_buckets = False

  def unfuse(node):
    for key, value in node.items():
      if key == 'fuse_projection_weights':
        node[key] = False
      elif hasattr(value, 'items'):
        unfuse(value)
  unfuse(cfg.model)
  return cfg


def perturb(params: Mapping[str, Mapping[str, Any]], seed: int = 0) -> dict:
  """Adds Gaussian noise to every parameter, so that no zero-initialised layer stays zero.

  Noise scale: 1/sqrt(fan-in) for matrices (fan-in = all axes but the last), 0.1 for
  vectors. Agreement of unperturbed AlphaFold weights would be trivial: its output
  projections and gates start at zero.
  """
  rng = np.random.default_rng(seed)
  out: dict = {}
  for path in sorted(params):
    out[path] = {}
    for name in sorted(params[path]):
      p = np.asarray(params[path][name])
      scale = 1.0 / np.sqrt(np.prod(p.shape[:-1])) if p.ndim >= 2 else 0.1
      out[path][name] = (p + scale * rng.standard_normal(p.shape)).astype(p.dtype)
  return out


def run_reference(fn: Callable[..., Any], inputs: Mapping[str, Any], seed: int = 0
                  ) -> tuple[dict, Any]:
  """Runs `fn(**inputs)` inside `hk.transform` with perturbed random weights.

  Returns (haiku params, outputs). `fn` builds the AlphaFold module and calls it.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  transformed = hk.transform(fn)
  key = jax.random.key(seed)
  params = perturb(transformed.init(key, **inputs), seed)
  return params, transformed.apply(params, key, **inputs)


def flax_params(haiku_params: Mapping[str, Mapping[str, Any]]) -> dict:
  """The jaxfold tree of a reference module's parameters (its single top-level module)."""
  tree = from_haiku(haiku_params)
  if len(tree) != 1:
    raise ValueError(f'expected one top-level module, got {sorted(tree)}')
  return next(iter(tree.values()))
