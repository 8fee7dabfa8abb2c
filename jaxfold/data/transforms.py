"""Feature transforms: one function per step of AlphaFold's feature processing (numpy).

Jumper et al. (2021) Suppl. 1.2 'Input features' and 1.2.7 'MSA clustering': the raw
features of the data pipeline (AlphaFold's `features.pkl`) become the model's inputs through
these steps, in the order `jaxfold.data.processing` composes them. Each function takes a
feature dict (`Features`, numpy arrays under AlphaFold's key names) and returns a new dict;
the input dict is never modified. Every random step takes an explicit `np.random.Generator`.

The MSA uses AlphaFold's residue order after `correct_msa_restypes`: 0-19 amino acids,
20 = X (unknown), 21 = gap, 22 = the BERT mask token.
"""

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from jaxfold.common import residue_constants as rc

Features = dict[str, np.ndarray]

GAP_ID = 21
MASK_TOKEN_ID = 22
# The MSA rows of these keys move together whenever rows are sampled, deleted or cropped.
MSA_ROW_FEATURES = ('msa', 'deletion_matrix', 'msa_mask', 'msa_row_mask', 'bert_mask',
                    'true_msa')


class MaskedMsaProbs(Protocol):
  """AlphaFold's `data.common.masked_msa`: replacement probabilities of a BERT-masked entry."""
  profile_prob: float
  same_prob: float
  uniform_prob: float


def deletion_value(deletions: np.ndarray) -> np.ndarray:
  """Deletion counts squashed into [0, 1): 2/pi * arctan(d / 3) (Suppl. Table 1)."""
  return (np.arctan(deletions / 3.0) * (2.0 / np.pi)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Non-ensembled: applied once to the raw features.
# ---------------------------------------------------------------------------------------------

def cast_64bit_ints(feats: Mapping[str, np.ndarray]) -> Features:
  """int64 arrays to int32 and float64 to float32: the dtypes the model is built for."""
  narrow = {np.dtype(np.int64): np.int32, np.dtype(np.float64): np.float32}
  return {k: v.astype(narrow[v.dtype]) if v.dtype in narrow else v for k, v in feats.items()}


def squeeze_features(feats: Mapping[str, np.ndarray]) -> Features:
  """One-hot `aatype` [N, 21] to indices [N]; per-residue copies of scalars to scalars.

  The data pipeline repeats `seq_length` and `num_alignments` once per residue; the first
  entry is the value.
  """
  out = dict(feats)
  if out['aatype'].ndim == 2:
    out['aatype'] = np.argmax(out['aatype'], axis=-1).astype(np.int32)
  for key in ('seq_length', 'num_alignments'):
    if key in out and out[key].ndim:
      out[key] = out[key].reshape(-1)[0]
  return out


def correct_msa_restypes(feats: Mapping[str, np.ndarray]) -> Features:
  """Re-index `msa` from the HHblits alphabet into AlphaFold's residue order."""
  new_order = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, dtype=feats['msa'].dtype)
  return {**feats, 'msa': new_order[feats['msa']]}


def make_seq_mask(feats: Mapping[str, np.ndarray]) -> Features:
  """`seq_mask` [N_res]: ones, zero-filled later where padding is added."""
  return {**feats, 'seq_mask': np.ones(feats['aatype'].shape, np.float32)}


def make_msa_mask(feats: Mapping[str, np.ndarray]) -> Features:
  """`msa_mask` [N_seq, N_res] and `msa_row_mask` [N_seq]: ones until padded."""
  msa = feats['msa']
  return {**feats, 'msa_mask': np.ones(msa.shape, np.float32),
          'msa_row_mask': np.ones(msa.shape[:1], np.float32)}


def make_hhblits_profile(feats: Mapping[str, np.ndarray]) -> Features:
  """`hhblits_profile` [N_res, 22]: frequency of each residue type and gap over the full MSA.

  Computed before MSA sampling, so the BERT replacement distribution sees every sequence.
  """
  msa = feats['msa']
  num_seq, num_res = msa.shape
  counts = np.bincount((np.arange(num_res) * 22 + msa).ravel(), minlength=num_res * 22)
  counts = counts.reshape(num_res, 22)
  return {**feats, 'hhblits_profile': counts.astype(np.float32) / np.float32(num_seq)}


