"""Structural violations: bond lengths, bond angles and steric clashes of a predicted structure.

Jumper et al. (2021) Suppl. 1.9.11 'Structural violations', eq. 44-47: flat-bottom penalties on
the peptide bond C-N(next) length and on the CA-C-N(next) and C-N(next)-CA(next) angles (eq. 44,
45, Engh & Huber values of `residue_constants`, proline's own C-N length), on atom pairs of
different residues closer than their van der Waals radii minus a tolerance (eq. 46) and on
atom pairs of one residue outside the bounds of `stereo_chemical_props.txt` (bonds, angles as
virtual bonds, clashes). As AlphaFold's `folding.find_structural_violations`,
`structural_violation_loss` and `compute_violation_metrics` (with `all_atom`'s
`between_residue_bond_loss`, `between_residue_clash_loss`, `within_residue_violations`).

One example, no batch axis; N = N_res. Atom layout atom14 ([N, 14, 3] Å, mask [N, 14]).
AlphaFold's quirk is kept: the CA-C-N angle's tolerance uses the C-N bond length's standard
deviation (0.014), not the angle's own (0.0311); OpenFold does the same.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.common import residue_constants as rc

# AlphaFold's epsilons: inside square roots of bond lengths / angle errors, of atom-pair
# distances, in the denominators of masked means, of the clash loss's atom count, of metrics.
_BOND_EPS = 1e-6
_PAIR_EPS = 1e-10
_MEAN_EPS = 1e-6
_METRIC_EPS = 1e-10
# A CA-CA step this far (Å) beyond the ideal 3.80 Å counts as an extreme violation (metric).
_CA_CA_TOLERANCE = 1.5
# atom14 slots of the backbone atoms and of cysteine's SG (disulfide bridges are no clash).
_N, _CA, _C = 0, 1, 2
_CYS_SG = rc.restype_name_to_atom14_names['CYS'].index('SG')


@dataclasses.dataclass(frozen=True)
class ViolationConfig:
  """AlphaFold's `heads.structure_module` keys of the violation checks.

  A `jaxfold.model.structure_module.StructureModuleConfig` serves as well (same attributes).
  """
  # Bonds and angles may deviate this many standard deviations of the PDB statistics.
  violation_tolerance_factor: float = 12.0
  # Atoms may overlap this much (Å) beyond their van der Waals radii before they clash.
  clash_overlap_tolerance: float = 1.5


def _distance(a: jax.Array, b: jax.Array, eps: float) -> jax.Array:
  """|a - b| over the last axis, sqrt(eps + ...) so that coincident atoms have a gradient."""
  return jnp.sqrt(eps + jnp.sum(jnp.square(a - b), axis=-1))


def _masked_mean(mask: jax.Array, value: jax.Array, eps: float) -> jax.Array:
  return jnp.sum(mask * value) / (jnp.sum(mask) + eps)


def _to_both_neighbours(per_bond: jax.Array, combine) -> jax.Array:
  """[N - 1] per peptide bond -> [N]: residue i gets combine(bond i -> i+1, bond i-1 -> i)."""
  return combine(jnp.pad(per_bond, [[0, 1]]), jnp.pad(per_bond, [[1, 0]]))


def _flat_bottom(error: jax.Array, allowed: jax.Array | float, mask: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Suppl. eq. 44/45 for one term: (loss per bond [N - 1], masked mean, violation mask)."""
  loss = jax.nn.relu(error - allowed)
  return loss, _masked_mean(mask, loss, _MEAN_EPS), mask * (error > allowed)


