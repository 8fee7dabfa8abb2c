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


def reference_config(preset: str = 'model_1_ptm', deterministic: bool = True,
                     one_chunk: bool = False):
  """AlphaFold's model config for `preset`, with DeepMind's float32 settings.

  `one_chunk` turns AlphaFold's inference subbatching into a single chunk: it only bounds
  memory, and eager per-chunk dispatch is several times slower on CPU (ColabFold rejects
  None, so the chunk is made larger than any input).
  """
  from alphafold.model import config as af_config  # pylint: disable=import-outside-toplevel
  cfg = af_config.model_config(preset)
  gc = cfg.model.global_config
  gc.bfloat16 = False
  gc.use_pallas = False
  gc.deterministic = deterministic
  if one_chunk:
    gc.subbatch_size = 1 << 20
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


def run_reference(fn: Callable[..., Any], inputs: Mapping[str, Any], seed: int = 0,
                  jit: bool = False) -> tuple[dict, Any]:
  """Runs `fn(**inputs)` inside `hk.transform` with perturbed random weights.

  Returns (haiku params, outputs). `fn` builds the AlphaFold module and calls it. `jit`
  compiles init and apply whole, faster on CPU for large modules (e.g. a whole block).
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  transformed = hk.transform(fn)
  init, apply = ((jax.jit(transformed.init), jax.jit(transformed.apply)) if jit
                 else (transformed.init, transformed.apply))
  key = jax.random.key(seed)
  params = perturb(init(key, **inputs), seed)
  return params, apply(params, key, **inputs)


def flax_params(haiku_params: Mapping[str, Mapping[str, Any]]) -> dict:
  """The jaxfold tree of a reference module's parameters (its single top-level module)."""
  tree = from_haiku(haiku_params)
  if len(tree) != 1:
    raise ValueError(f'expected one top-level module, got {sorted(tree)}')
  return next(iter(tree.values()))


def config_from_reference(cls: type, node: Mapping[str, Any]) -> Any:
  """The typed jaxfold config `cls` (a dataclass) filled from an AlphaFold ConfigDict node.

  Fields absent from `node` keep their defaults; dataclass-typed fields are converted
  recursively, so `config_from_reference(EvoformerIterationConfig, cfg...evoformer)` is
  AlphaFold's configuration in jaxfold's types.
  """
  import dataclasses  # pylint: disable=import-outside-toplevel
  import typing  # pylint: disable=import-outside-toplevel
  hints = typing.get_type_hints(cls)
  values = {}
  for field in dataclasses.fields(cls):
    if field.name not in node:
      continue
    value = node[field.name]
    if dataclasses.is_dataclass(hints[field.name]):
      value = config_from_reference(hints[field.name], value)
    values[field.name] = value
  return cls(**values)


def reference_params(fn: Callable[..., Any], inputs: Mapping[str, Any], seed: int = 0,
                     *, from_shapes: bool = False) -> dict:
  """Perturbed random haiku parameters of the reference `fn` builds (as `run_reference`).

  The init is compiled. With `from_shapes` it is not run at all: only its parameter names
  and shapes are traced, and the noise of `perturb` is added to AlphaFold's constant
  initial values (LayerNorm `scale` and gate bias `gating_b` one, all else zero). For a
  whole trunk this takes seconds where compiling the random init takes minutes on CPU;
  the weights differ in distribution only by the init's own random part. Pair with
  `apply_reference` to run several variants of a module on one set of weights.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  init = hk.transform(fn).init
  key = jax.random.key(seed)
  if not from_shapes:
    return perturb(jax.jit(init)(key, **inputs), seed)
  shapes = jax.eval_shape(init, key, **inputs)
  constant = {path: {name: np.full(s.shape, 1.0 if name in ('scale', 'gating_b') else 0.0,
                                   s.dtype)
                     for name, s in leaves.items()}
              for path, leaves in shapes.items()}
  return perturb(constant, seed)


def apply_reference(fn: Callable[..., Any], params: Mapping[str, Mapping[str, Any]],
                    inputs: Mapping[str, Any], seed: int = 0, *, jit: bool = False) -> Any:
  """Runs `fn(**inputs)` inside `hk.transform` with the given haiku parameters.

  `jit` compiles the whole call (much faster than eager dispatch for a trunk).
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  apply = hk.transform(fn).apply
  if jit:
    apply = jax.jit(apply)
  return apply(params, jax.random.key(seed), **inputs)
