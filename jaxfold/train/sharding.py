"""Meshes and sharding rules: data parallelism, FSDP, DAP and their combination, as data.

A run names its mesh as `(axis, size)` pairs over the mesh axes 'data', 'fsdp' and 'res'
(size -1: the devices left over) and picks one of `LAYOUTS`, a table from logical axis names
to mesh axes. Parameters get logical names from their AlphaFold path (`param_axes`);
activations name theirs inside the Evoformer (`jaxfold.model.logical_axes`); the batch
axis is 'batch'. `jax.jit` with these shardings lets XLA place every collective: nothing
here communicates by hand, and the same step runs on one device or many.

- 'data': examples split over 'data'; parameters and Adam state replicated.
- 'fsdp': examples split over 'data' x 'fsdp'; each weight (and its Adam moments and
  average) split over 'fsdp' by input channels, or output channels where those do not split,
  gathered layer by layer when used.
- 'dap': FastFold's dynamic axial parallelism: examples over 'data', and one example's MSA
  rows, pair rows or columns over 'res', switched for column-wise modules.
- 'fsdp_dap': all three at once.
"""

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxfold.common.errors import JaxfoldError
from jaxfold.model.logical_axes import Rules, partition_spec

MESH_AXES = ('data', 'fsdp', 'res')

_DAP = {'msa_seq': 'res', 'res_i': 'res', 'res_j': 'res'}
LAYOUTS: dict[str, Rules] = {
    'data': {'batch': ('data',)},
    'fsdp': {'batch': ('data', 'fsdp'), 'channel_in': 'fsdp', 'channel_out': 'fsdp'},
    'dap': {'batch': ('data',), **_DAP},
    'fsdp_dap': {'batch': ('data', 'fsdp'), 'channel_in': 'fsdp', 'channel_out': 'fsdp',
                 **_DAP},
}

# (leaf name, axes after a stacked block's leading 'layers' axis) -> logical names, by
# AlphaFold's parameter names; the rest are vectors (biases, norms): 'channel'.
_PARAM_AXES = {
    ('weights', 2): ('channel_in', 'channel_out'),
    ('query_w', 3): ('channel_in', 'heads', 'head_dim'),
    ('key_w', 3): ('channel_in', 'heads', 'head_dim'),
    ('value_w', 3): ('channel_in', 'heads', 'head_dim'),
    ('key_w', 2): ('channel_in', 'head_dim'),  # global attention: one key and value head
    ('value_w', 2): ('channel_in', 'head_dim'),
    ('gating_w', 3): ('channel_in', 'heads', 'head_dim'),
    ('output_w', 3): ('heads', 'head_dim', 'channel_out'),
    ('gating_b', 2): ('heads', 'head_dim'),
    ('feat_2d_weights', 2): ('channel_in', 'heads'),
}
_STACKED = ('evoformer_iteration', 'extra_msa_stack', 'template_pair_stack')


class ShardingError(JaxfoldError):
  """A mesh or layout that does not fit the devices or the config."""


def parse_mesh(text: str) -> tuple[tuple[str, int], ...]:
  """'data=2,fsdp=2,res=2' -> (('data', 2), ('fsdp', 2), ('res', 2))."""
  axes = []
  for item in text.split(','):
    name, _, size = item.partition('=')
    try:
      axes.append((name.strip(), int(size)))
    except ValueError:
      raise ShardingError(f'--mesh {text}: expected axis=size pairs such as data=2,res=4, '
                          f'got {item!r}') from None
  return tuple(axes)