def between_residue_bonds(atom14_positions: jax.Array, atom14_mask: jax.Array,
                          residue_index: jax.Array, aatype: jax.Array,
                          tolerance_factor: float) -> dict[str, jax.Array]:
  """Peptide-bond length and angle violations between consecutive residues (eq. 44, 45).

  Args:
    atom14_positions: [N, 14, 3] Å.
    atom14_mask: [N, 14] atoms that exist.
    residue_index: [N] residue numbers; a step other than 1 is a chain break (no bond).
    aatype: [N] residue types (proline's C-N bond is longer).
    tolerance_factor: allowed deviation in standard deviations.

  Returns:
    'c_n_loss_mean', 'ca_c_n_loss_mean', 'c_n_ca_loss_mean' []: the masked means over bonds;
    'per_residue_loss_sum' [N]: half of each bond's three losses to each of its residues
      (unmasked, as AlphaFold's: bonds with a missing atom or across a break count too);
    'per_residue_violation_mask' [N]: 1 where a bond of the residue violates a bound.
  """
  mask = atom14_mask.astype(jnp.float32)
  index = residue_index.astype(jnp.float32)
  ca, c = atom14_positions[:-1, _CA], atom14_positions[:-1, _C]
  next_n, next_ca = atom14_positions[1:, _N], atom14_positions[1:, _CA]
  ca_mask, c_mask = mask[:-1, _CA], mask[:-1, _C]
  next_n_mask, next_ca_mask = mask[1:, _N], mask[1:, _CA]
  bonded = (index[1:] - index[:-1] == 1.0).astype(jnp.float32)

  # C-N(next) length; the bond into a proline is longer.
  c_n_length = _distance(c, next_n, _BOND_EPS)
  to_proline = aatype[1:] == rc.resname_to_idx['PRO']
  (ideal_other, ideal_pro), (stddev_other, stddev_pro) = (rc.between_res_bond_length_c_n,
                                                          rc.between_res_bond_length_stddev_c_n)
  ideal = jnp.where(to_proline, ideal_pro, ideal_other)
  stddev = jnp.where(to_proline, stddev_pro, stddev_other)
  c_n_error = jnp.sqrt(_BOND_EPS + jnp.square(c_n_length - ideal))
  c_n_loss, c_n_mean, c_n_violation = _flat_bottom(
      c_n_error, tolerance_factor * stddev, c_mask * next_n_mask * bonded)

  # The angles as cosines between unit bond vectors.
  c_to_ca = (ca - c) / _distance(ca, c, _BOND_EPS)[:, None]
  c_to_n = (next_n - c) / c_n_length[:, None]
  n_to_ca = (next_ca - next_n) / _distance(next_ca, next_n, _BOND_EPS)[:, None]

  ca_c_n_cos = jnp.sum(c_to_ca * c_to_n, axis=-1)
  ca_c_n_error = jnp.sqrt(_BOND_EPS + jnp.square(ca_c_n_cos - rc.between_res_cos_angles_ca_c_n[0]))
  ca_c_n_loss, ca_c_n_mean, ca_c_n_violation = _flat_bottom(
      ca_c_n_error, tolerance_factor * rc.between_res_bond_length_stddev_c_n[0],
      ca_mask * c_mask * next_n_mask * bonded)

  c_n_ca_cos = jnp.sum(-c_to_n * n_to_ca, axis=-1)
  c_n_ca_error = jnp.sqrt(_BOND_EPS + jnp.square(c_n_ca_cos - rc.between_res_cos_angles_c_n_ca[0]))
  c_n_ca_loss, c_n_ca_mean, c_n_ca_violation = _flat_bottom(
      c_n_ca_error, tolerance_factor * rc.between_res_cos_angles_c_n_ca[1],
      c_mask * next_n_mask * next_ca_mask * bonded)

  per_bond_loss = c_n_loss + ca_c_n_loss + c_n_ca_loss
  per_bond_violation = jnp.maximum(jnp.maximum(c_n_violation, ca_c_n_violation),
                                   c_n_ca_violation)
  return {
      'c_n_loss_mean': c_n_mean,
      'ca_c_n_loss_mean': ca_c_n_mean,
      'c_n_ca_loss_mean': c_n_ca_mean,
      'per_residue_loss_sum': _to_both_neighbours(per_bond_loss, lambda a, b: 0.5 * (a + b)),
      'per_residue_violation_mask': _to_both_neighbours(per_bond_violation, jnp.maximum),
  }


def between_residue_clashes(atom14_positions: jax.Array, atom14_mask: jax.Array,
                            atom14_radius: jax.Array, residue_index: jax.Array,
                            overlap_tolerance: float) -> dict[str, jax.Array]:
  """Clashes between atoms of different residues (eq. 46, the part with i != j).

  Each pair counts once (residue_index[i] < residue_index[j]); the peptide bond C-N(next) and
  SG-SG of two cysteines (disulfide bridges) are no clash.

  Args:
    atom14_positions: [N, 14, 3] Å.
    atom14_mask: [N, 14] atoms that exist.
    atom14_radius: [N, 14] van der Waals radii (Å), 0 where no atom.
    residue_index: [N] residue numbers.
    overlap_tolerance: Å that two atoms may overlap before they clash.

  Returns:
    'mean_loss' []: clash loss per pair considered; 'per_atom_loss_sum' [N, 14]: each pair's
    loss given to both of its atoms; 'per_atom_clash_mask' [N, 14]: atoms in any clash.
  """
  # [N, N, 14, 14]: residue i, residue j, atom of i, atom of j.
  dists = _distance(atom14_positions[:, None, :, None], atom14_positions[None, :, None, :],
                    _PAIR_EPS)
  pair_mask = atom14_mask[:, None, :, None] * atom14_mask[None, :, None, :]
  pair_mask *= residue_index[:, None, None, None] < residue_index[None, :, None, None]
  next_residue = residue_index[:, None] + 1 == residue_index[None, :]
  peptide_bond = np.zeros([14, 14], np.float32)
  peptide_bond[_C, _N] = 1.0
  pair_mask *= 1.0 - next_residue[:, :, None, None] * peptide_bond
  disulfide = np.zeros([14, 14], np.float32)
  disulfide[_CYS_SG, _CYS_SG] = 1.0
  pair_mask *= 1.0 - disulfide

  lower_bound = pair_mask * (atom14_radius[:, None, :, None] + atom14_radius[None, :, None, :])
  loss = pair_mask * jax.nn.relu(lower_bound - overlap_tolerance - dists)
  clash = pair_mask * (dists < lower_bound - overlap_tolerance)
  return {
      'mean_loss': jnp.sum(loss) / (_MEAN_EPS + jnp.sum(pair_mask)),
      'per_atom_loss_sum': jnp.sum(loss, axis=(0, 2)) + jnp.sum(loss, axis=(1, 3)),
      'per_atom_clash_mask': jnp.maximum(jnp.max(clash, axis=(0, 2)),
                                         jnp.max(clash, axis=(1, 3))),
  }


