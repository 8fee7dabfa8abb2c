"""OpenFold's recorded loss example (shared/fixtures/openfold/small_loss) in jaxfold's forms.

The fixture holds OpenFold's training-mode batch of PDB 2q2k chain A with its ground truth
(`loss_batch.npz`, OpenFold's layout: recycling axis last), the model's outputs on it
(`loss_outputs.npz`, OpenFold's names) and OpenFold's unweighted loss terms (`losses.json`).
jaxfold's losses read AlphaFold's names and forms, so this module converts:
- the batch: the LAST recycling iteration's slice (the one OpenFold's loss reads), ints as
  int32; 4x4 frames as AlphaFold's 12-vectors (`rigidgroups_gt_frames`,
  `rigidgroups_alt_gt_frames` [N, 8, 12]) and the backbone frame as AlphaFold's
  `backbone_affine_tensor` [N, 7] / `backbone_affine_mask` [N];
- the outputs: the nested dict jaxfold's model returns (AlphaFold's head names; see
  jaxfold/model/structure_module.py and heads.py), with the bin edges the heads define.
Only parity/ and convert/ know OpenFold's layout (DESIGN.md).
"""

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np

from jaxfold.common import all_atom
from jaxfold.common.geometry import Rigid
from jaxfold.convert import openfold_keys
from jaxfold.convert.openfold_batch import from_openfold
from jaxfold.loss import total
from jaxfold.model.alphafold import model_features
from jaxfold.parity.agreement import OPENFOLD_MODULE_TOLERANCE, Comparison, Row, scalar_row
from jaxfold.parity.alphafold_model import run_jaxfold
from jaxfold.parity.openfold_fixture import fixture_config

FILES = ('manifest.json', 'loss_batch.npz', 'loss_outputs.npz', 'losses.json')


@dataclasses.dataclass(frozen=True)
class LossFixture:
  """OpenFold's loss example: batch and outputs in jaxfold's forms, OpenFold's terms."""
  path: pathlib.Path
  manifest: dict[str, Any]
  inputs: dict[str, np.ndarray]  # the model's input batch in AlphaFold's layout (all slices)
  batch: dict[str, np.ndarray]  # the loss's: the last slice, labels in AlphaFold's forms
  outputs: dict[str, Any]  # as jaxfold's AlphaFold module returns them
  losses: dict[str, float]  # OpenFold's unweighted terms, 'unscaled_loss' and 'loss'
  loss_config: dict[str, Any]  # OpenFold's config.loss used for them


def _flat12(frames_4x4: np.ndarray) -> np.ndarray:
  return np.asarray(Rigid.from_tensor_4x4(frames_4x4).to_tensor_flat12())


