"""The parameter schema of an AlphaFold checkpoint for a given model configuration."""

import jax
import numpy as np

from jaxfold.convert import alphafold_npz
from jaxfold.convert.haiku_tree import to_haiku
from jaxfold.model.alphafold import AlphaFold, feature_shapes
from jaxfold.model.config import ModelConfig


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every parameter as AlphaFold's checkpoint names it ('alphafold/...//name') -> shape.

  Traced with `jax.eval_shape` on feature shapes only: nothing is computed. For DeepMind's
  presets this equals the released `params_<preset>.npz` key for key.
  """
  batch = feature_shapes(config, num_res=4, num_seq=2, num_extra=2)
  variables = jax.eval_shape(AlphaFold(config).init, jax.random.key(0), batch)
  return {f'{path}//{name}': tuple(leaf.shape)
          for path, leaves in to_haiku(variables['params'], root='alphafold').items()
          for name, leaf in leaves.items()}


def random_parameters(config: ModelConfig, seed: int = 0, scale: float = 0.02) -> dict:
  """Every parameter drawn from N(0, scale²), float32: weights to try the pipeline with (the
  structures mean nothing). No layer is zero-initialised, as AlphaFold's own initialisers
  leave several, and 0.02 keeps every activation of the 48-block Evoformer finite."""
  rng = np.random.default_rng(seed)
  return alphafold_npz.unflatten({
      key: (scale * rng.standard_normal(shape, dtype=np.float32))
      for key, shape in sorted(parameter_shapes(config).items())})