def within_residue_violations(atom14_positions: jax.Array, atom14_mask: jax.Array,
                              lower_bound: jax.Array, upper_bound: jax.Array
                              ) -> dict[str, jax.Array]:
  """Atom pairs of one residue outside their allowed distances (eq. 46, the part i == j).

  Args:
    atom14_positions: [N, 14, 3] Å.
    atom14_mask: [N, 14] atoms that exist.
    lower_bound, upper_bound: [N, 14, 14] allowed distances (Å) of each residue's atom pairs
      (`residue_constants.make_atom14_dists_bounds` of its type).

  Returns:
    'per_atom_loss_sum' [N, 14]: each pair's loss given to both atoms (pairs count twice, as
    in AlphaFold); 'per_atom_violations' [N, 14]: atoms in any pair out of bounds.
  """
  pair_mask = (1.0 - np.eye(14, dtype=np.float32)) * (atom14_mask[:, :, None] *
                                                      atom14_mask[:, None, :])
  dists = _distance(atom14_positions[:, :, None], atom14_positions[:, None, :], _PAIR_EPS)
  loss = pair_mask * (jax.nn.relu(lower_bound - dists) + jax.nn.relu(dists - upper_bound))
  violation = pair_mask * ((dists < lower_bound) | (dists > upper_bound))
  return {
      'per_atom_loss_sum': jnp.sum(loss, axis=1) + jnp.sum(loss, axis=2),
      'per_atom_violations': jnp.maximum(jnp.max(violation, axis=1), jnp.max(violation, axis=2)),
  }


@functools.lru_cache(maxsize=8)
def _atom14_bounds(overlap_tolerance: float, tolerance_factor: float
                   ) -> tuple[np.ndarray, np.ndarray]:
  bounds = rc.make_atom14_dists_bounds(overlap_tolerance=overlap_tolerance,
                                       bond_length_tolerance_factor=tolerance_factor)
  return bounds['lower_bound'], bounds['upper_bound']


