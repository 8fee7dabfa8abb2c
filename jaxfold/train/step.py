"""One optimizer step of AlphaFold's training (Jumper et al. 2021, Suppl. 1.11).

The step draws the number of recycling iterations for the whole global batch, computes each
example's loss and gradient (its own dropout key; only the last iteration differentiated,
the earlier ones under stop-gradient inside the model), clips each example's gradient to
the global norm (or the batch mean, by config), averages over the batch by accumulating
micro-batches in a `lax.scan`, applies Adam and updates the parameter average. A step
whose loss or gradient is not finite changes nothing but the step and skip counters.

Batch: the data pipeline's training batches stacked to [global batch, slices, ...]; the
labels of an example are those of the slice its last iteration reads.
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxfold.loss.total import alphafold_loss
from jaxfold.model import logical_axes
from jaxfold.model.alphafold import AlphaFold, feature_shapes
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.template_embedding import TORSION_FEATURES
from jaxfold.train import optimizer, sharding
from jaxfold.train.config import TrainConfig
from jaxfold.train.state import TrainState

Batch = Mapping[str, jax.Array]


def global_config(config: TrainConfig) -> GlobalConfig:
  return GlobalConfig(dtype=config.dtype, use_remat=config.use_remat,
                      subbatch_size=config.subbatch_size, attention=config.attention)


def model_keys(config: TrainConfig) -> frozenset[str]:
  """The batch keys the network reads (the rest are labels)."""
  shapes = feature_shapes(config.model.model, 1, 1, 1, template_torsions=True)
  return frozenset(shapes) | {f'template_{k}' for k in TORSION_FEATURES}


def example_loss_fn(config: TrainConfig) -> Callable[..., tuple[jax.Array, dict]]:
  """fn(params, example, dropout_key, num_recycle) -> (loss, breakdown) of one example."""
  model = AlphaFold(config.model.model, global_config(config))
  keys = model_keys(config)

  def fn(params, example, dropout_key, num_recycle):
    features = {k: v for k, v in example.items() if k in keys}
    outputs = model.apply({'params': params}, features, num_recycle=num_recycle,
                          deterministic=not config.dropout, rngs={'dropout': dropout_key})
    # Loss in float32 whatever the compute dtype.
    outputs = jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, outputs)
    last = jnp.minimum(num_recycle, example['aatype'].shape[0] - 1)
    labels = {k: v[last] for k, v in example.items()}
    return alphafold_loss(outputs, labels, config.loss)
  return fn


def _scalars(breakdown: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The entries that are one number per example ([micro-batch])."""
  return {k: v for k, v in breakdown.items() if jnp.ndim(v) == 1}


