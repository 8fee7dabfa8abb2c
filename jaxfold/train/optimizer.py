"""AlphaFold's optimizer: Adam on a warm-up-then-step learning rate, clipping, and the EMA.

Jumper et al. (2021) Suppl. 1.11.3: the learning rate rises linearly to its peak over the
first `warmup_steps` updates and is multiplied by `decay_factor` from update `decay_steps`
on; Adam(b1, b2, eps); gradients are clipped to a global norm (per example before averaging,
or the batch mean); an exponential moving average of the parameters (decay 0.999) is what
validation and exported weights use.
"""

from typing import Any

import jax.numpy as jnp
import optax

from jaxfold.train.config import OptimizerConfig


def learning_rate(config: OptimizerConfig) -> optax.Schedule:
  """Learning rate of update number `count` (0 for the first): peak * min(1, (count + 1) /
  warmup) times `decay_factor` once count >= decay_steps. The first update is not zero."""
  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warmup = jnp.minimum(1.0, (count + 1) / max(config.warmup_steps, 1))
    decay = jnp.where(count >= config.decay_steps, config.decay_factor, 1.0)
    return config.learning_rate * warmup * decay
  return schedule


def adam(config: OptimizerConfig) -> optax.GradientTransformation:
  """Adam on `learning_rate(config)`; clipping happens before it, in the train step."""
  return optax.adam(learning_rate(config), b1=config.b1, b2=config.b2, eps=config.eps)


def clip(grads: Any, max_norm: float) -> Any:
  """`grads` scaled to global norm at most `max_norm` (unchanged when already within)."""
  clipped, _ = optax.clip_by_global_norm(max_norm).update(grads, optax.EmptyState())
  return clipped


def ema_update(ema: Any, params: Any, decay: float) -> Any:
  """decay * ema + (1 - decay) * params, leaf by leaf."""
  return optax.incremental_update(params, ema, step_size=1.0 - decay)

