"""Validation metrics (jaxfold.loss.metrics): hand-checked cases, Biopython, OpenFold's formulas.

Independent references: Biopython's SVDSuperimposer (float64) for the superposition and its
RMSD; OpenFold's `validation_metrics` (drmsd, gdt) and `superimposition.superimpose` rewritten
here in numpy from their source; AlphaFold's own `lddt`; cases whose answers follow by hand.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from Bio.SVDSuperimposer import SVDSuperimposer

from jaxfold.common import residue_constants as rc
from jaxfold.data import mmcif
from jaxfold.loss import metrics

CA = rc.atom_order['CA']
_CUTOFFS = (0.5, 1., 2., 4., 8.)


def _rigid_motion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """A random proper rotation [3, 3] and translation [3]."""
  q, r = np.linalg.qr(rng.standard_normal((3, 3)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] = -q[:, 0]
  return q, rng.uniform(-30., 30., 3)


def _move(points: np.ndarray, motion: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
  return (points @ motion[0].T + motion[1]).astype(np.float32)


def _helix(num_res: int) -> np.ndarray:
  """Cα of an ideal α-helix along +z: radius 2.3 Å, 100° and 1.5 Å per residue: [N, 3]."""
  angle = np.deg2rad(100.) * np.arange(num_res)
  return np.stack([2.3 * np.cos(angle), 2.3 * np.sin(angle), 1.5 * np.arange(num_res)],
                  -1).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _read_chains(mmcif_dir: pathlib.Path) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
  chains = []
  for path in sorted(mmcif_dir.glob('*.cif')):
    for chain_id, chain in mmcif.read(path).chains.items():
      chains.append((f'{path.stem}_{chain_id}', chain.atom_positions, chain.atom_mask))
  return tuple(chains)


@pytest.fixture(scope='module')
def chains(shared_dir):
  """(name, atom37 positions [N, 37, 3], atom37 mask [N, 37]) of every chain in data/mmcif."""
  return _read_chains(shared_dir / 'data' / 'mmcif')


def _chain(chains, name):
  return next(chain for chain in chains if chain[0] == name)


def _padded(positions: np.ndarray, mask: np.ndarray, length: int = 160):
  """Zero-padded to `length` residues, so that one compilation serves every chain."""
  pad = ((0, length - positions.shape[0]),)
  return (np.pad(positions, pad + ((0, 0), (0, 0))), np.pad(mask, pad + ((0, 0),)))


def _biopython_fit(true: np.ndarray, pred: np.ndarray) -> tuple[float, np.ndarray]:
  """RMSD and the superposed prediction by SVDSuperimposer, in float64."""
  sup = SVDSuperimposer()
  sup.set(true.astype(np.float64), pred.astype(np.float64))
  sup.run()
  return sup.get_rms(), sup.get_transformed()


def _openfold_drmsd(pred: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
  """openfold/utils/validation_metrics.drmsd, one structure, in float64."""
  def distances(x):
    return np.sqrt(np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1))
  squared = (distances(pred.astype(np.float64)) - distances(true.astype(np.float64))) ** 2
  total = np.sum(squared * mask[:, None] * mask[None, :])
  n = np.sum(mask)
  return float(np.sqrt(total / (n * (n - 1)) if n > 1 else 0.))


def _openfold_gdt(pred: np.ndarray, true: np.ndarray, mask: np.ndarray,
                  cutoffs) -> np.ndarray:
  """OpenFold's validation GDT fractions: superimposition.superimpose (Biopython on the
  resolved points), then validation_metrics.gdt's `distances <= c` over the mask."""
  sel = mask > 0
  superposed = np.zeros_like(pred, np.float64)
  superposed[sel] = _biopython_fit(true[sel], pred[sel])[1]
  distances = np.sqrt(np.sum((superposed - true) ** 2, axis=-1))
  return np.asarray([np.sum((distances <= c) * mask) / np.sum(mask) for c in cutoffs])


_chain_metrics = metrics.chain_metrics
_fractions = jax.jit(metrics.gdt_fractions, static_argnames=('cutoffs', 'search'))


