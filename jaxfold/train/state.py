"""The training state: everything a checkpoint holds to continue a run bit for bit."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxfold.model.alphafold import AlphaFold, feature_shapes
from jaxfold.model.config import AlphaFoldConfig


@flax.struct.dataclass
class TrainState:
  """step: optimizer steps taken, skipped ones included (the data stream's position);
  params / ema_params: the trained and the averaged parameters (float32); opt_state: Adam's;
  rng: the raw key (uint32) the next step splits; skipped_steps: steps not applied because
  their loss or gradient was not finite."""
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array
  skipped_steps: jax.Array


def init_params(config: AlphaFoldConfig, key: jax.Array) -> Any:
  """Freshly initialised parameters (AlphaFold's initialisers, zero-initialised outputs)."""
  shapes = feature_shapes(config.model, num_res=8, num_seq=2, num_extra=2)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
  model = AlphaFold(config.model)
  return jax.jit(lambda k: model.init(k, batch, num_recycle=0)['params'])(key)


def create(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  """The state before the first step: EMA equal to `params`, Adam's moments zero."""
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.key(seed)),
                    skipped_steps=jnp.zeros((), jnp.int32))
