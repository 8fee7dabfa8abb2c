"""pLDDT loss, Jumper et al. (2021) Suppl. 1.9.6 'Model confidence prediction (pLDDT)'.

The target of the pLDDT head (Alg. 29 'predictPerResidueLDDT_Ca') is each residue's
lDDT-Cα of the final predicted structure against the true one (cutoff 15 Å), binned into
`num_bins` equal bins over [0, 1] (a score of exactly 1 goes to the last bin). The loss is
the cross entropy of the head's logits [N_res, num_bins] against that bin, averaged over
residues whose true Cα exists, and multiplied by 0 unless the structure's resolution lies
in [min_resolution, max_resolution] (NMR and distillation examples carry resolution 0).
No gradient flows into the structure: the target is held constant (AlphaFold's
`PredictedLDDTHead.loss`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxfold.common import residue_constants
from jaxfold.loss.lddt import lddt_ca
from jaxfold.loss.resolution import resolution_weight


@dataclasses.dataclass(frozen=True)
class PlddtLossConfig:
  """AlphaFold's `heads.predicted_lddt` loss settings (the lDDT cutoff is AlphaFold's 15 Å)."""
  num_bins: int = 50
  cutoff: float = 15.0
  filter_by_resolution: bool = True
  min_resolution: float = 0.1
  max_resolution: float = 3.0
  eps: float = 1e-8


def plddt_loss(logits: jax.Array, final_atom_positions: jax.Array,
               all_atom_positions: jax.Array, all_atom_mask: jax.Array,
               resolution: jax.Array, config: PlddtLossConfig = PlddtLossConfig()) -> jax.Array:
  """Cross entropy of the pLDDT head against the binned per-residue lDDT-Cα.

  Args:
    logits: [N_res, num_bins] the pLDDT head's logits.
    final_atom_positions: [N_res, 37, 3] the predicted structure (Å, atom37).
    all_atom_positions: [N_res, 37, 3] the true structure (Å, atom37).
    all_atom_mask: [N_res, 37] 1 where the true atom exists.
    resolution: [] the structure's resolution (Å).
    config: bins, cutoff, resolution filter, epsilon.

  Returns:
    [] the loss; 0 when filtered out by resolution or when no Cα exists.
  """
  if logits.shape[-1] != config.num_bins:
    raise ValueError(f'logits have {logits.shape[-1]} bins, config.num_bins is {config.num_bins}')
  score = jax.lax.stop_gradient(lddt_ca(final_atom_positions, all_atom_positions, all_atom_mask,
                                        cutoff=config.cutoff, per_residue=True))
  bin_index = jnp.minimum(jnp.floor(score * config.num_bins).astype(jnp.int32),
                          config.num_bins - 1)
  errors = optax.softmax_cross_entropy_with_integer_labels(logits, bin_index)
  mask_ca = all_atom_mask[:, residue_constants.atom_order['CA']].astype(jnp.float32)
  loss = jnp.sum(errors * mask_ca) / (jnp.sum(mask_ca) + config.eps)
  loss *= resolution_weight(resolution, config)
  return loss
