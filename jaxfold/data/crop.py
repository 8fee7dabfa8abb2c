"""Which axis of each feature is which, and cropping / padding features to fixed sizes.

`FEATURE_AXES` is the shape schema of every processed feature (AlphaFold's `data.eval.feat`
plus OpenFold's extra label names): per axis, whether it runs over residues, sampled MSA
rows, extra MSA rows, templates, or nothing to crop. Cropping (Jumper et al. (2021) Suppl.
1.2.8 'Residue cropping': contiguous crops; AlphaFold-Multimer / OpenFold spatial crops) and
padding act on features through this table only, so a new feature needs one table row.
"""

from collections.abc import Mapping

import numpy as np

RES = 'res'  # residues: cropped to the crop, padded to crop_size
MSA = 'msa'  # sampled MSA rows (cluster centres): padded to the cluster count
EXTRA = 'extra'  # extra MSA rows: padded to max_extra_msa
TEMPLATE = 'template'  # templates: subsampled, padded to max_templates

Axes = tuple[str | None, ...]

_PER_RESIDUE = {
    'aatype': (RES,), 'residue_index': (RES,), 'seq_mask': (RES,), 'asym_id': (RES,),
    'target_feat': (RES, None), 'atom14_atom_exists': (RES, None),
    'atom37_atom_exists': (RES, None), 'residx_atom14_to_atom37': (RES, None),
    'residx_atom37_to_atom14': (RES, None),
}
# Ground-truth labels (Suppl. 1.9 losses): carried from the raw dict when supervised.
_LABELS = {
    'all_atom_positions': (RES, None, None), 'all_atom_mask': (RES, None),
    'atom14_gt_positions': (RES, None, None), 'atom14_gt_exists': (RES, None),
    'atom14_alt_gt_positions': (RES, None, None), 'atom14_alt_gt_exists': (RES, None),
    'atom14_atom_is_ambiguous': (RES, None),
    'rigidgroups_gt_frames': (RES, None, None), 'rigidgroups_alt_gt_frames': (RES, None, None),
    'rigidgroups_gt_exists': (RES, None), 'rigidgroups_group_exists': (RES, None),
    'rigidgroups_group_is_ambiguous': (RES, None),
    'chi_angles': (RES, None), 'alt_chi_angles': (RES, None), 'chi_mask': (RES, None),
    'chi_angles_sin_cos': (RES, None, None),
    'torsion_angles_sin_cos': (RES, None, None), 'alt_torsion_angles_sin_cos': (RES, None, None),
    'torsion_angles_mask': (RES, None),
    'backbone_affine_tensor': (RES, None), 'backbone_affine_mask': (RES,),
    'backbone_rigid_tensor': (RES, None, None), 'backbone_rigid_mask': (RES,),
    'pseudo_beta': (RES, None), 'pseudo_beta_mask': (RES,),
    'resolution': (), 'use_clamped_fape': (),
}
_MSA = {
    'msa_feat': (MSA, RES, None), 'msa_mask': (MSA, RES), 'msa_row_mask': (MSA,),
    'bert_mask': (MSA, RES), 'true_msa': (MSA, RES),
    'extra_msa': (EXTRA, RES), 'extra_msa_mask': (EXTRA, RES), 'extra_msa_row_mask': (EXTRA,),
    'extra_has_deletion': (EXTRA, RES), 'extra_deletion_value': (EXTRA, RES),
}
_TEMPLATES = {
    'template_aatype': (TEMPLATE, RES), 'template_mask': (TEMPLATE,),
    'template_all_atom_positions': (TEMPLATE, RES, None, None),
    'template_all_atom_masks': (TEMPLATE, RES, None),
    'template_pseudo_beta': (TEMPLATE, RES, None), 'template_pseudo_beta_mask': (TEMPLATE, RES),
    'template_backbone_affine_tensor': (TEMPLATE, RES, None),
    'template_backbone_affine_mask': (TEMPLATE, RES),
    'template_sum_probs': (TEMPLATE, None),
}
_SCALARS = {'is_distillation': (), 'seq_length': (), 'random_crop_to_size_seed': (None,)}