def make_mesh(axes: Sequence[tuple[str, int]], layout: str,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh over all processes' devices: `axes` as (name, size), one size may be -1.

  Every mesh axis the layout does not use must have size 1. Across several TPU slices the
  'data' axis spans the slices (data-parallel traffic over DCN), the rest stays in a slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  if layout not in LAYOUTS:
    raise ShardingError(f'unknown sharding {layout!r}; one of {", ".join(LAYOUTS)}')
  sizes = dict(axes)
  unknown = sorted(set(sizes) - set(MESH_AXES))
  if unknown or len(sizes) != len(axes):
    raise ShardingError(f'mesh {format_mesh(axes)}: axes must be distinct names out of '
                        f'{", ".join(MESH_AXES)}')
  if sum(size == -1 for size in sizes.values()) > 1:
    raise ShardingError(f'mesh {format_mesh(axes)}: at most one axis may be -1')
  known = math.prod(size for size in sizes.values() if size != -1)
  if known <= 0 or len(devices) % known:
    raise ShardingError(f'mesh {format_mesh(axes)} does not divide {len(devices)} devices')
  shape = [sizes.get(name, 1) for name in MESH_AXES]
  shape = [len(devices) // known if size == -1 else size for size in shape]
  if math.prod(shape) != len(devices):
    raise ShardingError(f'mesh {format_mesh(axes)} has {math.prod(shape)} devices, not the '
                        f'{len(devices)} there are')
  used = {axis for target in LAYOUTS[layout].values() for axis in _mesh_axes(target)}
  idle = [f'{name}={size}' for name, size in zip(MESH_AXES, shape)
          if size > 1 and name not in used]
  if idle:
    raise ShardingError(f'mesh {format_mesh(axes)}: sharding {layout!r} does not use '
                        f'{", ".join(idle)}; pick a layout that does, or size 1')
  slices = len({getattr(d, 'slice_index', 0) for d in devices})
  if slices > 1:
    if shape[0] % slices:
      raise ShardingError(f'mesh {format_mesh(axes)}: data={shape[0]} does not split over '
                          f'{slices} slices')
    ici = [shape[0] // slices] + shape[1:]
    grid = mesh_utils.create_hybrid_device_mesh(ici, [slices, 1, 1], devices)
  else:
    grid = mesh_utils.create_device_mesh(shape, devices)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def format_mesh(axes: Sequence[tuple[str, int]]) -> str:
  """(('data', 2), ('res', 4)) -> 'data=2,res=4'."""
  return ','.join(f'{name}={size}' for name, size in axes)


def _mesh_axes(target: str | tuple[str, ...] | None) -> tuple[str, ...]:
  if target is None:
    return ()
  return (target,) if isinstance(target, str) else tuple(target)


def param_axes(path: Sequence[str], ndim: int) -> tuple[str | None, ...]:
  """Logical names of a parameter's axes from its AlphaFold path: a leading 'layers' axis in
  stacked blocks, then by leaf name; vectors (biases, norms) are 'channel'."""
  stacked = ('layers',) if any(name in _STACKED for name in path) else ()
  rest = ndim - len(stacked)
  names = _PARAM_AXES.get((path[-1], rest))
  if names is None and rest > 1:
    raise ShardingError(f'parameter {"/".join(path)}: no logical axes for a {rest}-axis '
                        f'{path[-1]!r}; name them in jaxfold/train/sharding.py')
  return stacked + (names or ('channel',) * rest)


def _fitting_spec(shape: Sequence[int], names: Sequence[str | None], mesh: Mesh,
                  rules: Rules) -> PartitionSpec:
  """The rules' PartitionSpec, left to right; an axis stays replicated where its mesh axes do
  not divide it evenly or an earlier axis already took them (so FSDP splits a weight's input
  channels, or its output channels when those do not split)."""
  spec, taken = [], set()
  for size, target in zip(shape, partition_spec(names, rules)):
    axes = _mesh_axes(target)
    split = math.prod(mesh.shape[axis] for axis in axes)
    fits = split > 1 and size % split == 0 and not taken & set(axes)
    spec.append(target if fits else None)
    taken |= set(axes) if fits else set()
  return PartitionSpec(*spec)


def param_shardings(params: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedSharding per parameter leaf (arrays or shape structs in AlphaFold's tree)."""
  def leaf(path, x):
    names = param_axes([str(getattr(k, 'key', k)) for k in path], len(x.shape))
    return NamedSharding(mesh, _fitting_spec(x.shape, names, mesh, rules))
  return jax.tree_util.tree_map_with_path(leaf, params)


def state_shardings(state: Any, mesh: Mesh, rules: Rules,
                    tx: optax.GradientTransformation) -> Any:
  """Shardings of a TrainState (or its shape structs): parameters, their average and Adam's
  moments by `param_shardings`; counters, the RNG and the rest replicated."""
  whole = replicated(mesh)
  params = param_shardings(state.params, mesh, rules)
  opt_state = optax.tree_map_params(
      tx, lambda _, sharding: sharding, state.opt_state, params,
      transform_non_params=lambda _: whole)
  return state.replace(step=whole, params=params, ema_params=params, opt_state=opt_state,
                       rng=whole, skipped_steps=whole)


def batch_axes(mesh: Mesh, rules: Rules) -> tuple[str, ...]:
  """The mesh axes the examples of a batch are split over."""
  return tuple(axis for axis in _mesh_axes(rules.get('batch')) if mesh.shape[axis] > 1)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """Sharding of a batch leaf [examples, ...]: the example axis split by the rules."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh, rules) or None))


def batch_split(mesh: Mesh, rules: Rules) -> int:
  """Into how many parts the examples of a micro-batch are split."""
  return int(np.prod([mesh.shape[axis] for axis in batch_axes(mesh, rules)], dtype=int))


def describe(mesh: Mesh, layout: str) -> str:
  """'data=2 fsdp=2 res=2 (fsdp_dap) over 8 cpu devices in 1 process'."""
  axes = ' '.join(f'{name}={size}' for name, size in mesh.shape.items())
  devices = mesh.devices.ravel()
  return (f'{axes} ({layout}) over {len(devices)} {devices[0].platform} devices in '
          f'{jax.process_count()} process' + ('es' if jax.process_count() > 1 else ''))


def micro_batch_size(configured: int | None, global_batch_size: int, mesh: Mesh | None,
                     rules: Rules) -> int:
  """Examples per accumulation step: `configured`, or one per device the examples are split
  over; it must split evenly over those devices and divide the global batch."""
  split = batch_split(mesh, rules) if mesh else 1
  micro = configured or split
  if micro % split or global_batch_size % micro:
    raise ShardingError(
        f'micro_batch_size {micro} must be a multiple of the {split} devices the examples are '
        f'split over ({" x ".join(batch_axes(mesh, rules)) or "none"}) and divide '
        f'global_batch_size {global_batch_size}')
  return micro


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local: Any, batch_sharding: NamedSharding) -> Any:
  """The global batch from this process's examples (its contiguous block of the batch)."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(batch_sharding, np.asarray(x)), local)


def abstract(tree: Any, shardings: Any) -> Any:
  """Shape structs carrying shardings: orbax restores onto them, on this mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
