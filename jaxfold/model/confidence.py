"""Confidence measures from the heads' logits: pLDDT, predicted aligned error, pTM / ipTM.

Jumper et al. (2021) Suppl. Alg. 29 'predictPerResidueLDDT_Ca' (pLDDT, Suppl. 1.9.6) and
Suppl. 1.9.7 'TM-score prediction' (PAE and pTM). Pure jax.numpy, so every
function jits and runs on device; computed in float32 whatever the logits' dtype. Output
names are AlphaFold's (`plddt`, `predicted_aligned_error`, `ptm`, ...).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

# TM-score's d0 is undefined or negative for short chains; AlphaFold counts at least 19.
_MIN_TM_RESIDUES = 19.0


def compute_plddt(logits: jax.Array) -> jax.Array:
  """Per-residue pLDDT in [0, 100] from pLDDT logits [..., N_res, num_bins] -> [..., N_res].

  The expected lDDT-Cα over num_bins equal bins of [0, 1], each valued at its centre.
  """
  num_bins = logits.shape[-1]
  centers = (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) / num_bins
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return 100.0 * jnp.sum(probs * centers, axis=-1)


def _error_bin_centers(breaks: jax.Array) -> jax.Array:
  """Centres [num_bins] of the error bins from their inner edges [num_bins - 1].

  The open last bin (beyond the last edge) is valued one bin width past the last centre.
  """
  breaks = breaks.astype(jnp.float32)
  step = breaks[1] - breaks[0]
  centers = breaks + step / 2
  return jnp.concatenate([centers, centers[-1:] + step])


def compute_predicted_aligned_error(logits: jax.Array, breaks: jax.Array
                                    ) -> dict[str, jax.Array]:
  """Expected aligned error per residue pair (Suppl. 1.9.7).

  Args:
    logits: PAE logits [N_res, N_res, num_bins] (row = aligned frame, column = residue).
    breaks: the head's inner bin edges [num_bins - 1] (Å).

  Returns:
    'aligned_confidence_probs' [N_res, N_res, num_bins]; 'predicted_aligned_error'
    [N_res, N_res] (Å); 'max_predicted_aligned_error' [] (Å), the largest value the
    expectation can take (the last bin's centre).
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  centers = _error_bin_centers(breaks)
  return {
      'aligned_confidence_probs': probs,
      'predicted_aligned_error': jnp.sum(probs * centers, axis=-1),
      'max_predicted_aligned_error': centers[-1],
  }


def predicted_tm_score(logits: jax.Array, breaks: jax.Array,
                       residue_weights: jax.Array | None = None,
                       asym_id: jax.Array | None = None,
                       interface: bool = False) -> jax.Array:
  """pTM, or with `interface` ipTM: the best over aligned frames of the expected TM-score.

  Suppl. 1.9.7: for frame i, the weighted mean over residues j of
  E[1 / (1 + (e_ij / d0)^2)], with d0 = 1.24 (N - 15)^(1/3) - 1.8 and N the total
  residue weight (at least 19).

  Args:
    logits: PAE logits [N_res, N_res, num_bins].
    breaks: inner bin edges [num_bins - 1] (Å).
    residue_weights: [N_res] in [0, 1]: a residue mask, or soft weights such as the
      experimentally-resolved probability. None weighs every residue 1.
    asym_id: [N_res] chain index of each residue; needed only for `interface`.
    interface: count only pairs of residues in different chains (ipTM).

  Returns:
    A scalar: max_i w_i * pTM_i. For 0/1 weights this is the best frame's pTM, as in
    DeepMind's code (whose version runs only with all weights 1); for soft weights it is
    the weighted value of ColabFold's `alphafold.common.confidence`.
  """
  num_res = logits.shape[0]
  weights = (jnp.ones((num_res,), jnp.float32) if residue_weights is None
             else residue_weights.astype(jnp.float32))
  d0 = 1.24 * (jnp.maximum(jnp.sum(weights), _MIN_TM_RESIDUES) - 15.0) ** (1.0 / 3.0) - 1.8
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  tm_per_bin = 1.0 / (1.0 + jnp.square(_error_bin_centers(breaks)) / jnp.square(d0))
  expected_tm = jnp.sum(probs * tm_per_bin, axis=-1)
  pair_weights = weights[:, None] * weights[None, :]
  if interface:
    if asym_id is None:
      raise ValueError('predicted_tm_score(interface=True) needs asym_id [N_res]')
    pair_weights = pair_weights * (asym_id[:, None] != asym_id[None, :])
  # Each frame's score is a weighted mean over the residues it aligns (the paper's 1/N).
  normalised = pair_weights / (1e-8 + jnp.sum(pair_weights, axis=-1, keepdims=True))
  per_frame = jnp.sum(expected_tm * normalised, axis=-1)
  return jnp.max(per_frame * weights)


def confidence_metrics(prediction: Mapping[str, Mapping[str, jax.Array]],
                       multimer_mode: bool = False, asym_id: jax.Array | None = None,
                       mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """AlphaFold's confidence summary of one prediction.

  Args:
    prediction: the model's outputs: 'predicted_lddt' {'logits'} and, for the pTM
      presets, 'predicted_aligned_error' {'logits', 'breaks'}.
    multimer_mode: also compute ipTM and rank by 0.8 ipTM + 0.2 pTM.
    asym_id: [N_res] chain indices, needed in multimer mode.
    mask: [N_res] 1 for real residues, 0 for padding; None when there is no padding.

  Returns:
    'plddt' [N_res]; with PAE logits also 'aligned_confidence_probs',
    'predicted_aligned_error', 'max_predicted_aligned_error', 'ptm' (and 'iptm' in
    multimer mode); 'ranking_confidence' (mean pLDDT over real residues for monomers).
  """
  metrics = {'plddt': compute_plddt(prediction['predicted_lddt']['logits'])}
  weights = None if mask is None else mask.astype(jnp.float32)
  if 'predicted_aligned_error' in prediction:
    pae = prediction['predicted_aligned_error']
    metrics.update(compute_predicted_aligned_error(pae['logits'], pae['breaks']))
    metrics['ptm'] = predicted_tm_score(pae['logits'], pae['breaks'], weights)
    if multimer_mode:
      metrics['iptm'] = predicted_tm_score(pae['logits'], pae['breaks'], weights,
                                           asym_id=asym_id, interface=True)
      metrics['ranking_confidence'] = 0.8 * metrics['iptm'] + 0.2 * metrics['ptm']
  if not multimer_mode:
    plddt = metrics['plddt']
    metrics['ranking_confidence'] = (jnp.mean(plddt) if weights is None
                                     else jnp.sum(plddt * weights) / jnp.sum(weights))
  return metrics
