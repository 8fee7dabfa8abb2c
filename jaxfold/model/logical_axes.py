"""Logical axis names of the Evoformer's activations, and the sharding they ask for.

Layers only name their axes; which mesh axis (if any) a name maps to is the training
layer's choice (`jaxfold.train.sharding`), set for the duration of a trace by `use_rules`.
Outside such a context `constrain` returns its input unchanged, so inference and
single-device training trace exactly as before.

Names: 'msa_seq' (the MSA's sequence axis), 'res_i' (the pair's row axis), 'res_j' (the
pair's column axis, and the MSA's residue axis, its columns), 'channel'. A row-wise module
(attention along a row, AlphaFold's dropout orientation 'per_row') needs whole rows on a
device, so its input is split along the rows: 'msa_seq' or 'res_i'. A column-wise module
('per_column') is split along the columns, 'res_j'. Mapping all three to one mesh axis is
FastFold's dynamic axial parallelism: XLA inserts the all-to-all between a row-wise and a
column-wise module.
"""

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# logical name -> mesh axis name(s) or None (replicated)
Rules = Mapping[str, str | tuple[str, ...] | None]

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    'jaxfold_logical_axis_rules', default=None)

_WHOLE: contextvars.ContextVar[bool] = contextvars.ContextVar('jaxfold_rows_whole',
                                                                default=False)

MSA_AXES = {'per_row': ('msa_seq', None, 'channel'), 'per_column': (None, 'res_j', 'channel')}
PAIR_AXES = {'per_row': ('res_i', None, 'channel'), 'per_column': (None, 'res_j', 'channel')}


@contextlib.contextmanager
def use_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """While active, `constrain` shards activations on `mesh` by `rules`."""
  token = _ACTIVE.set((mesh, rules))
  try:
    yield
  finally:
    _ACTIVE.reset(token)


@contextlib.contextmanager
def rows_whole() -> Iterator[None]:
  """While active, `residue_devices` is 1: for a chunked loop along an axis the rules do not
  split (slicing it is local to each device)."""
  token = _WHOLE.set(True)
  try:
    yield
  finally:
    _WHOLE.reset(token)


def residue_devices() -> int:
  """How many devices the active rules split the pair's rows over ('res_i', the residue and
  MSA rows of dynamic axial parallelism); 1 outside `use_rules` or inside `rows_whole`."""
  active = _ACTIVE.get()
  if active is None or _WHOLE.get():
    return 1
  mesh, rules = active
  target = rules.get('res_i')
  axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
  return math.prod(mesh.shape[axis] for axis in axes)


def partition_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
  """The PartitionSpec of an array whose axes have these logical names."""
  return PartitionSpec(*(None if name is None else rules.get(name) for name in names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`x` with the sharding its logical axis names map to under the active rules."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  spec = partition_spec(names, rules)
  if all(axis is None for axis in spec):
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

