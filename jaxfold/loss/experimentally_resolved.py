"""Experimentally resolved loss, Jumper et al. (2021) Suppl. 1.9.10.

The experimentally resolved head predicts, for each atom37 slot, whether the atom was
resolved in the experiment. The loss is the sigmoid (binary) cross entropy of its logits
[N_res, 37] against `all_atom_mask`, averaged over the atoms the residue type has
(`atom37_atom_exists`), and multiplied by 0 unless the resolution lies in
[min_resolution, max_resolution]: it trains on high-resolution X-ray and cryo-EM only
(AlphaFold's `ExperimentallyResolvedHead.loss`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jaxfold.loss.resolution import resolution_weight


@dataclasses.dataclass(frozen=True)
class ExperimentallyResolvedLossConfig:
  """AlphaFold's `heads.experimentally_resolved` loss settings and denominator epsilon."""
  filter_by_resolution: bool = True
  min_resolution: float = 0.1
  max_resolution: float = 3.0
  eps: float = 1e-8


def experimentally_resolved_loss(
    logits: jax.Array, atom37_atom_exists: jax.Array, all_atom_mask: jax.Array,
    resolution: jax.Array,
    config: ExperimentallyResolvedLossConfig = ExperimentallyResolvedLossConfig()) -> jax.Array:
  """Mean sigmoid cross entropy over the atoms that exist.

  Args:
    logits: [N_res, 37] the experimentally resolved head's logits.
    atom37_atom_exists: [N_res, 37] 1 where the residue type has the atom (the atoms scored).
    all_atom_mask: [N_res, 37] 1 where the atom was resolved (the labels; a subset of
      atom37_atom_exists except for OXT).
    resolution: [] the structure's resolution (Å).
    config: resolution filter and epsilon.

  Returns:
    [] the loss; 0 when filtered out by resolution or when no atom exists.
  """
  xent = optax.sigmoid_binary_cross_entropy(logits, all_atom_mask.astype(jnp.float32))
  loss = jnp.sum(xent * atom37_atom_exists) / (config.eps + jnp.sum(atom37_atom_exists))
  loss *= resolution_weight(resolution, config)
  return loss
