"""A prediction as one function of parameters and batch: what `jaxfold predict` compiles and
`jaxfold plan` plans, so that the plan is of the program that runs."""

from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxfold.model.alphafold import AlphaFold

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
