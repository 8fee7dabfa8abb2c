"""Input, relative-position, recycling and extra-MSA embedders.

Jumper et al. (2021) Suppl. Alg. 3 'InputEmbedder', Alg. 4 'relpos', Alg. 5 'one_hot',
Alg. 32 'RecyclingEmbedder', and Suppl. Alg. 2 lines 14-15 (extra-MSA features and their
embedding). Shapes: target_feat [N_res, 22], msa_feat [N_seq, N_res, 49], residue_index
[N_res]; outputs msa [N_seq, N_res, c_m], pair [N_res, N_res, c_z], extra MSA
[N_extra, N_res, c_e].

AlphaFold gives these embedders no Haiku module of their own: their layers sit directly in
the `evoformer` module (`preprocess_1d`, `left_single`, `pair_activiations`, `prev_pos_linear`,
`extra_msa_activations`, ...). The classes here therefore share their parent's parameter
scope (`ParentScoped`), so the trunk's tree equals AlphaFold's while each embedder stays a
module of its own.
"""

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxfold.common import residue_constants
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.primitives import LayerNorm, Linear, chunked, linear

# Upper edge of the last distogram bin: every larger distance falls into it.
_LAST_BIN_UPPER_SQUARED = 1e8

# Extra-MSA one-hot width: 20 amino acids, unknown, gap and the BERT mask token.
_EXTRA_MSA_CLASSES = 23


@dataclasses.dataclass(frozen=True)
class DgramConfig:
  """Distogram bins (AlphaFold's `prev_pos` / `dgram_features` config).

  `min_bin` and `max_bin` are the lower edges (Å) of the first and the last bin.
  """
  min_bin: float = 3.25
  max_bin: float = 20.75
  num_bins: int = 15


class ParentScoped(nn.Module):
  """A module whose parameters live in its parent's scope, as if created there.

  Used for the embedders that AlphaFold writes inline in `EmbeddingsAndEvoformer`. A
  ParentScoped module used as the root keeps its parameters at the root.
  """

  def setup(self) -> None:
    if isinstance(self.parent, nn.Module):
      nn.share_scope(self, self.parent)


def dgram_from_positions(positions: jax.Array, config: DgramConfig,
                         rows: jax.Array | None = None) -> jax.Array:
  """One-hot distance bins between all pairs of points: [..., N, 3] -> [..., N, N, num_bins].

  Bins are compared on squared distances (no square root); a distance exactly on an edge
  belongs to no bin, as in AlphaFold. `rows` [..., R, 3] (default: all points) gives the
  rows' points, for a chunk of rows [..., R, N, num_bins].
  """
  rows = positions if rows is None else rows
  lower = jnp.square(jnp.linspace(config.min_bin, config.max_bin, config.num_bins))
  upper = jnp.concatenate([lower[1:], jnp.array([_LAST_BIN_UPPER_SQUARED], lower.dtype)])
  diff = rows[..., :, None, :] - positions[..., None, :, :]
  dist2 = jnp.sum(jnp.square(diff), axis=-1, keepdims=True)
  return ((dist2 > lower) & (dist2 < upper)).astype(jnp.float32)


