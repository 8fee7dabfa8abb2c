"""N copies of one block applied in sequence, their parameters stacked on a leading axis.

AlphaFold's `layer_stack` (Jumper et al. (2021) Suppl. 1.11.8, the Evoformer's and the
template pair stack's repeated blocks): every parameter of the block gains a leading axis
of size N, so the checkpoint holds e.g. `evoformer_iteration/.../weights` of shape
[48, C_in, C_out]. Here the loop is a Flax-lifted `nn.scan`, which also gives each block
its own initialisation and dropout keys.
"""

from typing import Any

import flax.linen as nn


def apply_stacked(block: nn.Module, num_block: int, carry: Any, *args: Any,
                  use_remat: bool = False, **kwargs: Any) -> Any:
  """carry <- block(carry, *args, **kwargs), `num_block` times, with per-block parameters.

  Must be called inside a compact method: `block` is a submodule created there, and its
  name is the name of the stacked parameters (e.g. 'evoformer_iteration'). `args` and
  `kwargs` (masks, `deterministic`) are the same for every block. With `use_remat` each
  block's activations are recomputed in the backward pass instead of stored.
  """
  def body(mdl: nn.Module, c: Any, _: None) -> tuple[Any, None]:
    return mdl(c, *args, **kwargs), None

  if use_remat:
    # Inside a scan the common-subexpression guard only costs speed (Flax's advice).
    body = nn.remat(body, prevent_cse=False)
  # Intermediates (sown or captured) come out stacked like the parameters, one per block.
  scan = nn.scan(body, variable_axes={'params': 0, 'intermediates': 0},
                 split_rngs={'params': True, 'dropout': True}, length=num_block)
  out, _ = scan(block, carry, None)
  return out
