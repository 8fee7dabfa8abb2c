"""Everything `jaxfold predict` writes for one prediction, from the model's outputs.

One call of `write_prediction` leaves in the output directory:
  <name>_unrelaxed.pdb, <name>_unrelaxed.cif  the structure, pLDDT in the B-factor column;
  outputs.npz                                  the outputs under AlphaFold's names, float32;
  confidence.json                              pLDDT, ranking confidence, pTM and PAE summary;
  <name>_confidence.png                        pLDDT track and, with the pTM head, the PAE map.
Padding residues (seq_mask 0) are dropped from every file. The files appear together or
not at all: they are written into a temporary directory beside the output directory and
only then moved in, one `os.replace` each.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc

# Below each threshold starts the next of AlphaFold's pLDDT bands (Jumper et al. (2021)
# Suppl. 1.9.6); colours are the AlphaFold Protein Structure Database's.
_PLDDT_BANDS = (('Very high (>90)', 90.0, 100.0, '#0053D6'),
                ('Confident (70-90)', 70.0, 90.0, '#65CBF3'),
                ('Low (50-70)', 50.0, 70.0, '#FFDB13'),
                ('Very low (<50)', 0.0, 50.0, '#FF7D45'))

# A name becomes part of file names and the mmCIF data block, where whitespace is a separator.
_VALID_NAME = re.compile(r'[^\s/\\]+')

_N = 'N'  # In a shape pattern: the residue axis, of size N_res and cropped to real residues.


@dataclasses.dataclass(frozen=True)
class _Field:
  """One array of the model outputs and where it goes in outputs.npz.

  `shape` has one entry per axis: _N for a residue axis, an int for a fixed size, None for
  any size.
  """
  key: str  # Name in outputs.npz.
  path: tuple[str, ...]  # Keys leading to the array in the nested outputs.
  shape: tuple[str | int | None, ...]
  required: bool = False


_FIELDS = (
    _Field('final_atom_positions', ('structure_module', 'final_atom_positions'),
           (_N, rc.atom_type_num, 3), required=True),
    _Field('final_atom_mask', ('structure_module', 'final_atom_mask'), (_N, rc.atom_type_num),
           required=True),
    _Field('plddt', ('confidence', 'plddt'), (_N,), required=True),
    _Field('ranking_confidence', ('confidence', 'ranking_confidence'), (), required=True),
    _Field('predicted_aligned_error', ('confidence', 'predicted_aligned_error'), (_N, _N)),
    _Field('max_predicted_aligned_error', ('confidence', 'max_predicted_aligned_error'), ()),
    _Field('ptm', ('confidence', 'ptm'), ()),
    _Field('aligned_confidence_probs', ('confidence', 'aligned_confidence_probs'),
           (_N, _N, None)),
    _Field('distogram/logits', ('distogram', 'logits'), (_N, _N, None)),
    _Field('distogram/bin_edges', ('distogram', 'bin_edges'), (None,)),
    _Field('masked_msa/logits', ('masked_msa', 'logits'), (None, _N, None)),
    _Field('experimentally_resolved/logits', ('experimentally_resolved', 'logits'),
           (_N, rc.atom_type_num)),
    _Field('predicted_lddt/logits', ('predicted_lddt', 'logits'), (_N, None)),
    _Field('predicted_aligned_error/logits', ('predicted_aligned_error', 'logits'),
           (_N, _N, None)),
    _Field('predicted_aligned_error/breaks', ('predicted_aligned_error', 'breaks'), (None,)),
)

# Residue axes of AlphaFold's representations (Suppl. 1.6-1.8): msa [N_seq, N_res, c_m],
# pair [N_res, N_res, c_z], the others [N_res, c].
_REPRESENTATION_SHAPES = {
    'msa': (None, _N, None),
    'msa_first_row': (_N, None),
    'pair': (_N, _N, None),
    'single': (_N, None),
    'structure_module': (_N, None),
}


def output_paths(output_dir: str | os.PathLike, name: str) -> dict[str, pathlib.Path]:
  """Where `write_prediction` puts each kind of file ('pdb', 'cif', 'npz', 'json', 'png')."""
  output_dir = pathlib.Path(output_dir)
  return {'pdb': output_dir / f'{name}_unrelaxed.pdb',
          'cif': output_dir / f'{name}_unrelaxed.cif',
          'npz': output_dir / 'outputs.npz',
          'json': output_dir / 'confidence.json',
          'png': output_dir / f'{name}_confidence.png'}


def check_destination(output_dir: str | os.PathLike, name: str, overwrite: bool = False
                      ) -> dict[str, pathlib.Path]:
  """The paths `write_prediction` would write, after checking it may write them.

  Raises:
    ValueError: `name` cannot be part of a file name.
    NotADirectoryError: `output_dir` exists and is not a directory.
    FileExistsError: one of the files exists and `overwrite` is False.
  """
  if not isinstance(name, str) or not _VALID_NAME.fullmatch(name) or name in ('.', '..'):
    raise ValueError(f'prediction name {name!r} cannot be used in file names: it must be '
                     f'non-empty without whitespace or path separators.')
  output_dir = pathlib.Path(output_dir)
  if output_dir.exists() and not output_dir.is_dir():
    raise NotADirectoryError(f'output directory {output_dir} exists and is not a directory.')
  paths = output_paths(output_dir, name)
  if not overwrite:
    for path in paths.values():
      if os.path.lexists(path):
        raise FileExistsError(f'{path} already exists; not replaced without --overwrite '
                              f'(overwrite=True).')
  return paths


def write_prediction(output_dir: str | os.PathLike, name: str, batch: Mapping[str, np.ndarray],
                     outputs: Mapping[str, Any], *, save_representations: bool = False,
                     overwrite: bool = False) -> dict[str, pathlib.Path]:
  """Writes the structure, outputs.npz, confidence.json and the confidence plot of a prediction.

  Args:
    output_dir: directory to write into; created (with its parents) if missing.
    name: prediction name used in file names and as the mmCIF data block; no whitespace or
      path separators.
    batch: one example of AlphaFold's processed features without the ensemble axis:
      'aatype' [N_res] int, 'residue_index' [N_res] int (0-based; written 1-based),
      optionally 'seq_mask' [N_res] (1 real, 0 padding; all real if absent) and 'asym_id' or
      'chain_index' [N_res] (chain of each residue; one chain if absent).
    outputs: the model's outputs (numpy or jax arrays): 'structure_module' with
      'final_atom_positions' [N_res, 37, 3] and 'final_atom_mask' [N_res, 37]; 'confidence'
      with 'plddt' [N_res] (0-100), 'ranking_confidence' [] and, with the pTM head,
      'predicted_aligned_error' [N_res, N_res] Å, 'max_predicted_aligned_error' [], 'ptm' [],
      'aligned_confidence_probs' [N_res, N_res, bins]; optionally the heads' logits
      ('distogram', 'masked_msa', 'experimentally_resolved', 'predicted_lddt',
      'predicted_aligned_error') and 'representations'. Other keys are ignored.
    save_representations: also store outputs['representations'] in outputs.npz.
    overwrite: replace files already in `output_dir`; otherwise finding one is an error.

  Returns:
    The written paths by kind: 'pdb', 'cif', 'npz', 'json', 'png'.

  Raises:
    FileExistsError: one of the files exists and `overwrite` is False; nothing is written.
    ValueError: an input is missing or has a shape inconsistent with N_res of batch['aatype'].
  """
  paths = check_destination(output_dir, name, overwrite)
  output_dir = pathlib.Path(output_dir)

  # Everything but the plot is built in memory first, so that bad input fails before any
  # file is touched.
  real, chain = _residues(batch)
  arrays = _npz_arrays(outputs, num_res=len(real), real=real,
                       save_representations=save_representations)
  prot = protein.from_prediction(
      features={'aatype': np.asarray(batch['aatype'])[real],
                'residue_index': np.asarray(batch['residue_index'])[real],
                'asym_id': chain[real]},
      result={'structure_module': {'final_atom_positions': arrays['final_atom_positions'],
                                   'final_atom_mask': arrays['final_atom_mask']}},
      b_factors=arrays['plddt'], remove_leading_feature_dimension=False)
  texts = {'pdb': protein.to_pdb(prot), 'cif': protein.to_mmcif(prot, file_id=name),
           'json': json.dumps(_confidence_summary(name, arrays), allow_nan=False) + '\n'}

  # resolve() so that '.' or 'a/..' still has a parent and a name for the staging directory.
  resolved = output_dir.resolve()
  resolved.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{resolved.name}.partial-',
                                          dir=resolved.parent))
  try:
    staged = {kind: staging / path.name for kind, path in paths.items()}
    for kind, text in texts.items():
      staged[kind].write_text(text)
    with open(staged['npz'], 'wb') as handle:
      np.savez(handle, **arrays)
    _write_confidence_png(staged['png'], name, plddt=arrays['plddt'],
                          pae=arrays.get('predicted_aligned_error'),
                          max_pae=arrays.get('max_predicted_aligned_error'),
                          ptm=arrays.get('ptm'))
    _move_all(staged, paths, output_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return paths


def _residues(batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """([N_res] bool, True for real residues; [N_res] int chain index) of a validated batch."""
  for key in ('aatype', 'residue_index'):
    if key not in batch:
      raise ValueError(f'batch has no {key!r}; keys present: {sorted(batch)}.')
  aatype = np.asarray(batch['aatype'])
  if aatype.ndim != 1:
    raise ValueError(f"batch['aatype'] has shape {aatype.shape}; expected [N_res] (one "
                     f'example, without the leading ensemble axis).')
  num_res = aatype.shape[0]
  if num_res == 0:
    raise ValueError("batch['aatype'] is empty: no residue to write.")
  chain_key = next((key for key in ('asym_id', 'chain_index') if key in batch), None)
  for key in ('aatype', 'residue_index', 'seq_mask', chain_key):
    if key is None or key not in batch:
      continue
    value = np.asarray(batch[key])
    if value.shape != (num_res,):
      raise ValueError(f'batch[{key!r}] has shape {value.shape}; expected ({num_res},) with '
                       f"N_res = {num_res} from batch['aatype'].")
    if key != 'seq_mask' and value.dtype.kind not in 'iu':
      raise ValueError(f'batch[{key!r}] has dtype {value.dtype}; expected integers.')

  if 'seq_mask' in batch:
    seq_mask = np.asarray(batch['seq_mask'])
    if not np.isin(seq_mask, (0, 1)).all():
      raise ValueError(f"batch['seq_mask'] holds values other than 0 and 1: "
                       f'{sorted(set(seq_mask[~np.isin(seq_mask, (0, 1))].tolist()))[:5]}.')
    real = seq_mask == 1
  else:
    real = np.ones(num_res, dtype=bool)
  if not real.any():
    raise ValueError("batch['seq_mask'] is all zero: no real residue to write.")
  chain = (np.asarray(batch[chain_key]) if chain_key is not None
           else np.zeros(num_res, dtype=np.int32))
  return real, chain


def _lookup(outputs: Mapping[str, Any], path: tuple[str, ...]) -> Any | None:
  node = outputs
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return node


def _crop(value: Any, shape: tuple[str | int | None, ...], where: str, num_res: int,
          real: np.ndarray) -> np.ndarray:
  """`value` checked against the shape pattern, residue axes cropped to real residues, floats
  as float32 (bfloat16 included, which numpy does not count as floating)."""
  array = np.asarray(value)
  expected = tuple(num_res if size == _N else size for size in shape)
  if array.ndim != len(shape) or any(
      size is not None and size != actual for size, actual in zip(expected, array.shape)):
    pattern = ', '.join('any' if size is None else str(size) for size in expected)
    raise ValueError(f'{where} has shape {array.shape}; expected ({pattern}) with '
                     f"N_res = {num_res} from batch['aatype'].")
  for axis, size in enumerate(shape):
    if size == _N:
      array = np.compress(real, array, axis=axis)
  if array.dtype.kind not in 'biu':
    array = array.astype(np.float32)
  return array


def _npz_arrays(outputs: Mapping[str, Any], num_res: int, real: np.ndarray,
                save_representations: bool) -> dict[str, np.ndarray]:
  """The arrays of outputs.npz, checked and cropped to the real residues."""
  arrays = {}
  for field in _FIELDS:
    where = 'outputs' + ''.join(f'[{key!r}]' for key in field.path)
    value = _lookup(outputs, field.path)
    if value is None:
      if field.required:
        raise ValueError(f'{where} is missing.')
      continue
    arrays[field.key] = _crop(value, field.shape, where, num_res, real)

  for key in ('plddt', 'ranking_confidence', 'predicted_aligned_error', 'ptm',
              'max_predicted_aligned_error'):
    if key in arrays and not np.isfinite(arrays[key]).all():
      raise ValueError(f"outputs['confidence'][{key!r}] has non-finite values.")
  if arrays['plddt'].min() < 0 or arrays['plddt'].max() > 100:
    raise ValueError(f"outputs['confidence']['plddt'] spans [{arrays['plddt'].min():.3g}, "
                     f"{arrays['plddt'].max():.3g}]; expected values in 0-100.")

  if save_representations:
    representations = outputs.get('representations')
    if not isinstance(representations, Mapping) or not representations:
      raise ValueError("save_representations is set but outputs has no 'representations'.")
    for key, value in representations.items():
      where = f'outputs[{"representations"!r}][{key!r}]'
      if key in _REPRESENTATION_SHAPES:
        arrays[f'representations/{key}'] = _crop(value, _REPRESENTATION_SHAPES[key], where,
                                                 num_res, real)
      elif real.all():
        arrays[f'representations/{key}'] = _crop(value, (None,) * np.ndim(value), where,
                                                 num_res, real)
      else:
        # Cropping needs the residue axes, which only the known representations declare.
        raise ValueError(f'{where} has unknown residue axes and cannot be cropped to the real '
                         f'residues; known: {sorted(_REPRESENTATION_SHAPES)}.')
  return arrays


def _confidence_summary(name: str, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The content of confidence.json, from the cropped arrays."""
  plddt = arrays['plddt']
  summary = {'name': name, 'num_residues': int(plddt.shape[0]),
             'mean_plddt': float(plddt.mean()),
             'plddt': [round(float(value), 2) for value in plddt],
             'ranking_confidence': float(arrays['ranking_confidence'])}
  for key in ('ptm', 'max_predicted_aligned_error'):
    if key in arrays:
      summary[key] = float(arrays[key])
  if 'predicted_aligned_error' in arrays:
    summary['mean_predicted_aligned_error'] = float(arrays['predicted_aligned_error'].mean())
  return summary