def pseudo_beta_fn(aatype: jax.Array, all_atom_positions: jax.Array,
                   all_atom_mask: jax.Array | None = None
                   ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Cβ position (Cα for glycine): aatype [...], atom37 positions [..., 37, 3] -> [..., 3].

  With `all_atom_mask` [..., 37] also returns that atom's mask [...] as float32.
  """
  is_gly = aatype == residue_constants.restype_order['G']
  ca = residue_constants.atom_order['CA']
  cb = residue_constants.atom_order['CB']
  position = jnp.where(is_gly[..., None], all_atom_positions[..., ca, :],
                       all_atom_positions[..., cb, :])
  if all_atom_mask is None:
    return position
  mask = jnp.where(is_gly, all_atom_mask[..., ca], all_atom_mask[..., cb])
  return position, mask.astype(jnp.float32)


def relative_position_one_hot(residue_index: jax.Array, max_relative_feature: int,
                              rows: jax.Array | None = None) -> jax.Array:
  """Clipped residue-index offsets i - j, one-hot (Suppl. Alg. 4-5): [N] -> [N, N, 2k+1].

  `rows` [R] (default: all residues) gives the indices i of a chunk of rows: [R, N, 2k+1].
  """
  rows = residue_index if rows is None else rows
  offset = rows[:, None] - residue_index[None, :]
  clipped = jnp.clip(offset + max_relative_feature, 0, 2 * max_relative_feature)
  return jax.nn.one_hot(clipped, 2 * max_relative_feature + 1)


def create_extra_msa_feature(extra_msa: jax.Array, extra_has_deletion: jax.Array,
                             extra_deletion_value: jax.Array) -> jax.Array:
  """Extra-MSA features: one-hot residue (23), has_deletion, deletion_value -> [..., 25].

  Built as late as possible because the one-hot of thousands of extra rows is large.
  """
  return jnp.concatenate([jax.nn.one_hot(extra_msa, _EXTRA_MSA_CLASSES),
                          extra_has_deletion[..., None],
                          extra_deletion_value[..., None]], axis=-1)


class InputEmbedder(ParentScoped):
  """Target, MSA and relative-position embedding (Suppl. Alg. 3 with Alg. 4).

  Inputs: target_feat [N_res, 22], msa_feat [N_seq, N_res, 49], residue_index [N_res].
  Outputs: msa [N_seq, N_res, msa_channel], pair [N_res, N_res, pair_channel].
  `max_relative_feature` 0 switches the relative-position term off, as AlphaFold's falsy check.
  With `pair_as_rows` the pair is returned as a function instead: residue indices [R] to
  those rows of the pair [R, N_res, pair_channel], so that `RecyclingEmbedder` builds the
  recycled pair chunk by chunk without the input pair ever existing whole.
  """
  msa_channel: int = 256
  pair_channel: int = 128
  max_relative_feature: int = 32
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, target_feat: jax.Array, msa_feat: jax.Array, residue_index: jax.Array,
               pair_as_rows: bool = False
               ) -> tuple[jax.Array, jax.Array | Callable[[jax.Array], jax.Array]]:
    dtype = self.global_config.compute_dtype
    target_feat = target_feat.astype(dtype)
    msa = (Linear(self.msa_channel, name='preprocess_1d')(target_feat)[None]
           + Linear(self.msa_channel, name='preprocess_msa')(msa_feat.astype(dtype)))
    left = Linear(self.pair_channel, name='left_single')(target_feat)
    right = Linear(self.pair_channel, name='right_single')(target_feat)
    num_relative = 2 * self.max_relative_feature + 1
    if self.max_relative_feature and self.is_initializing():
      Linear(self.pair_channel, name='pair_activiations')(jnp.zeros((num_relative,), dtype))
    params = self.variables['params']

    def pair_rows(rows: jax.Array) -> jax.Array:
      pair = left[rows][:, None] + right[None, :]
      if self.max_relative_feature:
        rel_pos = relative_position_one_hot(residue_index, self.max_relative_feature,
                                            residue_index[rows])
        pair = pair + linear(rel_pos.astype(dtype), params['pair_activiations'])
      return pair

    if pair_as_rows:
      return msa, pair_rows
    # With `pair_chunk_size` no whole one-hot [N, N, 2k+1] or projection exists.
    return msa, chunked(self, lambda _, rows: pair_rows(rows),
                        self.global_config.pair_chunk_size, [jnp.arange(len(residue_index))])


class RecyclingEmbedder(ParentScoped):
  """Adds the previous iteration's outputs to the embeddings (Suppl. Alg. 32).

  Inputs: msa [N_seq, N_res, c_m], pair [N_res, N_res, c_z], aatype [N_res],
  prev_pos [N_res, 37, 3], prev_msa_first_row [N_res, c_m], prev_pair [N_res, N_res, c_z].
  Outputs: msa and pair of the same shapes. The previous structure enters through a
  distogram of its pseudo-β positions; the previous first MSA row and pair through LayerNorms.
  An input whose flag (`recycle_pos` / `recycle_features`) is off may be None. The result is
  written into the input pair's buffer, chunk by chunk with `pair_chunk_size`; when `pair`
  is InputEmbedder's rows function (`pair_as_rows`) and prev_pair is of the compute dtype,
  into prev_pair's buffer instead, each chunk of the input pair computed just before it
  is needed: the pair and the previous pair then share one buffer.
  """
  pair_channel: int = 128
  prev_pos: DgramConfig = DgramConfig()
  recycle_pos: bool = True
  recycle_features: bool = True
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, msa: jax.Array, pair: jax.Array | Callable[[jax.Array], jax.Array],
               aatype: jax.Array,
               prev_pos: jax.Array | None, prev_msa_first_row: jax.Array | None,
               prev_pair: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    dtype = self.global_config.compute_dtype
    chunk = self.global_config.pair_chunk_size
    rows_index = jnp.arange(aatype.shape[0])
    in_prev = callable(pair) and self.recycle_features and prev_pair.dtype == dtype
    if callable(pair) and not in_prev:
      pair = chunked(self, lambda _, rows: pair(rows), chunk, [rows_index])
    batched = [prev_pair if in_prev else pair, rows_index]
    if self.recycle_pos:
      positions = pseudo_beta_fn(aatype, prev_pos)
      prev_pos_linear = Linear(self.pair_channel, name='prev_pos_linear')
      batched.append(positions)
    if self.recycle_features:
      first_row = LayerNorm(name='prev_msa_first_row_norm')(prev_msa_first_row)
      msa = msa.at[0].add(first_row.astype(dtype))
      prev_pair_norm = LayerNorm(name='prev_pair_norm')
      if not in_prev:
        batched.append(prev_pair)

    def rows(_, written_rows: jax.Array, index_rows: jax.Array, *recycled: jax.Array
             ) -> jax.Array:
      recycled = list(recycled)
      pair_rows = pair(index_rows) if in_prev else written_rows
      if self.recycle_pos:
        dgram = dgram_from_positions(positions, self.prev_pos, recycled.pop(0))
        pair_rows = pair_rows + prev_pos_linear(dgram.astype(dtype))
      if self.recycle_features:
        prev_rows = written_rows if in_prev else recycled.pop(0)
        pair_rows = pair_rows + prev_pair_norm(prev_rows).astype(dtype)
      return pair_rows

    # With `pair_chunk_size` no whole distogram, projection or normalised pair exists.
    return msa, chunked(self, rows, chunk, batched, in_place=True)


class ExtraMsaEmbedder(ParentScoped):
  """Embeds the extra MSA (Suppl. Alg. 2 lines 14-15).

  Inputs: extra_msa [N_extra, N_res] (int), extra_has_deletion, extra_deletion_value
  [N_extra, N_res]. Output [N_extra, N_res, extra_msa_channel].
  """
  extra_msa_channel: int = 64
  global_config: GlobalConfig = GlobalConfig()

  @nn.compact
  def __call__(self, extra_msa: jax.Array, extra_has_deletion: jax.Array,
               extra_deletion_value: jax.Array) -> jax.Array:
    feat = create_extra_msa_feature(extra_msa, extra_has_deletion, extra_deletion_value)
    feat = feat.astype(self.global_config.compute_dtype)
    return Linear(self.extra_msa_channel, name='extra_msa_activations')(feat)