def make_random_crop_to_size_seed(feats: Mapping[str, np.ndarray],
                                  rng: np.random.Generator) -> Features:
  """`random_crop_to_size_seed` int32 [2]: one draw shared by every ensemble/recycle slice.

  Residue crops and template choices are made from this seed so that all slices of one
  example see the same residues and templates.
  """
  info = np.iinfo(np.int32)
  return {**feats, 'random_crop_to_size_seed': rng.integers(info.min, info.max, size=2,
                                                            dtype=np.int32)}


def fix_templates_aatype(feats: Mapping[str, np.ndarray]) -> Features:
  """`template_aatype` one-hot [T, N, 22] in HHblits order to indices [T, N] in ours."""
  hhblits = np.argmax(feats['template_aatype'], axis=-1)
  new_order = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, dtype=np.int32)
  return {**feats, 'template_aatype': new_order[hhblits]}


def make_template_mask(feats: Mapping[str, np.ndarray]) -> Features:
  """`template_mask` [T]: one per template, zero-filled later for padding templates."""
  return {**feats, 'template_mask': np.ones(feats['template_aatype'].shape[:1], np.float32)}


def pseudo_beta(aatype: np.ndarray, all_atom_positions: np.ndarray,
                all_atom_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Cβ position (Cα for glycine) [..., N, 3] and its mask [..., N] (Suppl. 1.2.9)."""
  is_gly = aatype == rc.restype_order['G']
  ca, cb = rc.atom_order['CA'], rc.atom_order['CB']
  positions = np.where(is_gly[..., None], all_atom_positions[..., ca, :],
                       all_atom_positions[..., cb, :])
  mask = np.where(is_gly, all_atom_mask[..., ca], all_atom_mask[..., cb])
  return positions.astype(np.float32), mask.astype(np.float32)


def make_pseudo_beta(feats: Mapping[str, np.ndarray], prefix: str) -> Features:
  """`{prefix}pseudo_beta` and its mask; prefix 'template_' for templates, '' for the target."""
  if prefix == 'template_':
    positions, mask = pseudo_beta(feats['template_aatype'],
                                  feats['template_all_atom_positions'],
                                  feats['template_all_atom_masks'])
  else:
    positions, mask = pseudo_beta(feats['aatype'], feats['all_atom_positions'],
                                  feats['all_atom_mask'])
  return {**feats, f'{prefix}pseudo_beta': positions, f'{prefix}pseudo_beta_mask': mask}


def make_atom14_masks(feats: Mapping[str, np.ndarray]) -> Features:
  """Per-residue atom14 <-> atom37 maps and existence masks from `aatype` (Suppl. 1.2.1).

  atom14_atom_exists [N, 14] f32, residx_atom14_to_atom37 [N, 14] i32,
  residx_atom37_to_atom14 [N, 37] i32, atom37_atom_exists [N, 37] f32; UNK has no atoms.
  """
  aatype = feats['aatype']
  return {**feats,
          'atom14_atom_exists': rc.restype_atom14_mask[aatype].astype(np.float32),
          'residx_atom14_to_atom37': rc.restype_atom14_to_atom37[aatype],
          'residx_atom37_to_atom14': rc.restype_atom37_to_atom14[aatype],
          'atom37_atom_exists': rc.STANDARD_ATOM_MASK[aatype].astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Ensembled: applied afresh to every ensemble / recycling slice.
# ---------------------------------------------------------------------------------------------

def _take_rows(feats: Mapping[str, np.ndarray], rows: np.ndarray, prefix: str = ''
               ) -> Features:
  return {f'{prefix}{k}': feats[k][rows] for k in MSA_ROW_FEATURES if k in feats}


def block_delete_msa(feats: Mapping[str, np.ndarray], rng: np.random.Generator, *,
                     msa_fraction_per_block: float, num_blocks: int,
                     randomize_num_blocks: bool) -> Features:
  """Delete contiguous blocks of MSA rows, never the query (Suppl. Alg. 1 'MSABlockDeletion')."""
  num_seq = feats['msa'].shape[0]
  block_size = int(np.floor(num_seq * np.float32(msa_fraction_per_block)))
  count = rng.integers(0, num_blocks + 1) if randomize_num_blocks else num_blocks
  starts = rng.integers(0, num_seq, size=count)
  deleted = np.clip(starts[:, None] + np.arange(block_size), 0, num_seq - 1)
  keep = np.concatenate([[0], np.setdiff1d(np.arange(1, num_seq), deleted)])
  return {**feats, **_take_rows(feats, keep)}


def sample_msa(feats: Mapping[str, np.ndarray], max_seq: int, rng: np.random.Generator, *,
               keep_extra: bool) -> Features:
  """Keep the query row and `max_seq - 1` random others; the rest become `extra_*` rows.

  Suppl. 1.2.7: the sampled rows are the cluster centres; with keep_extra=False the
  unsampled rows are dropped (distillation MSAs are capped this way).
  """
  num_seq = feats['msa'].shape[0]
  order = np.concatenate([[0], 1 + rng.permutation(num_seq - 1)])
  selected, rest = order[:max_seq], order[max_seq:]
  out = {**feats, **_take_rows(feats, selected)}
  if keep_extra:
    out.update(_take_rows(feats, rest, prefix='extra_'))
  return out


def make_masked_msa(feats: Mapping[str, np.ndarray], probs: MaskedMsaProbs,
                    replace_fraction: float, rng: np.random.Generator) -> Features:
  """BERT-style corruption of the sampled MSA (Suppl. 1.2.7 'masked MSA prediction').

  Each entry is chosen with probability `replace_fraction`; a chosen entry becomes a
  uniformly random amino acid, a draw from the MSA profile, itself, or the mask token with
  the config's probabilities (the mask token takes what the other three leave). Adds
  `bert_mask` (1 where chosen) and `true_msa` (the MSA before corruption).
  """
  mask_prob = 1.0 - probs.profile_prob - probs.same_prob - probs.uniform_prob
  if mask_prob < 0:
    raise ValueError(f'masked_msa probabilities sum to {1 - mask_prob} > 1 '
                     f'(profile {probs.profile_prob}, same {probs.same_prob}, '
                     f'uniform {probs.uniform_prob})')
  msa = feats['msa']
  chosen = rng.random(msa.shape) < replace_fraction
  rows, cols = np.nonzero(chosen)
  # Categorical over 23 classes (20 amino acids, X, gap, mask token) at the chosen entries.
  uniform = np.array([0.05] * 20 + [0.0, 0.0], np.float32)
  categorical = (probs.uniform_prob * uniform
                 + probs.profile_prob * feats['hhblits_profile'][cols]
                 + probs.same_prob * np.eye(22, dtype=np.float32)[msa[rows, cols]])
  categorical = np.concatenate(
      [categorical, np.full((len(rows), 1), mask_prob, np.float32)], axis=-1)
  cdf = np.cumsum(categorical, axis=-1)
  draws = rng.random(len(rows)) * cdf[:, -1]
  replaced = np.minimum(np.sum(cdf <= draws[:, None], axis=-1), MASK_TOKEN_ID)
  bert_msa = msa.copy()
  bert_msa[rows, cols] = replaced
  return {**feats, 'msa': bert_msa, 'true_msa': msa, 'bert_mask': chosen.astype(np.float32)}


def _masked_one_hot(msa: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """[rows, N_res * 21] float32: one-hot over amino acids and X, zero at gaps, mask tokens
  and masked-out entries."""
  one_hot = np.eye(MASK_TOKEN_ID + 1, rc.restype_num + 1, dtype=np.float32)[msa]
  return (one_hot * mask[..., None]).reshape(msa.shape[0], -1)


# Extra rows per block of the agreement matmul: bounds memory to ~2**24 one-hot entries.
_CLUSTER_BLOCK_ENTRIES = 1 << 24


def nearest_neighbor_clusters(feats: Mapping[str, np.ndarray]) -> Features:
  """Assign every extra row to the sampled row it agrees with most (Suppl. 1.2.7).

  Agreement counts residues where both rows hold the same amino acid or X; gaps and the
  mask token carry no weight. Ties go to the lowest cluster index. Counts are integers
  below 2**24, so float32 sums are exact.
  """
  extra_msa, extra_mask = feats['extra_msa'], feats['extra_msa_mask']
  centres = _masked_one_hot(feats['msa'], feats['msa_mask'])
  block = max(1, _CLUSTER_BLOCK_ENTRIES // max(1, centres.shape[1]))
  assignment = np.zeros(extra_msa.shape[0], np.int32)
  for start in range(0, extra_msa.shape[0], block):
    rows = slice(start, start + block)
    agreement = _masked_one_hot(extra_msa[rows], extra_mask[rows]) @ centres.T
    assignment[rows] = np.argmax(agreement, axis=1)
  return {**feats, 'extra_cluster_assignment': assignment}


def summarize_clusters(feats: Mapping[str, np.ndarray]) -> Features:
  """`cluster_profile` [N_clust, N_res, 23] and `cluster_deletion_mean` [N_clust, N_res].

  Averages over each cluster: its centre plus the extra rows assigned to it (masked
  entries of the extra rows do not count).
  """
  msa, extra_msa = feats['msa'], feats['extra_msa']
  extra_mask = feats['extra_msa_mask']
  num_clusters, num_res = msa.shape
  # Flat (cluster, residue) index of every extra entry; sums of 0/1 weights are exact.
  cell = feats['extra_cluster_assignment'][:, None] * num_res + np.arange(num_res)

  def cluster_sum(index, weights, size):
    return np.bincount(index.ravel(), weights.ravel(), minlength=size).astype(np.float32)

  counts = cluster_sum(cell, extra_mask, msa.size).reshape(msa.shape)
  profile = cluster_sum(cell * 23 + extra_msa, extra_mask, msa.size * 23).reshape(
      num_clusters, num_res, 23) + np.eye(23, dtype=np.float32)[msa]
  deletions = cluster_sum(cell, extra_mask * feats['extra_deletion_matrix'],
                          msa.size).reshape(msa.shape) + feats['deletion_matrix']
  total = np.float32(1e-6) + feats['msa_mask'] + counts
  return {**feats, 'cluster_profile': profile / total[:, :, None],
          'cluster_deletion_mean': deletions / total}


def _extra_row_keys(feats: Mapping[str, np.ndarray]) -> list[str]:
  return [f'extra_{k}' for k in MSA_ROW_FEATURES if f'extra_{k}' in feats]


def crop_extra_msa(feats: Mapping[str, np.ndarray], max_extra_msa: int,
                   rng: np.random.Generator) -> Features:
  """Keep `max_extra_msa` random extra rows (after they have informed the cluster profiles)."""
  num_extra = feats['extra_msa'].shape[0]
  keep = rng.permutation(num_extra)[:max_extra_msa]
  return {**feats, **{k: feats[k][keep] for k in _extra_row_keys(feats)}}


def delete_extra_msa(feats: Mapping[str, np.ndarray]) -> Features:
  """Drop the extra-MSA rows (a model with no extra-MSA stack)."""
  dropped = set(_extra_row_keys(feats))
  return {k: v for k, v in feats.items() if k not in dropped}


def make_msa_feat(feats: Mapping[str, np.ndarray]) -> Features:
  """`msa_feat` [N_clust, N_res, 49] and `target_feat` [N_res, 22] (Suppl. Table 1).

  msa_feat: one-hot MSA (23), has_deletion, deletion_value, cluster profile (23) and
  cluster deletion mean; target_feat: domain break flag and one-hot aatype (21). Also the
  extra MSA's `extra_has_deletion` and `extra_deletion_value`.
  """
  has_break = np.clip(feats['between_segment_residues'].astype(np.float32), 0, 1)
  target_feat = np.concatenate(
      [has_break[:, None], np.eye(21, dtype=np.float32)[feats['aatype']]], axis=-1)
  deletion = feats['deletion_matrix']
  parts = [np.eye(23, dtype=np.float32)[feats['msa']],
           np.clip(deletion, 0.0, 1.0)[..., None], deletion_value(deletion)[..., None]]
  if 'cluster_profile' in feats:
    parts += [feats['cluster_profile'],
              deletion_value(feats['cluster_deletion_mean'])[..., None]]
  out = {**feats, 'msa_feat': np.concatenate(parts, axis=-1), 'target_feat': target_feat}
  if 'extra_deletion_matrix' in feats:
    extra = feats['extra_deletion_matrix']
    out['extra_has_deletion'] = np.clip(extra, 0.0, 1.0)
    out['extra_deletion_value'] = deletion_value(extra)
  return out


def select_feat(feats: Mapping[str, np.ndarray], names: Sequence[str]) -> Features:
  """Only the features named (the model's inputs, and labels when supervised)."""
  wanted = set(names)
  return {k: v for k, v in feats.items() if k in wanted}
