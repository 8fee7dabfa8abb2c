"""Settings shared by every module: precision, memory knobs, initialisation."""

import dataclasses
from typing import Literal

import jax.numpy as jnp

from jaxfold.model.attention_core import Implementation


@dataclasses.dataclass(frozen=True)
class GlobalConfig:
  """Model-wide switches (AlphaFold's `global_config`).

  Attributes:
    dtype: compute dtype of activations; parameters are always stored in float32 and cast
      on use. 'bfloat16' is the mixed-precision mode.
    subbatch_size: chunk size for attention, transitions and the outer product mean. None
      computes each in one piece; a number bounds memory without changing the result.
    use_remat: rematerialise every stacked block in the backward pass.
    zero_init: AlphaFold's zero initialisation of output projections and gates.
    attention: the implementation of the attention core (`attention_core`): 'xla' (the
      reference, logits in one piece), 'chunked' (online softmax over query and key
      chunks of `attention_chunk_size`, memory-efficient backward pass) or 'cudnn' (the fused
      kernel of `jax.nn.dot_product_attention` on a GPU in bfloat16; elsewhere XLA's, with a
      warning).
    attention_chunk_size: the query and key chunk of 'chunked' attention.
    pair_chunk_size: rows of the pair representation computed at a time by the layers that
      read or write all of it (embedders, triangle multiplication, pair biases, template
      features and pointwise attention), so that no
      N_res x N_res x c intermediate exists in one piece beyond the pair itself and, in a
      triangle multiplication, its right projection; without dropout every update is added
      into the pair in place. None computes each in one piece (AlphaFold's way).
  """
  dtype: Literal['float32', 'bfloat16'] = 'float32'
  subbatch_size: int | None = None
  attention: Implementation = 'xla'
  attention_chunk_size: int = 256
  pair_chunk_size: int | None = None
  use_remat: bool = False
  zero_init: bool = True

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def final_init(self) -> str:
    """Initialiser of layers that write into a residual stream."""
    return 'zeros' if self.zero_init else 'linear'