def test_identity_and_rigid_motion_are_perfect(chains):
  rng = np.random.default_rng(0)
  for name in ('101m_A', '2q2k_A'):  # 2q2k chain A has unresolved residues
    positions, mask = _padded(*_chain(chains, name)[1:])
    motion = _rigid_motion(rng)
    moved = _move(positions.reshape(-1, 3), motion).reshape(positions.shape)
    for label, pred in (('itself', positions), ('rigidly moved', moved)):
      for search in (True, False):
        out = _chain_metrics(pred, positions, mask, metrics.MetricsConfig(gdt_search=search))
        print(f'{name} vs {label} (search={search}):',
              {k: round(float(v), 6) for k, v in out.items()})
        assert float(out['rmsd_ca']) < 1e-4
        assert float(out['drmsd_ca']) < 1e-4
        assert float(out['gdt_ts']) == pytest.approx(1., abs=1e-6)
        assert float(out['gdt_ha']) == pytest.approx(1., abs=1e-6)
        assert float(out['lddt_ca']) == pytest.approx(1., abs=1e-6)
        assert float(out['num_ca']) == mask[:, CA].sum()


def test_kabsch_matches_biopython(chains):
  rng = np.random.default_rng(1)
  rmsd = jax.jit(metrics.rmsd)
  superimpose = jax.jit(metrics.superimpose)
  kabsch = jax.jit(metrics.kabsch)
  worst_rmsd, worst_coord = 0., 0.
  for name, *chain in chains:
    positions, mask = _padded(*chain)
    true, ca_mask = positions[:, CA], mask[:, CA]
    sel = ca_mask > 0
    for sigma in (0.3, 3.):
      pred = _move(true + sigma * rng.standard_normal(true.shape), _rigid_motion(rng))
      ref_rmsd, ref_moved = _biopython_fit(true[sel], pred[sel])
      ours = float(rmsd(pred, true, ca_mask))
      moved = np.asarray(superimpose(pred, true, ca_mask))[sel]
      rotation, _ = kabsch(pred, true, ca_mask)
      print(f'{name} sigma={sigma}: Biopython RMSD {ref_rmsd:.6f} Å, ours {ours:.6f} Å, '
            f'|Δ| {abs(ours - ref_rmsd):.2e}, max coordinate |Δ| '
            f'{np.abs(moved - ref_moved).max():.2e}')
      np.testing.assert_allclose(np.linalg.det(np.asarray(rotation)), 1., atol=1e-5)
      worst_rmsd = max(worst_rmsd, abs(ours - ref_rmsd))
      worst_coord = max(worst_coord, np.abs(moved - ref_moved).max())
  print(f'worst RMSD |Δ| {worst_rmsd:.2e} Å, '
        f'worst superposed coordinate |Δ| {worst_coord:.2e} Å')
  assert worst_rmsd <= 1e-4
  assert worst_coord <= 1e-3


def test_mirror_image_gets_a_proper_rotation(chains):
  """The reflection that would superpose a mirror image exactly is not allowed."""
  name, positions, mask = _chain(chains, '101m_A')
  true, ca_mask = positions[:, CA], mask[:, CA]
  sel = ca_mask > 0
  mirror = _move(true * np.asarray([-1., 1., 1.], np.float32), _rigid_motion(
      np.random.default_rng(2)))
  rotation, _ = metrics.kabsch(mirror, true, ca_mask)
  ours = float(metrics.rmsd(mirror, true, ca_mask))
  ref_rmsd = _biopython_fit(true[sel], mirror[sel])[0]
  print(f'{name} vs its mirror image: det {float(jnp.linalg.det(rotation)):.6f}, RMSD ours '
        f'{ours:.6f} Å, Biopython {ref_rmsd:.6f} Å')
  np.testing.assert_allclose(float(jnp.linalg.det(rotation)), 1., atol=1e-5)
  assert ours > 1.
  assert abs(ours - ref_rmsd) <= 1e-4


