"""Masked MSA loss, Jumper et al. (2021) Suppl. 1.9.9 'Masked MSA prediction'.

BERT-style: the masked MSA head predicts, at every MSA position the data pipeline masked
or replaced (`bert_mask`), the residue that was there (`true_msa`, 20 amino acids, unknown,
gap and the mask token: 23 classes). The loss is the cross entropy averaged over the
masked positions (AlphaFold's `MaskedMsaHead.loss`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class MaskedMsaLossConfig:
  """AlphaFold's `heads.masked_msa.num_output` and the loss's denominator epsilon."""
  num_classes: int = 23
  eps: float = 1e-8


def masked_msa_loss(logits: jax.Array, true_msa: jax.Array, bert_mask: jax.Array,
                    config: MaskedMsaLossConfig = MaskedMsaLossConfig()) -> jax.Array:
  """Mean cross entropy over the masked MSA positions.

  Args:
    logits: [N_seq, N_res, num_classes] the masked MSA head's logits.
    true_msa: [N_seq, N_res] int, the residue classes before masking (0 .. num_classes - 1).
    bert_mask: [N_seq, N_res] 1 where the position was masked (the positions scored).
    config: number of classes and epsilon.

  Returns:
    [] sum of bert_mask * xent / (eps + sum of bert_mask).
  """
  if logits.shape[-1] != config.num_classes:
    raise ValueError(f'logits have {logits.shape[-1]} classes, config.num_classes is '
                     f'{config.num_classes}')
  errors = optax.softmax_cross_entropy_with_integer_labels(logits, true_msa)
  return jnp.sum(errors * bert_mask) / (config.eps + jnp.sum(bert_mask))
