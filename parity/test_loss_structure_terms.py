"""FAPE, symmetric renaming and the torsion-angle loss against OpenFold's and AlphaFold's code.

OpenFold: on the recorded small_loss fixture (2q2k chain A, 48 residues, 2 structure-module
layers), 0.5 * backbone + 0.5 * side-chain FAPE is OpenFold's 'fape' term and the torsion
loss chi_weight * chi + angle_norm_weight * norm its 'supervised_chi' term (max|Δ|/|ref| <=
1e-4). AlphaFold: `alphafold.model.folding`'s backbone_loss, compute_renamed_ground_truth,
sidechain_loss and supervised_chi_loss, called on the same arrays in AlphaFold's forms (r3
objects, chi angles in radians), agree with jaxfold's values and gradients within 1e-5
relative, on the fixture's prediction (far from the truth: most errors clamped) and on a
near-native one (the ground truth perturbed, side chains under the alternative naming).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.model import folding as af_folding
from alphafold.model import r3 as af_r3

from jaxfold.common import residue_constants as rc
from jaxfold.loss import fape, torsion
from jaxfold.parity.alphafold_reference import config_from_reference, reference_config
from jaxfold.parity.openfold_loss import load_loss_fixture

OPENFOLD_TOLERANCE = 1e-4
SM_CONFIG = reference_config('model_1_ptm').model.heads.structure_module
# Model outputs the losses differentiate, in jaxfold's forms.
OUTPUT_KEYS = ('traj', 'frames', 'atom_pos', 'angles_sin_cos', 'unnormalized_angles_sin_cos')


@pytest.fixture(scope='module')
def fixture(shared_dir):
  return load_loss_fixture(shared_dir / 'fixtures/openfold/small_loss')


def _outputs(f) -> dict[str, np.ndarray]:
  sm = f.outputs['structure_module']
  return {'traj': sm['traj'], **{k: sm['sidechains'][k] for k in OUTPUT_KEYS[1:]}}


def _near_native(f, seed=0) -> dict[str, np.ndarray]:
  """Outputs close to the ground truth: the alternative naming of the side chains plus noise,
  chis shifted by pi where symmetric, backbone quaternions and translations perturbed."""
  rng = np.random.default_rng(seed)
  b, out = f.batch, _outputs(f)
  num_layers = out['traj'].shape[0]

  def noisy(x, scale):
    x = np.broadcast_to(x, (num_layers,) + x.shape)
    return (x + scale * rng.standard_normal(x.shape)).astype(np.float32)

  traj = noisy(b['backbone_affine_tensor'], 0.05)
  traj[..., :4] /= np.linalg.norm(traj[..., :4], axis=-1, keepdims=True)
  traj[..., 4:] += rng.standard_normal(traj[..., 4:].shape).astype(np.float32)
  pi_periodic = np.asarray(rc.chi_pi_periodic, np.float32)[b['aatype']]
  angles = out['angles_sin_cos'].copy()
  angles[..., 3:, :] = (1 - 2 * pi_periodic[..., None]) * noisy(b['chi_angles_sin_cos'], 0.1)
  return {'traj': traj, 'frames': noisy(b['rigidgroups_alt_gt_frames'], 0.05),
          'atom_pos': noisy(b['atom14_alt_gt_positions'], 0.5), 'angles_sin_cos': angles,
          'unnormalized_angles_sin_cos': out['unnormalized_angles_sin_cos']}


@jax.jit
def _ours(outputs, batch):
  """jaxfold's terms: FAPE pieces, renaming and torsion loss."""
  sm = {'traj': outputs['traj'], 'final_atom14_positions': outputs['atom_pos'][-1],
        'sidechains': {'frames': outputs['frames'], 'atom_pos': outputs['atom_pos']}}
  terms = fape.fape_loss(sm, batch)
  chi = torsion.supervised_chi_loss(outputs['angles_sin_cos'],
                                    outputs['unnormalized_angles_sin_cos'], batch['aatype'],
                                    batch['seq_mask'], batch['chi_mask'],
                                    batch['chi_angles_sin_cos'])
  return {**terms, **{f'chi/{k}': v for k, v in chi.items()},
          'structure_loss': terms['loss'] + chi['loss']}


