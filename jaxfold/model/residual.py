"""A module's update added to its residual stream, through AlphaFold's shared dropout.

Jumper et al. (2021) Suppl. 1.11.6 (DropoutRowwise / DropoutColumnwise in Alg. 6 and 16):
a 'per_row' module drops whole rows of its update, one mask shared along axis 0; a
'per_column' module shares its mask along axis 1.
"""

from typing import Literal, Protocol

import jax

from jaxfold.model.primitives import residual_dropout


class DropoutConfig(Protocol):
  """The dropout fields every Evoformer module config carries (AlphaFold's keys)."""
  dropout_rate: float
  orientation: Literal['per_row', 'per_column']
  shared_dropout: bool


def shared_axis(config: DropoutConfig) -> int | None:
  """The axis along which the dropout mask is shared, or None for independent dropout."""
  if not config.shared_dropout:
    return None
  return 0 if config.orientation == 'per_row' else 1


def add_residual(act: jax.Array, update: jax.Array, config: DropoutConfig,
                 deterministic: bool) -> jax.Array:
  """act + dropout(update); call inside a compact method (draws from the 'dropout' stream)."""
  return act + residual_dropout(update, config.dropout_rate, shared_axis(config), deterministic)