def make_train_step(config: TrainConfig, tx: optax.GradientTransformation,
                    loss_fn: Callable[..., tuple[jax.Array, dict]] | None = None,
                    mesh: Mesh | None = None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """step(state, batch) -> (state, metrics); batch leaves are [global_batch_size, ...].

  loss_fn: fn(params, example, dropout_key, num_recycle) -> (loss, breakdown) of one example;
    default `example_loss_fn(config)`, AlphaFold's model and loss.
  mesh: the devices the step is jitted over; the layout `config.sharding` then splits each
    micro-batch's examples over its batch axes and shards the activations by its rules.
    Micro-batch a of k holds the examples m * k + a, so a batch split over the
    devices in contiguous blocks splits every micro-batch alike, with no data moved.

  metrics: the batch mean of the total loss and of every scalar in its breakdown,
  'grad_norm' (mean over examples, before clipping), 'learning_rate' (of this update),
  'num_recycle', 'skipped' (1 when this step was not applied) and 'skipped_steps'.
  """
  opt = config.optimizer
  value_and_grad = jax.value_and_grad(loss_fn or example_loss_fn(config), has_aux=True)
  rules = sharding.LAYOUTS[config.sharding] if mesh else {}
  split_over = sharding.batch_axes(mesh, rules) if mesh else ()
  # FSDP keeps parameters, EMA and Adam's moments split, but the forward and backward passes
  # use the parameters whole, gathered once per step (model_1's 93M are 0.37 GB in float32):
  # left to itself XLA gathered the examples' activations to where a weight's shard lies.
  gather_params = mesh is not None and bool({'channel_in', 'channel_out'} & set(rules))
  micro = sharding.micro_batch_size(config.micro_batch_size, config.global_batch_size, mesh,
                                    rules)
  accumulate = config.global_batch_size // micro
  if micro == 1:  # the usual case: no batch axis to vectorise
    per_example = lambda p, e, k, n: jax.tree.map(
        lambda x: x[None], value_and_grad(p, *jax.tree.map(lambda x: x[0], (e, k)), n))
  else:
    per_example = jax.vmap(value_and_grad, in_axes=(None, 0, 0, None),
                           spmd_axis_name=split_over or None)
  schedule = optimizer.learning_rate(opt)

  def micro_batches(x):  # [global, ...] -> [accumulate, micro, ...], examples m * accumulate + a
    x = x.reshape((micro, accumulate) + x.shape[1:]).swapaxes(0, 1)
    if split_over:
      x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, split_over)))
    return x

  def train_step(state: TrainState, batch: Batch):
    if mesh is None:
      return _train_step(state, batch)
    with logical_axes.use_rules(mesh, rules):  # read while the step is traced
      return _train_step(state, batch)

  def _train_step(state: TrainState, batch: Batch):
    rng, recycle_key, dropout_key = jax.random.split(jax.random.wrap_key_data(state.rng), 3)
    num_recycle = jax.random.randint(recycle_key, (), 0, config.max_num_recycle + 1)
    keys = micro_batches(jax.random.split(dropout_key, config.global_batch_size))
    batch = jax.tree.map(micro_batches, batch)
    whole = state.params
    if gather_params:
      whole = jax.lax.with_sharding_constraint(whole, sharding.replicated(mesh))

    def micro_step(total, inputs):
      examples, example_keys = inputs
      (loss, breakdown), grads = per_example(whole, examples, example_keys, num_recycle)
      norms = jax.vmap(optax.tree.norm)(grads)
      if opt.clip_per_example:
        grads = jax.vmap(lambda g: optimizer.clip(g, opt.clip_norm))(grads)
      total = jax.tree.map(lambda t, g: t + g.sum(0), total, grads)
      return total, (loss, _scalars(breakdown), norms)

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    total, (losses, breakdowns, norms) = jax.lax.scan(micro_step, zeros, (batch, keys))
    grads = jax.tree.map(lambda g: g / config.global_batch_size, total)
    if not opt.clip_per_example:
      grads = optimizer.clip(grads, opt.clip_norm)
    loss = losses.mean()
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = optimizer.ema_update(state.ema_params, params, opt.ema_decay)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    skipped = state.skipped_steps + jnp.where(finite, 0, 1)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params),
        ema_params=keep(ema, state.ema_params), opt_state=keep(opt_state, state.opt_state),
        rng=jax.random.key_data(rng), skipped_steps=skipped)
    metrics = {k: v.mean() for k, v in breakdowns.items()}
    metrics.update(loss=loss, grad_norm=norms.mean(), num_recycle=num_recycle,
                   learning_rate=schedule(state.step - state.skipped_steps),  # Adam's update count
                   skipped=1 - finite.astype(jnp.int32), skipped_steps=skipped)
    return new_state, metrics
  return train_step


def jit_train_step(config: TrainConfig, tx: optax.GradientTransformation, mesh: Mesh,
                   state_shardings: TrainState,
                   loss_fn: Callable[..., tuple[jax.Array, dict]] | None = None
                   ) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
  """`make_train_step` jitted over `mesh`: the state in and out by `state_shardings` (the
  incoming state's buffers donated), the batch split by the layout, metrics replicated."""
  rules = sharding.LAYOUTS[config.sharding]
  return jax.jit(make_train_step(config, tx, loss_fn, mesh),
                 in_shardings=(state_shardings, sharding.batch_sharding(mesh, rules)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)
