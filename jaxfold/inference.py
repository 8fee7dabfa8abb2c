"""A prediction as one function of parameters and batch: what `jaxfold predict` compiles and
`jaxfold plan` plans, so that the plan is of the program that runs."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import Mesh

from jaxfold.model import logical_axes
from jaxfold.model.alphafold import AlphaFold
from jaxfold.train import sharding

# The heads whose outputs are logits (AlphaFold's names); `prediction_fn` returns them only
# when asked.
LOGIT_HEADS = ('distogram', 'masked_msa', 'experimentally_resolved', 'predicted_lddt',
               'predicted_aligned_error')


def prediction_fn(model: AlphaFold, num_recycle: int, return_representations: bool = False,
                  logits: bool = False
                  ) -> Callable[[Any, Mapping[str, jax.Array]], dict[str, Any]]:
  """fn(params, batch) -> the model's outputs after num_recycle recycling iterations.

  What a prediction does not ask for is not returned, and what is not returned XLA need not
  keep: 'prev' (the inputs a further iteration would recycle, among them the N_res x N_res x
  c_z pair) never, the heads' logits and 'aligned_confidence_probs' (N_res x N_res x 64
  each for the distogram and PAE: 4 GiB apiece at 4,096 residues in float32) only with
  `logits`. The structure and the confidence metrics (pLDDT, PAE, pTM) always.
  """
  def run(params, batch):
    outputs = model.apply({'params': params}, batch, num_recycle=num_recycle,
                          return_representations=return_representations)
    outputs.pop('prev')
    if not logits:
      for head in LOGIT_HEADS:
        outputs.pop(head, None)
      outputs.get('confidence', {}).pop('aligned_confidence_probs', None)
    return outputs
  return run


def prediction_mesh(axes: Sequence[tuple[str, int]],
                    devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh of a prediction split over `axes` (`--mesh res=8`): one structure's residues
  over 'res'; 'data' and 'fsdp' split a training batch's examples and weights, and a
  prediction has one example and weights that fit any device."""
  other = [f'{name}={size}' for name, size in axes if name != 'res' and size != 1]
  if other:
    raise sharding.ShardingError(
        f'--mesh {sharding.format_mesh(axes)}: a prediction splits its residues '
        f'over res only ({", ".join(other)} split examples and weights in training)')
  return sharding.make_mesh(axes, 'dap', devices)


def jit_prediction(fn: Callable[[Any, Mapping[str, jax.Array]], Any], mesh: Mesh | None = None
                   ) -> Any:
  """`prediction_fn`'s fn jitted: on one device, or over `mesh` by dynamic axial parallelism
  (FastFold's DAP: each row-wise module holds 1/n of the MSA's or the pair's rows, each
  column-wise one 1/n of their columns; XLA places the all-to-all between them, as in
  `jaxfold train --sharding dap`). Parameters, batch and outputs are whole on every device.
  """
  if mesh is None:
    return jax.jit(fn)

  def sharded(params, batch):
    with logical_axes.use_rules(mesh, sharding.LAYOUTS['dap']):  # read while traced
      return fn(params, batch)

  whole = sharding.replicated(mesh)
  return jax.jit(sharded, in_shardings=whole, out_shardings=whole)