def test_gdt_of_separated_groups_by_hand():
  """Rigid groups of a helix pulled 40 Å apart along its axis: no superposition can hold
  residues of two groups within 8 Å, so at every cutoff GDT is the largest group's share."""
  helix = _helix(20)
  cases = {'last 5 moved': [0] * 15 + [1] * 5, 'last 12 moved': [0] * 8 + [1] * 12,
           'three groups 8/7/5': [0] * 8 + [1] * 7 + [2] * 5}
  for label, groups in cases.items():
    groups = np.asarray(groups)
    pred = helix + 40. * groups[:, None] * np.asarray([0., 0., 1.], np.float32)
    pred = _move(pred, _rigid_motion(np.random.default_rng(3)))
    # The proof: a rigid motion keeps both of i and j within c only if their distance
    # changed by at most 2c; across groups it changed by more than 2 * 8 Å.
    change = np.abs(np.linalg.norm(pred[:, None] - pred[None], axis=-1) -
                    np.linalg.norm(helix[:, None] - helix[None], axis=-1))
    assert change[groups[:, None] != groups[None, :]].min() > 16.
    expected = np.bincount(groups).max() / len(groups)
    searched = np.asarray(_fractions(pred, helix, np.ones(20, np.float32), _CUTOFFS))
    single = np.asarray(_fractions(pred, helix, np.ones(20, np.float32), _CUTOFFS,
                                   search=False))
    print(f'{label}: expected {expected} at every cutoff {_CUTOFFS}; searched {searched}; '
          f'one whole-chain superposition (OpenFold) {single}')
    np.testing.assert_allclose(searched, expected, atol=1e-6)
    assert np.all(single <= searched + 1e-6)


def _radially_displaced_pairs():
  """A centrosymmetric set of 16 points at 10 Å from its centre and a prediction whose pairs
  (x, -x) move radially by 0.3, 0.8, 1.5, 3, 6, 12, 0 and 0 Å. Its covariance with the truth
  is symmetric positive definite, so the least-squares superposition is the identity and
  each point's distance after it is its displacement."""
  rng = np.random.default_rng(4)
  half = rng.standard_normal((8, 3))
  half = 10. * half / np.linalg.norm(half, axis=-1, keepdims=True)
  shift = np.asarray([0.3, 0.8, 1.5, 3., 6., 12., 0., 0.])
  true = np.concatenate([half, -half]).astype(np.float32)
  scale = np.concatenate([1. + shift / 10., 1. + shift / 10.])
  pred = (true * scale[:, None]).astype(np.float32)
  return pred, true, np.concatenate([shift, shift])


def test_gdt_rmsd_drmsd_of_one_superposition_by_hand():
  pred, true, displacement = _radially_displaced_pairs()
  pred = _move(pred, _rigid_motion(np.random.default_rng(5)))
  mask = np.ones(16, np.float32)
  # Within 0.5, 1, 2, 4, 8 Å: the unmoved pairs plus 1, 2, 3, 4, 5 moved pairs.
  by_hand = np.asarray([6, 8, 10, 12, 14]) / 16
  single = np.asarray(_fractions(pred, true, mask, _CUTOFFS, search=False))
  searched = np.asarray(_fractions(pred, true, mask, _CUTOFFS))
  reference = _openfold_gdt(pred, true, mask, _CUTOFFS)
  print(f'fractions within {_CUTOFFS}: by hand {by_hand}, ours (one superposition) {single}, '
        f'OpenFold formula {reference}, ours searched {searched}')
  np.testing.assert_allclose(single, by_hand, atol=1e-6)
  np.testing.assert_allclose(reference, by_hand, atol=1e-6)
  assert np.all(searched >= by_hand - 1e-6)
  gdt_ts = float(metrics.gdt_ts(pred, true, mask, search=False))
  gdt_ha = float(metrics.gdt_ha(pred, true, mask, search=False))
  print(f'GDT-TS {gdt_ts} (by hand 44/64), GDT-HA {gdt_ha} (by hand 36/64)')
  assert gdt_ts == pytest.approx(44 / 64, abs=1e-6)
  assert gdt_ha == pytest.approx(36 / 64, abs=1e-6)
  rmsd = float(metrics.rmsd(pred, true, mask))
  rmsd_by_hand = np.sqrt(np.mean(displacement ** 2))
  drmsd = float(metrics.drmsd(pred, true, mask))
  drmsd_ref = _openfold_drmsd(pred, true, mask)
  print(f'RMSD {rmsd:.6f} Å (by hand {rmsd_by_hand:.6f}); drmsd {drmsd:.6f} Å '
        f'(OpenFold formula {drmsd_ref:.6f})')
  assert rmsd == pytest.approx(rmsd_by_hand, abs=1e-4)
  assert drmsd == pytest.approx(drmsd_ref, abs=1e-4)