FEATURE_AXES: Mapping[str, Axes] = {**_PER_RESIDUE, **_LABELS, **_MSA, **_TEMPLATES, **_SCALARS}
LABEL_FEATURES: tuple[str, ...] = tuple(_LABELS)


class FeatureShapeError(ValueError):
  """A feature does not fit the schema or the fixed size it is padded to."""


def _axes(key: str) -> Axes:
  if key not in FEATURE_AXES:
    raise FeatureShapeError(f'feature {key!r} has no entry in jaxfold.data.crop.FEATURE_AXES')
  return FEATURE_AXES[key]


def contiguous_crop(num_res: int, crop_size: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of a random window of min(crop_size, num_res) consecutive residues (Suppl. 1.2.8)."""
  size = min(crop_size, num_res)
  start = rng.integers(0, num_res - size + 1)
  return np.arange(start, start + size)


def spatial_crop(ca_positions: np.ndarray, ca_mask: np.ndarray, crop_size: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Sorted indices of the crop_size residues nearest (by Cα) a random resolved centre.

  ca_positions [N_res, 3], ca_mask [N_res]. As AlphaFold-Multimer's / OpenFold's spatial
  crop for a single chain (no interface to aim at): residues without a resolved Cα sort
  last, and a tiny index term breaks distance ties towards the chain start.
  """
  num_res = ca_mask.shape[0]
  resolved = np.flatnonzero(ca_mask > 0)
  if not len(resolved):
    raise FeatureShapeError('spatial crop needs at least one resolved CA atom in '
                            "'all_atom_mask'; found none")
  centre = ca_positions[rng.choice(resolved)]
  distance = np.linalg.norm(ca_positions - centre, axis=-1)
  distance = np.where(ca_mask > 0, distance, np.inf) + 1e-3 * np.arange(num_res)
  return np.sort(np.argsort(distance, kind='stable')[:min(crop_size, num_res)])


def template_selection(num_templates: int, max_templates: int, subsample: bool,
                       rng: np.random.Generator) -> np.ndarray:
  """Indices of the templates to keep, in order.

  Without subsampling: the first max_templates (the top hits). With it, as AlphaFold's
  training crop: a random start in [0, T], then up to max_templates templates of a random
  permutation from there, so the number of templates itself varies (0..max_templates).
  """
  if not subsample:
    return np.arange(min(num_templates, max_templates))
  start = rng.integers(0, num_templates + 1)
  return rng.permutation(num_templates)[start:start + max_templates]


def crop_features(feats: Mapping[str, np.ndarray], residues: np.ndarray,
                  templates: np.ndarray) -> dict[str, np.ndarray]:
  """Every residue axis restricted to `residues`, every template axis to `templates`."""
  out = {}
  for key, value in feats.items():
    for axis, kind in enumerate(_axes(key)):
      if kind == RES:
        value = np.take(value, residues, axis=axis)
      elif kind == TEMPLATE:
        value = np.take(value, templates, axis=axis)
    out[key] = value
  return out


def pad_to_fixed_size(feats: Mapping[str, np.ndarray], sizes: Mapping[str, int]
                      ) -> dict[str, np.ndarray]:
  """Zero-pad every schema axis of kind RES / MSA / EXTRA / TEMPLATE to sizes[kind].

  Masks are features too, so padded positions are masked out by their zeros.
  """
  out = {}
  for key, value in feats.items():
    axes = _axes(key)
    if len(axes) != value.ndim:
      raise FeatureShapeError(f'feature {key!r} has shape {value.shape}; its schema '
                              f'{axes} has rank {len(axes)}')
    padding = []
    for kind, dim in zip(axes, value.shape):
      target = sizes.get(kind, dim) if kind is not None else dim
      if dim > target:
        raise FeatureShapeError(f'feature {key!r} has {dim} entries along its {kind} axis, '
                                f'more than the fixed size {target}')
      padding.append((0, target - dim))
    out[key] = np.pad(value, padding) if any(after for _, after in padding) else value
  return out
