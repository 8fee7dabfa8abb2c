"""A prediction as one function of parameters and batch: what `jaxfold predict` compiles and
`jaxfold plan` plans, so that the plan is of the program that runs."""

from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxfold.model.alphafold import AlphaFold


def prediction_fn(model: AlphaFold, num_recycle: int, return_representations: bool = False
                  ) -> Callable[[Any, Mapping[str, jax.Array]], dict[str, Any]]:
  """fn(params, batch) -> the model's outputs after num_recycle recycling iterations.

  'prev' (the inputs a further iteration would recycle, among them an N_res x N_res x c_z
  pair) is left out: a prediction continues no iteration, and an output not returned is an
  output XLA need not keep.
  """
  def run(params, batch):
    outputs = model.apply({'params': params}, batch, num_recycle=num_recycle,
                          return_representations=return_representations)
    outputs.pop('prev')
    return outputs
  return run