def test_drmsd_by_hand():
  """Two points 3 Å apart predicted 5 Å apart: the two ordered pairs each differ by 2 Å."""
  true = np.asarray([[0., 0., 0.], [3., 0., 0.]], np.float32)
  pred = np.asarray([[1., 1., 1.], [1., 6., 1.]], np.float32)
  value = float(metrics.drmsd(pred, true))
  print(f'drmsd of two points: {value} (by hand 2)')
  assert value == pytest.approx(2., abs=1e-5)
  assert float(metrics.drmsd(pred, true, np.asarray([1., 0.]))) < 1e-4  # n = 1: 0


def test_agrees_with_openfold_and_alphafold_formulas(chains):
  from alphafold.model import lddt as af_lddt  # the test extra's reference
  rng = np.random.default_rng(6)
  worst = {'drmsd': 0., 'gdt': 0., 'lddt': 0.}
  for name, *chain in chains:
    positions, mask = _padded(*chain)
    true, ca_mask = positions[:, CA], mask[:, CA]
    pred_atoms = positions + 1.5 * rng.standard_normal(positions.shape).astype(np.float32)
    pred_atoms = _move(pred_atoms.reshape(-1, 3), _rigid_motion(rng)).reshape(positions.shape)
    pred = pred_atoms[:, CA]
    single = _chain_metrics(pred_atoms, positions, mask, metrics.MetricsConfig(gdt_search=False))
    searched = _chain_metrics(pred_atoms, positions, mask)
    ref_fractions = _openfold_gdt(pred, true, ca_mask, _CUTOFFS)
    ref = {'drmsd_ca': _openfold_drmsd(pred, true, ca_mask),
           'gdt_ts': np.mean(ref_fractions[1:]), 'gdt_ha': np.mean(ref_fractions[:-1]),
           'lddt_ca': float(af_lddt.lddt(pred[None], true[None], ca_mask[None, :, None])[0])}
    print(f'{name}: OpenFold/AlphaFold formulas {ref}')
    print(f'{name}: ours, one superposition {({k: float(v) for k, v in single.items()})}')
    print(f'{name}: ours, searched {({k: float(v) for k, v in searched.items()})}')
    worst['drmsd'] = max(worst['drmsd'], abs(float(single['drmsd_ca']) - ref['drmsd_ca']))
    worst['gdt'] = max(worst['gdt'], abs(float(single['gdt_ts']) - ref['gdt_ts']),
                       abs(float(single['gdt_ha']) - ref['gdt_ha']))
    worst['lddt'] = max(worst['lddt'], abs(float(single['lddt_ca']) - ref['lddt_ca']))
    assert float(searched['gdt_ts']) >= float(single['gdt_ts']) - 1e-6
    assert float(searched['gdt_ha']) >= float(single['gdt_ha']) - 1e-6
  print(f'worst |Δ| against the references: {worst}')
  assert worst['drmsd'] <= 1e-4
  assert worst['gdt'] <= 1e-6
  assert worst['lddt'] <= 1e-6


def test_masked_residues_do_not_count(chains):
  """Garbage at masked-out residues and padding leave every metric as on the resolved ones."""
  name, positions, mask = _chain(chains, '2q2k_A')
  rng = np.random.default_rng(7)
  pred = positions + rng.standard_normal(positions.shape).astype(np.float32)
  sel = mask[:, CA] > 0
  assert not sel.all()
  garbage_pred = np.where(sel[:, None, None], pred, 500. * rng.standard_normal(pred.shape))
  garbage_true = np.where(sel[:, None, None], positions, -300.)
  pad = ((0, 9), (0, 0), (0, 0))
  padded = _chain_metrics(np.pad(garbage_pred, pad, constant_values=77.).astype(np.float32),
                          np.pad(garbage_true, pad, constant_values=-55.).astype(np.float32),
                          np.pad(mask, pad[:2]))
  compact = _chain_metrics(pred[sel], positions[sel], mask[sel])
  print(f'{name}: padded with garbage {({k: float(v) for k, v in padded.items()})}')
  print(f'{name}: resolved residues only {({k: float(v) for k, v in compact.items()})}')
  for key in compact:
    assert float(padded[key]) == pytest.approx(float(compact[key]), abs=2e-5), key