def find_violations(aatype: jax.Array, residue_index: jax.Array, atom14_pred_positions: jax.Array,
                    atom14_atom_exists: jax.Array, config: ViolationConfig = ViolationConfig()
                    ) -> dict[str, dict[str, jax.Array] | jax.Array]:
  """Every structural violation of a structure (AlphaFold's `find_structural_violations`).

  Args:
    aatype: [N] int residue types.
    residue_index: [N] int residue numbers.
    atom14_pred_positions: [N, 14, 3] Å.
    atom14_atom_exists: [N, 14] atoms to check (the residue types' atoms; for an experimental
      structure, the resolved ones).
    config: the tolerances (static Python floats).

  Returns:
    {'between_residues': {'bonds_c_n_loss_mean', 'angles_ca_c_n_loss_mean',
      'angles_c_n_ca_loss_mean' [], 'connections_per_residue_loss_sum' [N],
      'connections_per_residue_violation_mask' [N], 'clashes_mean_loss' [],
      'clashes_per_atom_loss_sum' [N, 14], 'clashes_per_atom_clash_mask' [N, 14]},
     'within_residues': {'per_atom_loss_sum' [N, 14], 'per_atom_violations' [N, 14]},
     'total_per_residue_violations_mask' [N]}; masks are float32 0/1.
  """
  exists = atom14_atom_exists.astype(jnp.float32)
  bonds = between_residue_bonds(atom14_pred_positions, exists, residue_index, aatype,
                                config.violation_tolerance_factor)
  # A slot's radius from its element (first letter of the atom name); 0 where no atom.
  radius = exists * jnp.asarray(
      rc.atom_type_van_der_waals_radius[rc.restype_atom14_to_atom37])[aatype]
  clashes = between_residue_clashes(atom14_pred_positions, exists, radius, residue_index,
                                    config.clash_overlap_tolerance)
  lower, upper = _atom14_bounds(float(config.clash_overlap_tolerance),
                                float(config.violation_tolerance_factor))
  within = within_residue_violations(atom14_pred_positions, exists, jnp.asarray(lower)[aatype],
                                     jnp.asarray(upper)[aatype])
  per_residue = jnp.maximum(
      bonds['per_residue_violation_mask'],
      jnp.maximum(jnp.max(clashes['per_atom_clash_mask'], axis=-1),
                  jnp.max(within['per_atom_violations'], axis=-1)))
  return {
      'between_residues': {
          'bonds_c_n_loss_mean': bonds['c_n_loss_mean'],
          'angles_ca_c_n_loss_mean': bonds['ca_c_n_loss_mean'],
          'angles_c_n_ca_loss_mean': bonds['c_n_ca_loss_mean'],
          'connections_per_residue_loss_sum': bonds['per_residue_loss_sum'],
          'connections_per_residue_violation_mask': bonds['per_residue_violation_mask'],
          'clashes_mean_loss': clashes['mean_loss'],
          'clashes_per_atom_loss_sum': clashes['per_atom_loss_sum'],
          'clashes_per_atom_clash_mask': clashes['per_atom_clash_mask'],
      },
      'within_residues': within,
      'total_per_residue_violations_mask': per_residue,
  }


def violation_loss(violations: dict, atom14_atom_exists: jax.Array) -> jax.Array:
  """Suppl. eq. 47 (AlphaFold's `structural_violation_loss`, unweighted): [].

  The three peptide-bond means plus every clash and within-residue loss summed over atoms and
  divided by the number of atoms (`atom14_atom_exists` [N, 14]).
  """
  between = violations['between_residues']
  num_atoms = jnp.sum(atom14_atom_exists).astype(jnp.float32)
  clashes = jnp.sum(between['clashes_per_atom_loss_sum'] +
                    violations['within_residues']['per_atom_loss_sum'])
  return (between['bonds_c_n_loss_mean'] + between['angles_ca_c_n_loss_mean'] +
          between['angles_c_n_ca_loss_mean'] + clashes / (_MEAN_EPS + num_atoms))


def extreme_ca_ca_distance_violations(atom14_positions: jax.Array, atom14_mask: jax.Array,
                                      residue_index: jax.Array,
                                      tolerance: float = _CA_CA_TOLERANCE) -> jax.Array:
  """Fraction of consecutive CA-CA steps longer than the ideal 3.80 Å by over `tolerance` Å."""
  mask = atom14_mask.astype(jnp.float32)
  index = residue_index.astype(jnp.float32)
  ca = atom14_positions[:, _CA]
  step = _distance(ca[:-1], ca[1:], _BOND_EPS)
  considered = mask[:-1, _CA] * mask[1:, _CA] * (index[1:] - index[:-1] == 1.0)
  return _masked_mean(considered, (step - rc.ca_ca > tolerance).astype(jnp.float32), _METRIC_EPS)


def violation_metrics(residue_index: jax.Array, atom14_pred_positions: jax.Array,
                      atom14_atom_exists: jax.Array, seq_mask: jax.Array, violations: dict
                      ) -> dict[str, jax.Array]:
  """Violation fractions (AlphaFold's `compute_violation_metrics`), each [].

  'violations_extreme_ca_ca_distance': of consecutive CA-CA steps; the others of the residues
  of `seq_mask` [N]: 'violations_between_residue_bond', 'violations_between_residue_clash',
  'violations_within_residue', 'violations_per_residue' (any of them).
  """
  between = violations['between_residues']
  per_residue = {
      'violations_between_residue_bond': between['connections_per_residue_violation_mask'],
      'violations_between_residue_clash': jnp.max(between['clashes_per_atom_clash_mask'], -1),
      'violations_within_residue': jnp.max(violations['within_residues']['per_atom_violations'],
                                           -1),
      'violations_per_residue': violations['total_per_residue_violations_mask'],
  }
  metrics = {'violations_extreme_ca_ca_distance': extreme_ca_ca_distance_violations(
      atom14_pred_positions, atom14_atom_exists, residue_index)}
  metrics.update({name: _masked_mean(seq_mask, value, _METRIC_EPS)
                  for name, value in per_residue.items()})
  return metrics
