"""OpenFold's processed batch in jaxfold's layout, which is AlphaFold's.

OpenFold's `FeaturePipeline` puts the recycling axis LAST on every feature and stores integers
as int64; AlphaFold and jaxfold put it first and read int32. One name differs:
OpenFold's `template_all_atom_mask` is AlphaFold's `template_all_atom_masks`. OpenFold also
precomputes the template torsion angles that AlphaFold computes inside the model; jaxfold's
model reads them when they are present (`template_embedding.template_torsion_angles`).
"""

from collections.abc import Mapping

import numpy as np

from jaxfold.model.template_embedding import TORSION_FEATURES

# OpenFold's name -> AlphaFold's, where they differ.
RENAMED = {'template_all_atom_mask': 'template_all_atom_masks'}

# OpenFold's precomputed template torsion features.
TEMPLATE_TORSION_FEATURES = tuple(f'template_{k}' for k in TORSION_FEATURES)


def from_openfold(inputs: Mapping[str, np.ndarray], source: str = 'batch'
                  ) -> dict[str, np.ndarray]:
  """Every feature of an OpenFold batch with the recycling axis moved first and ints as int32.

  `source` names the batch in errors. Raises ValueError for a batch without `aatype` or
  with a feature whose last axis is not the recycling axis (the size of `aatype`'s).
  """
  if 'aatype' not in inputs or np.ndim(inputs['aatype']) != 2:
    raise ValueError(f'{source}: expected OpenFold\'s processed features, \'aatype\' '
                     f'[N_res, N_recycle]; got '
                     f'{np.shape(inputs["aatype"]) if "aatype" in inputs else "no aatype"}')
  num_slices = inputs['aatype'].shape[-1]
  batch = {}
  for key, value in inputs.items():
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[-1] != num_slices:
      raise ValueError(f'{source}: feature {key!r} of shape {value.shape} does not end in the '
                       f'recycling axis (size {num_slices}, as aatype\'s); is this an '
                       f'OpenFold-layout batch?')
    value = np.moveaxis(value, -1, 0)
    if value.dtype.kind in 'iu':
      value = value.astype(np.int32)
    batch[RENAMED.get(key, key)] = value
  return batch