def _write_confidence_png(path: pathlib.Path, name: str, plddt: np.ndarray,
                          pae: np.ndarray | None, max_pae: np.ndarray | None,
                          ptm: np.ndarray | None) -> None:
  """Plots the pLDDT track over AlphaFold's confidence bands and, when given, the PAE map.

  Args:
    plddt: [N_res] 0-100, against the residue's position in the sequence (1-based, the same
      numbering as the PAE axes).
    pae: [N_res, N_res] Å, row = aligned residue, column = scored residue; None to plot
      pLDDT only.
    max_pae: [] Å, top of the colour scale (the largest value of pae if None).
  """
  # Imported here so that `import jaxfold` does not pull in matplotlib. The Agg canvas is
  # attached to this figure only, leaving pyplot's global backend alone.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  num_res = plddt.shape[0]
  figure = Figure(figsize=(13, 5) if pae is not None else (7, 5), dpi=100,
                  layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, 2 if pae is not None else 1, squeeze=False)[0]

  positions = np.arange(1, num_res + 1)
  for label, low, high, colour in _PLDDT_BANDS:
    axes[0].axhspan(low, high, color=colour, alpha=0.25, linewidth=0, label=label)
  axes[0].plot(positions, plddt, color='black', linewidth=1.2)
  axes[0].set(xlim=(0.5, num_res + 0.5), ylim=(0, 100), xlabel='Residue', ylabel='pLDDT',
              title='Predicted LDDT')
  axes[0].legend(loc='lower left', fontsize='small', framealpha=0.9)

  if pae is not None:
    top = float(max_pae) if max_pae is not None else float(pae.max())
    image = axes[1].imshow(pae, cmap='Greens_r', vmin=0.0, vmax=top, interpolation='nearest',
                           extent=(0.5, num_res + 0.5, num_res + 0.5, 0.5))
    figure.colorbar(image, ax=axes[1], label='Expected position error (Å)')
    axes[1].set(xlabel='Scored residue', ylabel='Aligned residue',
                title='Predicted aligned error')

  title = f'{name}: mean pLDDT {plddt.mean():.1f}'
  if ptm is not None:
    title += f', pTM {float(ptm):.3f}'
  figure.suptitle(title)
  figure.savefig(path, format='png')


def _move_all(staged: Mapping[str, pathlib.Path], paths: Mapping[str, pathlib.Path],
              output_dir: pathlib.Path) -> None:
  """Moves the staged files into place; if a move fails, removes what this call put there
  (files that did not exist before, and `output_dir` if it created it). A file replaced
  under overwrite=True before the failure cannot be restored."""
  created_dir = not output_dir.exists()
  output_dir.mkdir(exist_ok=True)
  moved = []
  try:
    for kind, source in staged.items():
      existed = os.path.lexists(paths[kind])
      os.replace(source, paths[kind])
      if not existed:
        moved.append(paths[kind])
  except BaseException:
    for path in moved:
      path.unlink(missing_ok=True)
    if created_dir:
      with contextlib.suppress(OSError):  # Not empty: someone else wrote there meanwhile.
        output_dir.rmdir()
    raise