@jax.jit
def _alphafold(outputs, batch):
  """The same terms by AlphaFold's own functions, fed its forms."""
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  batch['chi_angles'] = jnp.arctan2(batch['chi_angles_sin_cos'][..., 0],
                                    batch['chi_angles_sin_cos'][..., 1])
  value = {'traj': outputs['traj'],
           'sidechains': {'frames': af_r3.rigids_from_tensor_flat12(outputs['frames']),
                          'atom_pos': af_r3.vecs_from_tensor(outputs['atom_pos']),
                          'angles_sin_cos': outputs['angles_sin_cos'],
                          'unnormalized_angles_sin_cos': outputs['unnormalized_angles_sin_cos']}}
  ret = {'loss': 0.0}
  af_folding.backbone_loss(ret, batch, value, SM_CONFIG)
  backbone, last_layer = ret['loss'], ret['fape']
  value.update(af_folding.compute_renamed_ground_truth(batch, outputs['atom_pos'][-1]))
  sidechain = af_folding.sidechain_loss(batch, value, SM_CONFIG)['loss']
  chi = {'loss': 0.0}
  af_folding.supervised_chi_loss(chi, batch, value, SM_CONFIG)
  weight = SM_CONFIG.sidechain.weight_frac
  terms = {'loss': (1 - weight) * backbone + weight * sidechain, 'backbone_loss': backbone,
           'fape': last_layer, 'sidechain_fape': sidechain,
           **{k: value[k] for k in ('alt_naming_is_better', 'renamed_atom14_gt_positions',
                                    'renamed_atom14_gt_exists')},
           **{f'chi/{k}': chi[k] for k in ('chi_loss', 'angle_norm_loss', 'loss')}}
  terms['structure_loss'] = terms['loss'] + chi['loss']
  return terms


def _gradient(terms_fn):
  """d structure_loss / d outputs, jitted."""
  return jax.jit(jax.grad(lambda outputs, batch: terms_fn(outputs, batch)['structure_loss']))


_grad_ours, _grad_alphafold = _gradient(_ours), _gradient(_alphafold)


def test_configs_are_alphafolds():
  assert config_from_reference(fape.FapeLossConfig, SM_CONFIG) == fape.FapeLossConfig()
  assert config_from_reference(torsion.TorsionLossConfig, SM_CONFIG) == torsion.TorsionLossConfig()


def test_openfold_terms(fixture):
  terms = _ours(_outputs(fixture), fixture.batch)
  for name, ours in (('fape', terms['loss']), ('supervised_chi', terms['chi/loss'])):
    ref = fixture.losses[name]
    rel = abs(float(ours) - ref) / abs(ref)
    print(f'\nOpenFold {name}: ours {float(ours):.7f}  OpenFold {ref:.7f}  |Δ|/|ref| {rel:.2e}')
    assert rel <= OPENFOLD_TOLERANCE
  print(f'backbone {float(terms["backbone_loss"]):.7f}  sidechain '
        f'{float(terms["sidechain_fape"]):.7f}  renamed residues '
        f'{int(terms["alt_naming_is_better"].sum())}')


@pytest.mark.parametrize('use_clamped_fape', [1.0, 0.0])
@pytest.mark.parametrize('case', ['recorded', 'near_native'])
def test_alphafold_terms_and_gradients(fixture, parity, case, use_clamped_fape):
  outputs = _outputs(fixture) if case == 'recorded' else _near_native(fixture)
  batch = {**fixture.batch, 'use_clamped_fape': np.float32(use_clamped_fape)}
  ours, ref = _ours(outputs, batch), _alphafold(outputs, batch)
  print(f'\n{case}, use_clamped_fape={use_clamped_fape}: renamed residues '
        f'{int(ref["alt_naming_is_better"].sum())}')
  for row in parity.check(f'{case}/clamp{use_clamped_fape:g}', ours, ref):
    print(row.row())

  for row in parity.check(f'{case}/clamp{use_clamped_fape:g}/grad', _grad_ours(outputs, batch),
                          _grad_alphafold(outputs, batch)):
    print(row.row())