def test_empty_and_tiny_masks_are_finite_with_finite_gradients():
  helix = _helix(12)
  pred = helix + np.random.default_rng(8).standard_normal(helix.shape).astype(np.float32)

  def total(points, mask):
    return (metrics.rmsd(points, helix, mask) + metrics.drmsd(points, helix, mask) +
            metrics.gdt_ts(points, helix, mask))

  values = jax.jit(lambda points, mask: {
      'rmsd': metrics.rmsd(points, helix, mask), 'drmsd': metrics.drmsd(points, helix, mask),
      'gdt_ts': metrics.gdt_ts(points, helix, mask)})
  grad = jax.jit(jax.grad(total))
  for label, mask in (('empty', np.zeros(12)), ('one residue', np.eye(12)[3]),
                      ('two residues', np.eye(12)[3] + np.eye(12)[7]), ('all', np.ones(12))):
    mask = mask.astype(np.float32)
    out = values(pred, mask)
    print(f'{label}: ' + ', '.join(f'{k} {float(v):.6f}' for k, v in out.items()))
    assert all(np.isfinite(float(v)) for v in out.values())
    for points in (pred, helix):  # a distorted prediction, and a perfect one
      gradient = np.asarray(grad(points, mask))
      assert np.all(np.isfinite(gradient)), label
      assert np.all(gradient[mask == 0] == 0.), label
  atom37 = np.zeros((12, 37, 3), np.float32)
  atom37[:, CA] = helix
  out = _chain_metrics(atom37, atom37, np.zeros((12, 37), np.float32))
  print(f'chain with no resolved atom: {({k: float(v) for k, v in out.items()})}')
  assert all(np.isfinite(float(v)) for v in out.values())


def test_rmsd_gradient_matches_finite_differences():
  helix = _helix(10)
  rng = np.random.default_rng(9)
  pred = _move(helix + rng.standard_normal(helix.shape).astype(np.float32), _rigid_motion(rng))
  mask = np.ones(10, np.float32)
  mask[2] = 0.
  rmsd = jax.jit(metrics.rmsd)
  grad = np.asarray(jax.grad(metrics.rmsd)(pred, helix, mask))
  step, worst = 1e-2, 0.
  for index in [(0, 0), (4, 1), (9, 2), (5, 0)]:
    plus, minus = pred.copy(), pred.copy()
    plus[index] += step
    minus[index] -= step
    numeric = (float(rmsd(plus, helix, mask)) - float(rmsd(minus, helix, mask))
               ) / (2 * step)
    worst = max(worst, abs(numeric - grad[index]))
    print(f'd rmsd / d pred{index}: analytic {grad[index]:.5f}, central difference {numeric:.5f}')
  assert worst <= 2e-3
  assert np.all(grad[2] == 0.)


def test_average_over_chains():
  chain = lambda value, n: {'lddt_ca': value, 'rmsd_ca': 2 * value, 'gdt_ts': value,
                            'gdt_ha': value, 'drmsd_ca': value, 'num_ca': n}
  out = metrics.average([chain(0.2, 10.), chain(0.6, 50.), chain(1., 0.)])
  print('average of 0.2 and 0.6, the chain without Cα skipped:',
        {k: float(v) for k, v in out.items()})
  assert float(out['lddt_ca']) == pytest.approx(0.4)
  assert float(out['rmsd_ca']) == pytest.approx(0.8)
  assert float(out['num_chains']) == 2
  empty = metrics.average([chain(1., 0.)])
  assert float(empty['num_chains']) == 0 and float(empty['gdt_ts']) == 0.
  with pytest.raises(ValueError):
    metrics.average([])
  with pytest.raises(KeyError, match='chain 1'):
    metrics.average([chain(0.2, 10.), {'lddt_ca': 1., 'num_ca': 3.}])
