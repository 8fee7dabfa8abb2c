"""`primitives.chunked` and `map_chunks`: chunking changes memory, never the result.

A residue count that is not a multiple of the chunk makes the last chunk overlap its
neighbour (results) or come out shorter (`in_place`), along rows and along columns.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.model.primitives import Linear, chunked, map_chunks

N, C = 10, 6


class RowUpdate(nn.Module):
  """act [N, N, C] plus (or replaced by) a learned function of each row, chunk by chunk."""
  chunk_size: int | None
  axis: int
  in_place: bool

  @nn.compact
  def __call__(self, act, scale):
    layer = Linear(C, name='layer')

    def rows(_, act_rows, scale_rows):
      update = jnp.tanh(layer(act_rows)) * scale_rows[..., None]
      return act_rows + update if self.in_place else update

    return chunked(self, rows, self.chunk_size, [act, scale], axis=self.axis,
                   in_place=self.in_place)


@pytest.mark.parametrize('in_place', [False, True])
@pytest.mark.parametrize('axis', [0, 1])
@pytest.mark.parametrize('chunk_size', [3, 4, 5])
def test_chunked_equals_one_piece(chunk_size, axis, in_place):
  act = jax.random.normal(jax.random.key(0), (N, N, C))
  scale = jax.random.uniform(jax.random.key(1), (N, N))
  variables = RowUpdate(None, axis, in_place).init(jax.random.key(2), act, scale)
  one_piece = RowUpdate(None, axis, in_place).apply(variables, act, scale)
  out = jax.jit(RowUpdate(chunk_size, axis, in_place).apply)(variables, act, scale)
  # In place, a row updated twice (or read after its update) would not match.
  np.testing.assert_allclose(out, one_piece, rtol=1e-6, atol=1e-6)


def test_chunked_parameters_are_those_of_one_call():
  act, scale = jnp.ones((N, N, C)), jnp.ones((N, N))
  one = RowUpdate(None, 0, True).init(jax.random.key(0), act, scale)
  chunk = RowUpdate(4, 0, True).init(jax.random.key(0), act, scale)
  assert jax.tree.map(jnp.shape, one) == jax.tree.map(jnp.shape, chunk)


@pytest.mark.parametrize('out_axis', [0, 1])
def test_map_chunks_equals_one_piece(out_axis):
  x, y = jax.random.normal(jax.random.key(3), (N, 4)), jax.random.normal(jax.random.key(4), (7, 4))

  def rows(start):  # rows [start, start + 3) of x @ y.T, the chunk axis first
    return jax.lax.dynamic_slice_in_dim(x, start, 3) @ y.T

  out = jax.jit(lambda: map_chunks(rows, N, 3, out_axis))()
  whole = x @ y.T
  np.testing.assert_allclose(out, whole if out_axis == 0 else whole.T, rtol=1e-6, atol=1e-6)