def loss_batch(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The training batch in AlphaFold's layout -> the loss's example: the last slice, with
  AlphaFold's label names and forms."""
  batch = {k: v[-1] for k, v in inputs.items()}
  for key in ('rigidgroups_gt_frames', 'rigidgroups_alt_gt_frames'):
    batch[key] = _flat12(batch[key])
  backbone = _flat12(batch.pop('backbone_rigid_tensor'))
  affine, _ = all_atom.backbone_affine_from_frames(backbone[:, None],
                                                   batch['backbone_rigid_mask'][:, None])
  batch['backbone_affine_tensor'] = np.asarray(affine)
  batch['backbone_affine_mask'] = batch.pop('backbone_rigid_mask')
  return batch


def model_outputs(recorded: dict[str, np.ndarray], loss_config: dict[str, Any]) -> dict[str, Any]:
  """OpenFold's `forward` outputs -> the dict jaxfold's model returns (AlphaFold's names)."""
  distogram = loss_config['distogram']
  tm = loss_config['tm']
  return {
      'structure_module': {
          'traj': recorded['sm/frames'],
          'sidechains': {
              'frames': _flat12(recorded['sm/sidechain_frames']),
              'atom_pos': recorded['sm/positions'],
              'angles_sin_cos': recorded['sm/angles'],
              'unnormalized_angles_sin_cos': recorded['sm/unnormalized_angles'],
          },
          'final_atom14_positions': recorded['sm/positions'][-1],
          'final_atom_positions': recorded['final_atom_positions'],
          'final_atom_mask': recorded['final_atom_mask'],
          'final_affines': recorded['final_affine_tensor'],
      },
      'representations': {'msa': recorded['msa'], 'pair': recorded['pair'],
                          'single': recorded['single'],
                          'structure_module': recorded['sm/single']},
      'distogram': {'logits': recorded['distogram_logits'],
                    'bin_edges': np.linspace(distogram['min_bin'], distogram['max_bin'],
                                             distogram['no_bins'] - 1, dtype=np.float32)},
      'masked_msa': {'logits': recorded['masked_msa_logits']},
      'predicted_lddt': {'logits': recorded['lddt_logits']},
      'experimentally_resolved': {'logits': recorded['experimentally_resolved_logits']},
      'predicted_aligned_error': {'logits': recorded['tm_logits'],
                                  'breaks': np.linspace(0.0, tm['max_bin'], tm['no_bins'] - 1,
                                                        dtype=np.float32)},
  }


def load_loss_fixture(path: str | pathlib.Path) -> LossFixture:
  """Reads a loss fixture directory (loss_batch.npz, loss_outputs.npz, losses.json)."""
  path = pathlib.Path(path)
  missing = [name for name in FILES if not (path / name).is_file()]
  if missing:
    raise ValueError(f'{path}: not an OpenFold loss fixture, missing {", ".join(missing)}')
  document = json.loads((path / 'losses.json').read_text())
  with np.load(path / 'loss_batch.npz') as f:
    inputs = from_openfold({k: f[k] for k in f.files}, str(path / 'loss_batch.npz'))
  with np.load(path / 'loss_outputs.npz') as f:
    outputs = model_outputs({k: f[k] for k in f.files}, document['loss_config'])
  return LossFixture(path, json.loads((path / 'manifest.json').read_text()), inputs,
                     loss_batch(inputs), jax.tree.map(np.asarray, outputs), document['losses'],
                     document['loss_config'])


def jaxfold_outputs(fixture: LossFixture) -> dict[str, Any]:
  """jaxfold's own forward pass on the fixture's batch, with the fixture's weights.

  The model of manifest.json (the small config, templates off) with the weights regenerated
  by the fixtures' rule, in float32 without dropout, for as many recycling iterations as the
  batch has slices (as OpenFold's training forward runs them).
  """
  source = str(fixture.path / 'manifest.json')
  config = fixture_config(fixture.manifest, source).model
  batch = model_features(fixture.inputs, config, str(fixture.path / 'loss_batch.npz'))
  tree = openfold_keys.from_openfold(openfold_keys.rule_weights(fixture.manifest['state_dict']),
                                     config, source)
  return run_jaxfold(config, tree, batch, num_recycle=batch['aatype'].shape[0] - 1)


# OpenFold's config.loss keys (term, key) -> jaxfold's LossConfig field path. Epsilons are
# not translated: jaxfold keeps AlphaFold's, which differ from OpenFold's in a few terms
# (their effect on the fixture's terms is below 1e-6 relative).
_LOSS_FIELDS = {
    ('fape', 'backbone.clamp_distance'): 'fape.fape.clamp_distance',
    ('fape', 'backbone.loss_unit_distance'): 'fape.fape.loss_unit_distance',
    ('fape', 'sidechain.clamp_distance'): 'fape.sidechain.atom_clamp_distance',
    ('fape', 'sidechain.length_scale'): 'fape.sidechain.length_scale',
    ('fape', 'sidechain.weight'): 'fape.sidechain.weight_frac',
    ('plddt_loss', 'cutoff'): 'plddt.cutoff',
    ('plddt_loss', 'no_bins'): 'plddt.num_bins',
    ('plddt_loss', 'min_resolution'): 'plddt.min_resolution',
    ('plddt_loss', 'max_resolution'): 'plddt.max_resolution',
    ('experimentally_resolved', 'min_resolution'): 'experimentally_resolved.min_resolution',
    ('experimentally_resolved', 'max_resolution'): 'experimentally_resolved.max_resolution',
    ('masked_msa', 'num_classes'): 'masked_msa.num_classes',
    ('supervised_chi', 'chi_weight'): 'torsion.chi_weight',
    ('supervised_chi', 'angle_norm_weight'): 'torsion.angle_norm_weight',
    ('violation', 'violation_tolerance_factor'): 'violation.violation_tolerance_factor',
    ('violation', 'clash_overlap_tolerance'): 'violation.clash_overlap_tolerance',
    ('tm', 'min_resolution'): 'aligned_error.min_resolution',
    ('tm', 'max_resolution'): 'aligned_error.max_resolution',
}


def _replace_path(config: Any, path: str, value: Any) -> Any:
  head, _, rest = path.partition('.')
  if not rest:
    return dataclasses.replace(config, **{head: type(getattr(config, head))(value)})
  return dataclasses.replace(config, **{head: _replace_path(getattr(config, head), rest, value)})


def loss_config_from_openfold(loss_config: dict[str, Any]) -> total.LossConfig:
  """jaxfold's LossConfig stating OpenFold's `config.loss` (weights and every setting)."""
  config = total.LossConfig()
  for (term, key), path in _LOSS_FIELDS.items():
    value = loss_config[term]
    for part in key.split('.'):
      value = value[part]
    config = _replace_path(config, path, value)
  if loss_config['fape']['backbone']['weight'] + loss_config['fape']['sidechain']['weight'] != 1:
    raise ValueError('OpenFold fape backbone and side-chain weights must sum to 1')
  weights = {name: float(loss_config[openfold]['weight'])
             for name, openfold in total.OPENFOLD_NAMES.items()
             if openfold in loss_config and name in total.LossWeights.__dataclass_fields__}
  if not loss_config['tm'].get('enabled', True):
    weights['aligned_error'] = 0.0
  return dataclasses.replace(config, weights=total.LossWeights(**weights))


def loss_rows(fixture: LossFixture, outputs: dict[str, Any], label: str) -> list[Row]:
  """jaxfold's loss terms on `outputs` and the fixture's batch against OpenFold's terms."""
  config = loss_config_from_openfold(fixture.loss_config)
  _, breakdown = jax.jit(lambda o, b: total.alphafold_loss(o, b, config))(outputs, fixture.batch)
  return [scalar_row(f'losses ({label})/{openfold}', breakdown[name], fixture.losses[openfold],
                     OPENFOLD_MODULE_TOLERANCE)
          for name, openfold in total.OPENFOLD_NAMES.items() if openfold in fixture.losses]


def compare_losses(path: str | pathlib.Path, progress=lambda _: None) -> Comparison:
  """Every loss term and the total against OpenFold's, on OpenFold's recorded outputs and on
  jaxfold's own forward pass of the same batch with the same weights."""
  seconds = {}
  clock = time.perf_counter()
  fixture = load_loss_fixture(path)
  table = loss_rows(fixture, fixture.outputs, 'recorded outputs')
  seconds['recorded'] = time.perf_counter() - clock
  clock = time.perf_counter()
  progress('jaxfold forward pass of the loss batch')
  table += loss_rows(fixture, jaxfold_outputs(fixture), 'jaxfold forward')
  seconds['forward'] = time.perf_counter() - clock
  return Comparison(f'OpenFold losses (recorded in {fixture.path})', fixture.manifest['preset'],
                    fixture.inputs['aatype'].shape[0] - 1, fixture.batch['aatype'].shape[0],
                    table, seconds)
