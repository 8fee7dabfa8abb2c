"""jaxfold.loss.violations: structural violations (Suppl. 1.9.11) without a reference code.

Experimental structures (the 2q2k chain A crop of the OpenFold loss fixture, myoglobin 101m
chain A at 2.07 Å) violate nothing within AlphaFold's tolerances, which an independent numpy
measurement of their peptide bonds and closest contacts confirms; the same structures jittered
or with their residues shuffled violate a lot. Hand-made cases check each term's value, the
proline bond and the disulfide exemption; empty masks and coincident atoms give finite values
and gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.loss import violations
from jaxfold.model.structure_module import StructureModuleConfig
from jaxfold.parity.openfold_loss import load_loss_fixture

CONFIG = violations.ViolationConfig()
METRIC_NAMES = ('violations_extreme_ca_ca_distance', 'violations_between_residue_bond',
                'violations_between_residue_clash', 'violations_within_residue',
                'violations_per_residue')


@functools.partial(jax.jit, static_argnames='config')
def _check(aatype, residue_index, positions, exists, seq_mask, config=CONFIG):
  """(violation loss, metrics, violations) of one structure."""
  found = violations.find_violations(aatype, residue_index, positions, exists, config)
  metrics = violations.violation_metrics(residue_index, positions, exists, seq_mask, found)
  return violations.violation_loss(found, exists), metrics, found


def _atom14(prot: protein.Protein) -> tuple[np.ndarray, np.ndarray]:
  """Resolved atoms of a Protein in the atom14 layout: positions [N, 14, 3], mask [N, 14]."""
  index = rc.restype_atom14_to_atom37[prot.aatype]
  positions = np.take_along_axis(prot.atom_positions, index[..., None], axis=1)
  mask = np.take_along_axis(prot.atom_mask, index, axis=1) * rc.restype_atom14_mask[prot.aatype]
  return positions.astype(np.float32), mask.astype(np.float32)


@pytest.fixture(scope='module')
def structures(shared_dir) -> dict[str, tuple[np.ndarray, ...]]:
  """name -> (aatype, residue_index, atom14 positions, atom14 mask of the resolved atoms)."""
  f = load_loss_fixture(shared_dir / 'fixtures/openfold/small_loss')
  b = f.batch
  out = {'2q2k_crop': (b['aatype'], b['residue_index'], b['atom14_gt_positions'],
                       b['atom14_gt_exists'])}
  path = shared_dir / 'data' / 'mmcif' / '101m.cif'
  if path.exists():
    prot = protein.from_mmcif_string(path.read_text(), 'A')
    standard = prot.aatype < rc.restype_num  # the heme and waters come as UNK residues
    positions, mask = _atom14(prot)
    out['101m_A'] = (prot.aatype[standard].astype(np.int32),
                     prot.residue_index[standard].astype(np.int32), positions[standard],
                     mask[standard])
  return out


def _independent_geometry(aatype, residue_index, positions, mask) -> tuple[float, float]:
  """Numpy, from the definitions: the worst peptide C-N length deviation in standard
  deviations (proline's own values) and the smallest clearance d - (r_a + r_b) (Å) over atom
  pairs of different residues, the peptide bond and SG-SG pairs left out."""
  bonded = (np.diff(residue_index) == 1) & (mask[:-1, 2] > 0) & (mask[1:, 0] > 0)
  length = np.linalg.norm(positions[:-1, 2] - positions[1:, 0], axis=-1)
  pro = aatype[1:] == rc.resname_to_idx['PRO']
  ideal = np.where(pro, 1.341, 1.329)
  stddev = np.where(pro, 0.016, 0.014)
  worst_sigma = float(np.max(np.abs(length - ideal)[bonded] / stddev[bonded]))

  residue, slot = np.nonzero(mask)
  names = [rc.restype_name_to_atom14_names[rc.resnames[aatype[r]]][s]
           for r, s in zip(residue, slot)]
  radius = np.array([rc.van_der_waals_radius[n[0]] for n in names])
  xyz = positions[residue, slot].astype(np.float64)
  d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
  ri, rj = residue_index[residue][:, None], residue_index[residue][None]
  is_c, is_n = np.array([n == 'C' for n in names]), np.array([n == 'N' for n in names])
  is_sg = np.array([n == 'SG' for n in names])
  considered = (ri < rj) & ~((rj == ri + 1) & is_c[:, None] & is_n[None])
  considered &= ~(is_sg[:, None] & is_sg[None])
  clearance = float(np.min((d - radius[:, None] - radius[None])[considered]))
  return worst_sigma, clearance


def test_experimental_structures_violate_nothing(structures):
  for name, (aatype, residue_index, positions, mask) in structures.items():
    loss, metrics, found = _check(aatype, residue_index, positions, mask,
                                  (mask[:, 1] > 0).astype(np.float32))
    worst_sigma, clearance = _independent_geometry(aatype, residue_index, positions, mask)
    print(f'\n{name}: {len(aatype)} residues, {int(mask.sum())} resolved atoms; worst peptide '
          f'C-N {worst_sigma:.2f} sd (allowed {CONFIG.violation_tolerance_factor:g}); closest '
          f'inter-residue contact {clearance:+.3f} Å from touching (clash below '
          f'{-CONFIG.clash_overlap_tolerance:+g}); loss {float(loss):.3g}; '
          + ', '.join(f'{k[11:]} {float(v):.3g}' for k, v in metrics.items()))
    assert worst_sigma < CONFIG.violation_tolerance_factor
    assert clearance > -CONFIG.clash_overlap_tolerance
    assert float(loss) == 0.0
    assert all(float(metrics[k]) == 0.0 for k in METRIC_NAMES)
    assert not np.any(found['total_per_residue_violations_mask'])


def test_scrambled_structures_violate_a_lot(structures):
  rng = np.random.default_rng(0)
  for name, (aatype, residue_index, positions, mask) in structures.items():
    seq_mask = (mask[:, 1] > 0).astype(np.float32)
    jittered = positions + rng.normal(scale=3.0, size=positions.shape).astype(np.float32)
    order = rng.permutation(len(aatype))  # whole residues (type, atoms) in a random order
    cases = {'jittered 3 Å': (aatype, jittered, mask, seq_mask),
             'residues shuffled': (aatype[order], positions[order], mask[order],
                                   seq_mask[order])}
    for case, (types, xyz, exists, smask) in cases.items():
      loss, metrics, _ = _check(types, residue_index, xyz, exists, smask)
      print(f'\n{name} {case}: loss {float(loss):.3g}; '
            + ', '.join(f'{k[11:]} {float(v):.3g}' for k, v in metrics.items()))
      assert float(loss) > 1.0
      assert float(metrics['violations_between_residue_bond']) > 0.5
      assert float(metrics['violations_extreme_ca_ca_distance']) > 0.3
      assert float(metrics['violations_per_residue']) > 0.5
      if case.startswith('jittered'):
        assert float(metrics['violations_within_residue']) > 0.5
        assert float(metrics['violations_between_residue_clash']) > 0.1


def _two_residue_backbone(structures):
  """Residues k, k+1 of the 2q2k crop, backbone atoms only, with a peptide bond between."""
  aatype, residue_index, positions, mask = structures['2q2k_crop']
  k = next(i for i in range(len(aatype) - 1)
           if mask[i, :4].all() and mask[i + 1, :4].all() and aatype[i + 1] != 14)
  exists = np.zeros([2, 14], np.float32)
  exists[:, :4] = 1.0
  return aatype[k:k + 2].copy(), residue_index[k:k + 2], positions[k:k + 2].copy(), exists


def test_peptide_bond_stretched_by_hand(structures):
  """Residue k+1 moved along its own C-N bond: the bond grows, the angles stay."""
  aatype, residue_index, positions, exists = _two_residue_backbone(structures)
  bond = positions[1, 0] - positions[0, 2]
  length = np.linalg.norm(bond)
  allowed = 12.0 * 0.014
  target = 1.329 + allowed + 0.03  # within proline's allowance 1.341 + 12 * 0.016
  positions[1] += (target - length) * bond / length
  # |error| is sqrt(1e-6 + error^2) and the mean divides by 1e-6 + count, as AlphaFold's.
  excess = (np.sqrt(1e-6 + (target - 1.329) ** 2) - allowed) / (1 + 1e-6)
  seq_mask = np.ones(2, np.float32)
  loss, metrics, found = _check(aatype, residue_index, positions, exists, seq_mask)
  between = found['between_residues']
  print(f'\nC-N {length:.4f} -> {target:.4f} Å: c_n loss '
        f'{float(between["bonds_c_n_loss_mean"]):.6f} (expected {excess:.6f}), angles '
        f'{float(between["angles_ca_c_n_loss_mean"]):.2e} '
        f'{float(between["angles_c_n_ca_loss_mean"]):.2e}, loss {float(loss):.6f}')
  np.testing.assert_allclose(float(between['bonds_c_n_loss_mean']), excess, rtol=1e-4)
  assert float(between['angles_ca_c_n_loss_mean']) == 0.0
  assert float(between['angles_c_n_ca_loss_mean']) == 0.0
  np.testing.assert_allclose(float(loss), excess, rtol=1e-4)
  np.testing.assert_array_equal(between['connections_per_residue_violation_mask'], [1.0, 1.0])
  np.testing.assert_allclose(between['connections_per_residue_loss_sum'],
                             [excess / 2, excess / 2], rtol=1e-4)
  assert float(metrics['violations_between_residue_bond']) == 1.0

  aatype[1] = rc.resname_to_idx['PRO']
  loss, _, found = _check(aatype, residue_index, positions, exists, seq_mask)
  assert float(found['between_residues']['bonds_c_n_loss_mean']) == 0.0
  assert not np.any(found['between_residues']['connections_per_residue_violation_mask'])

  # Across a chain break there is no bond to check, and C and N are no longer exempt from
  # clashes: C (1.7 Å) and N (1.55 Å) clash below 1.75 Å, each atom takes the overlap.
  loss, _, found = _check(aatype, residue_index + np.array([0, 1], np.int32), positions, exists,
                          seq_mask)
  between = found['between_residues']
  assert float(between['bonds_c_n_loss_mean']) == 0.0
  overlap = 1.7 + 1.55 - 1.5 - target
  np.testing.assert_allclose(between['clashes_per_atom_loss_sum'][[0, 1], [2, 0]],
                             [overlap, overlap], rtol=1e-4)
  np.testing.assert_allclose(float(loss), 2 * overlap / exists.sum(), rtol=1e-4)


def _lone_atoms(slot: int, distance: float, resname: str = 'ALA'):
  """Two residues, each with one atom in `slot`, `distance` Å apart."""
  aatype = np.full(2, rc.resname_to_idx[resname], np.int32)
  positions = np.zeros([2, 14, 3], np.float32)
  positions[1, slot, 0] = distance
  exists = np.zeros([2, 14], np.float32)
  exists[:, slot] = 1.0
  return aatype, np.arange(2, dtype=np.int32), positions, exists


def test_clash_by_hand():
  # Two CA (carbon, 1.7 Å): they clash closer than 1.7 + 1.7 - 1.5 = 1.9 Å.
  aatype, residue_index, positions, exists = _lone_atoms(1, 1.5)
  loss, metrics, found = _check(aatype, residue_index, positions, exists, np.ones(2, np.float32))
  between = found['between_residues']
  np.testing.assert_allclose(float(between['clashes_mean_loss']), 0.4, rtol=1e-5)
  np.testing.assert_allclose(between['clashes_per_atom_loss_sum'][:, 1], [0.4, 0.4], rtol=1e-5)
  np.testing.assert_allclose(float(loss), 0.4, rtol=1e-5)  # 0.8 over 2 atoms
  assert float(metrics['violations_between_residue_clash']) == 1.0
  loss, _, _ = _check(aatype, residue_index, positions * 1.3, exists, np.ones(2, np.float32))
  assert float(loss) == 0.0  # 1.95 Å: no clash

  # Two cysteine SG (sulfur, 1.8 Å) 2.05 Å apart: a disulfide bridge, not a clash (< 2.1 Å).
  sg = rc.restype_name_to_atom14_names['CYS'].index('SG')
  aatype, residue_index, positions, exists = _lone_atoms(sg, 2.05, 'CYS')
  loss, _, _ = _check(aatype, residue_index, positions, exists, np.ones(2, np.float32))
  assert float(loss) == 0.0


def test_within_residue_bond_by_hand():
  # ALA N-CA: 1.459 +- 0.020 Å, allowed up to 1.459 + 12 * 0.020 = 1.699 Å.
  aatype = np.array([rc.resname_to_idx['ALA']], np.int32)
  positions = np.zeros([1, 14, 3], np.float32)
  positions[0, 1, 0] = 1.8
  exists = np.zeros([1, 14], np.float32)
  exists[0, :2] = 1.0
  loss, metrics, found = _check(aatype, np.zeros(1, np.int32), positions, exists,
                                np.ones(1, np.float32))
  excess = 1.8 - (1.459 + 12 * 0.020)
  within = found['within_residues']
  # The pair is in the [14, 14] matrix twice and each atom sums a row and a column.
  np.testing.assert_allclose(within['per_atom_loss_sum'][0, :2], [2 * excess] * 2, rtol=1e-4)
  np.testing.assert_allclose(float(loss), 2 * excess, rtol=1e-4)
  assert float(metrics['violations_within_residue']) == 1.0


def test_structure_module_config_serves(structures):
  aatype, residue_index, positions, mask = structures['2q2k_crop']
  ours = violations.find_violations(aatype, residue_index, positions + 0.3, mask,
                                    StructureModuleConfig())
  default = violations.find_violations(aatype, residue_index, positions + 0.3, mask)
  jax.tree.map(np.testing.assert_array_equal, ours, default)


@pytest.mark.parametrize('case', ['empty masks', 'coincident atoms', 'all at one point',
                                  'one residue'])
def test_finite_values_and_gradients(structures, case):
  aatype, residue_index, positions, _ = structures['2q2k_crop']
  exists = rc.restype_atom14_mask[aatype].astype(np.float32)
  if case == 'empty masks':
    exists = np.zeros_like(exists)
  elif case == 'coincident atoms':
    # The unresolved atoms all sit at the origin; also collapse residue 20 onto its CA and put
    # residue 21's N on residue 20's C.
    positions = positions.copy()
    positions[20] = positions[20, 1]
    positions[21, 0] = positions[20, 2]
  elif case == 'all at one point':
    positions = np.zeros_like(positions)
  else:
    aatype, residue_index, positions, exists = (aatype[:1], residue_index[:1], positions[:1],
                                                exists[:1])
  seq_mask = exists[:, 1]

  def total(xyz):
    loss, metrics, _ = _check(aatype, residue_index, xyz, exists, seq_mask)
    return loss, metrics

  (loss, metrics), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(positions))
  print(f'\n{case}: loss {float(loss):.4g}, max|grad| {float(jnp.max(jnp.abs(grad))):.3g}')
  assert np.isfinite(float(loss))
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert np.all(np.isfinite(grad))
  if case == 'empty masks':
    assert float(loss) == 0.0 and not np.any(grad)
  if case == 'coincident atoms':
    assert float(loss) > 0.0 and np.any(grad)
