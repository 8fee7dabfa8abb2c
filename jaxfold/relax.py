"""Amber relaxation: restrained energy minimisation of a predicted structure.

Jumper et al. (2021) Suppl. 1.8.6 'Amber relaxation', run as AlphaFold v2.3 runs it
(`relax.AmberRelaxation` with run_alphafold.py's settings, `RelaxConfig` below):

1. Clean-up with pdbfixer: nonstandard residues replaced, heterogens and water removed,
   missing heavy atoms (the terminal OXT of a prediction) added, hydrogens added for pH 7
   (pdbfixer places them with OpenMM's Modeller).
2. Minimisation with OpenMM: the Amber99sb force field (`amber99sb.xml`) in vacuum, no
   cutoff, bonds to hydrogen constrained, plus a harmonic restraint 0.5 k |x - x0|^2
   (k = `stiffness`) holding every heavy atom of the residues not excluded to its start;
   L-BFGS until the RMS force is below `tolerance`.
3. Structural violations (Suppl. 1.9.11, `jaxfold.loss.violations` with AlphaFold's
   tolerances) of the minimised heavy atoms. While a residue violates and fewer than
   `max_outer_iterations` rounds have run, the violating residues join the unrestrained ones
   and the minimised structure is cleaned again (hydrogens placed anew) and minimised again.
4. Every atom of the result gets its residue's B-factor from the input (the pLDDT of a
   prediction), as AlphaFold's `utils.overwrite_b_factors`.

Each step reads and writes PDB text where AlphaFold does, so coordinates pass through the
same 3-decimal roundings and agree with AlphaFold's on the same OpenMM platform (exactly, for
the same Python `random` seed and OpenMM settings: `RelaxConfig.seed`). Differences, all for
input AlphaFold's own predictions never are or for what AlphaFold does not report:
- the output keeps the input's chains (labelled as `protein.to_pdb` does) and residue
  numbers; AlphaFold renumbers from 1;
- a gap in a chain's residue numbers splits the chain for OpenMM, each piece with its own
  termini; AlphaFold bonds across the gap, and from its second round on, having renumbered,
  counts the stretched bond as a violation;
- a residue missing heavy atoms is completed by pdbfixer; AlphaFold refuses it;
- only OpenMM's own errors count as a failed attempt; AlphaFold retries on any exception.

OpenMM and pdbfixer are the optional extra `jaxfold[relax]`, imported when a relaxation runs.
"""

import contextlib
import dataclasses
import io
import random
import time
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.loss import violations

MISSING_EXTRA = "Amber relaxation needs the relax extra: pip install 'jaxfold[relax]'"
# Platforms tried for use_gpu=None or True, in order; the CPU one for None or False.
_GPU_PLATFORMS = ('CUDA', 'OpenCL')
_CA = rc.atom_order['CA']
_OXT = rc.atom_order['OXT']


@dataclasses.dataclass(frozen=True)
class RelaxConfig:
  """AlphaFold's relaxation settings; the defaults are run_alphafold.py's RELAX_* constants."""
  # kcal/mol/Å², spring constant of the restraint on heavy atoms.
  stiffness: float = 10.0
  # kcal/mol/Å: L-BFGS stops when the RMS force falls below it. AlphaFold calls it an energy
  # tolerance in kcal/mol; it is passed to OpenMM as a force, 100 kJ/mol/nm.
  tolerance: float = 2.39
  # L-BFGS steps per minimisation; 0 runs to convergence.
  max_iterations: int = 0
  # Rounds of minimisation while violations remain; 1 is CASP14's single round.
  max_outer_iterations: int = 3
  # 0-based residue positions left unrestrained from the first round on.
  exclude_residues: tuple[int, ...] = ()
  # Minimisations tried per round before giving up when OpenMM fails (without a seed).
  max_attempts: int = 100
  # A repeatable relaxation: Python's `random`, which OpenMM's Modeller jitters the start of
  # each new hydrogen with, is seeded with it; pdbfixer's dynamics that push an added atom
  # out of a clash get seed + 1 (AlphaFold's 0 is 'any seed' to OpenMM); forces are summed in
  # a fixed order and the CPU platform runs one thread. The same seed then gives the same
  # result on one platform. None is AlphaFold's way (unseeded, all threads): results differ
  # from run to run, by tenths of an Å for some atoms.
  seed: int | None = 0

  def __post_init__(self):
    problems = [f'{name}={getattr(self, name)!r} must be {rule}' for name, rule, ok in (
        ('stiffness', '>= 0', self.stiffness >= 0),
        ('tolerance', '> 0', self.tolerance > 0),
        ('max_iterations', '>= 0', self.max_iterations >= 0),
        ('max_outer_iterations', '>= 1', self.max_outer_iterations >= 1),
        ('max_attempts', '>= 1', self.max_attempts >= 1),
        ('seed', 'None or 0 .. 2**31 - 2',
         self.seed is None or 0 <= self.seed < 2**31 - 1)) if not ok]
    if problems:
      raise JaxfoldError(f'RelaxConfig: {"; ".join(problems)}.')


@dataclasses.dataclass(frozen=True)
class Relaxed:
  """A relaxed structure and the record of how it was relaxed.

  `initial_energy`, `final_energy`, `attempts` and `rmsd` are AlphaFold's debug values, all of
  the last round: its energies in kcal/mol (force field plus restraints) before and after
  minimisation, its number of attempts, and the RMSD in Å over all atoms, hydrogens included,
  between its start and its result.
  """
  pdb: str  # PDB text with hydrogens; every atom's B-factor is its residue's input one
  initial_energy: float
  final_energy: float
  attempts: int
  rmsd: float
  # Å, over the input's heavy atoms: how far the relaxation moved them in all.
  heavy_atom_rmsd: float
  # (initial, final) energy of each round, kcal/mol.
  round_energies: tuple[tuple[float, float], ...]
  # 0-based positions of the residues with a structural violation in the input and result.
  violations_before: tuple[int, ...]
  violations_after: tuple[int, ...]
  # Residues left unrestrained in the last round (the configured ones and violating ones).
  excluded_residues: tuple[int, ...]
  # Heavy atoms pdbfixer added, OXT included.
  added_heavy_atoms: int
  platform: str  # OpenMM platform of the minimisations: 'CUDA', 'OpenCL' or 'CPU'
  seconds: float

  def debug_record(self) -> dict[str, Any]:
    """Everything but the PDB text, as JSON-ready values."""
    record = dataclasses.asdict(self)
    del record['pdb']
    return record

  def to_protein(self) -> protein.Protein:
    """The relaxed heavy atoms (OXT included, hydrogens dropped) with their B-factors."""
    return protein.from_pdb_string(self.pdb)


def check_available() -> None:
  """Raises JaxfoldError naming the relax extra unless openmm and pdbfixer import: for a
  command to fail before its slow work rather than after."""
  _import_openmm()


def _import_openmm() -> types.SimpleNamespace:
  """OpenMM, its app layer and units, and pdbfixer; JaxfoldError naming the extra without."""
  try:
    import openmm  # pylint: disable=import-outside-toplevel
    import pdbfixer  # pylint: disable=import-outside-toplevel
    from openmm import app, unit  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise JaxfoldError(MISSING_EXTRA) from error
  return types.SimpleNamespace(openmm=openmm, app=app, unit=unit, pdbfixer=pdbfixer)


def _platform(mm: types.SimpleNamespace, use_gpu: bool | None) -> Any:
  """The OpenMM platform to minimise on: a GPU one that can open a context (use_gpu None or
  True), else the CPU one (None or False)."""
  registry = mm.openmm.Platform
  available = [registry.getPlatform(i).getName() for i in range(registry.getNumPlatforms())]
  wanted = (list(_GPU_PLATFORMS) if use_gpu is not False else []) + (
      ['CPU'] if not use_gpu else [])
  for name in wanted:
    if name not in available:
      continue
    platform = registry.getPlatformByName(name)
    probe = mm.openmm.System()
    probe.addParticle(1.0)
    try:  # a GPU platform loads without a device; it fails when a context needs one
      mm.openmm.Context(probe, mm.openmm.VerletIntegrator(0.001), platform)
    except mm.openmm.OpenMMException:
      continue
    return platform
  if use_gpu:
    raise JaxfoldError(
        f'use_gpu: OpenMM has no usable CUDA or OpenCL platform here (platforms: '
        f'{", ".join(available)}); the CUDA one is pip install "openmm[cuda12]==8.6.1".')
  raise JaxfoldError(f'OpenMM has no CPU platform (platforms: {", ".join(available)}).')


def _segments(prot: protein.Protein) -> np.ndarray:
  """[N_res] int: the unbroken piece of chain each residue is in, numbered from 0 in order.

  A piece ends where the chain does or where the residue numbers do not step by one, as in
  the violation checks (Suppl. 1.9.11): OpenMM would otherwise bond the residues on either
  side of a gap as if they were neighbours.
  """
  starts = np.ones(len(prot.aatype), dtype=bool)
  starts[1:] = (np.diff(prot.chain_index) != 0) | (np.diff(prot.residue_index) != 1)
  return np.cumsum(starts) - 1


def _check_relaxable(prot: protein.Protein, config: RelaxConfig) -> None:
  """JaxfoldError for what Amber cannot minimise: no residue, an unknown residue, a residue
  with no atom or with an atom not of its type, a piece of chain of one residue (no template
  is both termini), more pieces than a PDB file has chain IDs, a bad exclusion."""
  num_res = len(prot.aatype)
  if not num_res:
    raise JaxfoldError('Amber relaxation: the structure has no residue.')

  def named(positions: np.ndarray) -> str:
    return ', '.join(f'{protein.PDB_CHAIN_IDS[prot.chain_index[i]]}{prot.residue_index[i]}'
                     for i in positions[:10]) + (' ...' if len(positions) > 10 else '')

  segments = _segments(prot)
  piece_ends = np.append(segments[1:] != segments[:-1], True)
  foreign = (np.delete(prot.atom_mask > 0.5, _OXT, axis=1) &
             ~np.delete(protein.ideal_atom_mask(prot) > 0, _OXT, axis=1)).any(axis=-1)
  foreign |= (prot.atom_mask[:, _OXT] > 0.5) & ~piece_ends
  problems = {
      'unknown residue type (UNK): Amber has templates for the 20 standard amino acids only':
          np.flatnonzero(prot.aatype >= rc.restype_num),
      'no atom': np.flatnonzero(prot.atom_mask.sum(axis=-1) == 0),
      'an atom its residue type does not have there (OXT only ends a chain)':
          np.flatnonzero(foreign),
  }
  _, first, counts = np.unique(segments, return_index=True, return_counts=True)
  problems['a chain, or piece of chain between gaps in the residue numbers, of one residue, '
           'which Amber cannot be both N- and C-terminus of'] = first[counts == 1]
  for problem, positions in problems.items():
    if len(positions):
      raise JaxfoldError(f'Amber relaxation: residue {named(positions)} (chain, number): '
                         f'{problem}.')
  if segments[-1] >= protein.PDB_MAX_CHAINS:
    raise JaxfoldError(f'Amber relaxation: {segments[-1] + 1} chains and pieces of chain '
                       f'between gaps in the residue numbers; at most '
                       f'{protein.PDB_MAX_CHAINS} can be relaxed.')
  outside = [i for i in config.exclude_residues if not 0 <= i < num_res]
  if outside:
    raise JaxfoldError(f'exclude_residues {outside} are outside 0..{num_res - 1}, the '
                       f'structure\'s residue positions.')


@jax.jit
def _violation_mask(aatype: jax.Array, residue_index: jax.Array, atom14_positions: jax.Array,
                    atom14_exists: jax.Array) -> jax.Array:
  return violations.find_violations(aatype, residue_index, atom14_positions,
                                    atom14_exists)['total_per_residue_violations_mask']


def violating_residues(prot: protein.Protein) -> np.ndarray:
  """[K] int: 0-based positions of the residues of `prot` with a structural violation.

  Suppl. 1.9.11 with AlphaFold's tolerances (12 standard deviations, 1.5 Å clash overlap) on
  the heavy atoms present, as AlphaFold's `amber_minimize.find_violations`; computed on the
  CPU, as AlphaFold does, so that the outer rounds do not depend on the accelerator.
  """
  aatype = np.asarray(prot.aatype)
  slots = rc.restype_atom14_to_atom37[aatype]  # [N, 14] atom37 index of each atom14 slot
  exists = rc.restype_atom14_mask[aatype] * np.take_along_axis(prot.atom_mask, slots, axis=1)
  positions = np.take_along_axis(prot.atom_positions, slots[..., None], axis=1)
  with jax.default_device(jax.devices('cpu')[0]):
    mask = _violation_mask(aatype, np.asarray(prot.residue_index),
                           (positions * exists[..., None]).astype(np.float32),
                           exists.astype(np.float32))
  return np.flatnonzero(np.asarray(mask))


# Platform settings of a repeatable relaxation: forces summed in a fixed order (GPU and CPU
# platforms), and one CPU thread, since the CPU platform's threads still make its minimiser's
# path vary from run to run.
_REPEATABLE_PROPERTIES = {'DeterministicForces': 'true', 'Threads': '1'}


@contextlib.contextmanager
def _repeatable(platform: Any, seed: int | None):
  """Inside, Python's global `random` is seeded with `seed` and `platform`'s default settings
  are `_REPEATABLE_PROPERTIES` (defaults, since pdbfixer and Modeller open their own contexts);
  both are as they were after. Nothing changes for seed None."""
  if seed is None:
    yield
    return
  names = [name for name in _REPEATABLE_PROPERTIES if name in platform.getPropertyNames()]
  saved = {name: platform.getPropertyDefaultValue(name) for name in names}
  saved_random = random.getstate()
  for name in names:
    platform.setPropertyDefaultValue(name, _REPEATABLE_PROPERTIES[name])
  random.seed(seed)
  try:
    yield
  finally:
    random.setstate(saved_random)
    for name, value in saved.items():
      platform.setPropertyDefaultValue(name, value)


def _pdb_text(mm: types.SimpleNamespace, topology: Any, positions: Any) -> str:
  with io.StringIO() as handle:
    mm.app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    return handle.getvalue()


def _clean(mm: types.SimpleNamespace, prot: protein.Protein, platform: Any, seed: int
           ) -> tuple[str, int]:
  """(PDB text of `prot` made ready for Amber by pdbfixer, heavy atoms it added); `seed` is
  that of the dynamics pdbfixer runs when an added atom clashes (0: any).

  AlphaFold's `cleanup.fix_pdb`; missing residues are looked for as there, but PDB text of a
  Protein has no SEQRES record to find any in. Each unbroken piece of chain (`_segments`) is
  a chain of its own in the text. Atoms already present must not have moved.
  """
  written = protein.to_pdb(dataclasses.replace(prot, chain_index=_segments(prot)))
  fixer = mm.pdbfixer.PDBFixer(pdbfile=io.StringIO(written), platform=platform)
  fixer.findNonstandardResidues()
  fixer.replaceNonstandardResidues()
  fixer.removeHeterogens(keepWater=False)
  fixer.findMissingResidues()
  fixer.findMissingAtoms()
  added = (sum(len(atoms) for atoms in fixer.missingAtoms.values()) +
           sum(len(atoms) for atoms in fixer.missingTerminals.values()))
  fixer.addMissingAtoms(seed=seed)
  fixer.addMissingHydrogens(pH=7.0)
  cleaned = _pdb_text(mm, fixer.topology, fixer.positions)

  before, after = protein.from_pdb_string(written), protein.from_pdb_string(cleaned)
  if before.aatype.shape != after.aatype.shape or (before.aatype != after.aatype).any():
    raise RuntimeError(f'pdbfixer changed the residues: {len(before.aatype)} -> '
                       f'{len(after.aatype)}.')
  moved = np.flatnonzero((before.atom_mask * np.any(
      before.atom_positions != after.atom_positions, axis=-1)).any(axis=-1))
  if len(moved):
    raise RuntimeError(f'pdbfixer moved atoms of residue positions {moved.tolist()}.')
  return cleaned, added


def _restrain(mm: types.SimpleNamespace, system: Any, pdb: Any, stiffness: float,
              excluded: frozenset[int]) -> None:
  """Adds 0.5 k |x - x0|^2 on each heavy atom outside the `excluded` residue positions."""
  force = mm.openmm.CustomExternalForce('0.5 * k * ((x-x0)^2 + (y-y0)^2 + (z-z0)^2)')
  force.addGlobalParameter('k', stiffness * mm.unit.kilocalories_per_mole / mm.unit.angstroms**2)
  for name in ('x0', 'y0', 'z0'):
    force.addPerParticleParameter(name)
  for i, atom in enumerate(pdb.topology.atoms()):
    if atom.element.name != 'hydrogen' and atom.residue.index not in excluded:
      force.addParticle(i, pdb.positions[i])
  system.addForce(force)


def _minimise(mm: types.SimpleNamespace, pdb_text: str, excluded: frozenset[int],
              config: RelaxConfig, platform: Any) -> dict[str, Any]:
  """One restrained minimisation of cleaned PDB text (AlphaFold's `_openmm_minimize`).

  Returns the energies before and after (kcal/mol), all positions before and after [A, 3] Å,
  the minimised PDB text and the topology it was written from.
  """
  energy, length = mm.unit.kilocalories_per_mole, mm.unit.angstroms
  pdb = mm.app.PDBFile(io.StringIO(pdb_text))
  system = mm.app.ForceField('amber99sb.xml').createSystem(pdb.topology,
                                                           constraints=mm.app.HBonds)
  if config.stiffness > 0:
    _restrain(mm, system, pdb, config.stiffness, excluded)
  # Never stepped: a context needs an integrator, and minimisation takes its constraint
  # tolerance from it.
  integrator = mm.openmm.LangevinIntegrator(0, 0.01, 0.0)
  simulation = mm.app.Simulation(pdb.topology, system, integrator, platform)
  simulation.context.setPositions(pdb.positions)

  def state() -> tuple[float, np.ndarray, Any]:
    now = simulation.context.getState(getEnergy=True, getPositions=True)
    return (now.getPotentialEnergy().value_in_unit(energy),
            now.getPositions(asNumpy=True).value_in_unit(length), now.getPositions())

  initial_energy, initial_positions, _ = state()
  simulation.minimizeEnergy(maxIterations=config.max_iterations,
                            tolerance=config.tolerance * energy / length)
  final_energy, final_positions, positions = state()
  return {'initial_energy': initial_energy, 'final_energy': final_energy,
          'initial_positions': initial_positions, 'final_positions': final_positions,
          'pdb': _pdb_text(mm, simulation.topology, positions), 'topology': simulation.topology}


def _minimise_with_attempts(mm: types.SimpleNamespace, pdb_text: str, excluded: frozenset[int],
                            config: RelaxConfig, platform: Any) -> dict[str, Any]:
  """`_minimise`, tried up to `config.max_attempts` times while OpenMM fails (a GPU's NaN
  positions can be transient); adds 'attempts'. A repeatable run (seed set) would fail the
  same way again, so it is tried once."""
  tries = config.max_attempts if config.seed is None else 1
  for attempt in range(1, tries + 1):
    try:
      return dict(_minimise(mm, pdb_text, excluded, config, platform), attempts=attempt)
    except mm.openmm.OpenMMException as error:
      failure = error
  raise JaxfoldError(f'Amber minimisation failed {tries} time(s) on {platform.getName()}; '
                     f'last error: {str(failure).strip()}')


def _residue_b_factors(prot: protein.Protein) -> np.ndarray:
  """[N_res]: each residue's CA B-factor (AlphaFold's choice), its first atom's without CA."""
  first = np.argmax(prot.atom_mask > 0.5, axis=-1)
  rows = np.arange(len(prot.aatype))
  return np.where(prot.atom_mask[:, _CA] > 0.5, prot.b_factors[:, _CA],
                  prot.b_factors[rows, first])


def _labelled(pdb_text: str, topology: Any, prot: protein.Protein) -> str:
  """`pdb_text`, written by OpenMM from `topology` (a residue of it per residue of `prot`),
  with each atom's and TER record's chain ID (column 22) that of its residue in `prot`, and
  each atom's B-factor (columns 61-66) its residue's (`_residue_b_factors`); without OpenMM's
  dated REMARK, so that a repeatable relaxation gives the same text on another day."""
  b_factors = _residue_b_factors(prot)
  residues = iter([atom.residue.index for atom in topology.atoms()])
  lines = []
  for line in pdb_text.splitlines(keepends=True):
    if line.startswith('REMARK   1 CREATED WITH OPENMM'):
      continue
    if line.startswith(('ATOM  ', 'HETATM', 'TER')):
      if not line.startswith('TER'):
        residue = next(residues)
        line = f'{line[:60]}{b_factors[residue]:6.2f}{line[66:]}'
      chain = protein.PDB_CHAIN_IDS[prot.chain_index[residue]]
      line = f'{line[:21]}{chain}{line[22:]}'
    lines.append(line)
  return ''.join(lines)


class _Rounds(NamedTuple):
  last: dict[str, Any]  # the last round's `_minimise_with_attempts`
  relaxed: protein.Protein  # its minimised heavy atoms
  violating: np.ndarray  # [K] positions of its residues with a violation
  unrestrained: frozenset[int]  # positions it left unrestrained
  energies: list[tuple[float, float]]  # (initial, final) of every round
  added: int  # heavy atoms the first clean-up added


def _relax_rounds(mm: types.SimpleNamespace, prot: protein.Protein, config: RelaxConfig,
                  platform: Any, say: Callable[[str], None]) -> _Rounds:
  """Steps 1-3 of the module doc: clean, minimise, find violations, again while they remain."""
  excluded = set(config.exclude_residues)
  fixer_seed = 0 if config.seed is None else config.seed + 1
  pdb_text, added = _clean(mm, prot, platform, fixer_seed)
  energies = []
  for round_index in range(config.max_outer_iterations):
    if round_index:  # hydrogens placed anew on the result
      pdb_text, _ = _clean(mm, relaxed, platform, fixer_seed)
    unrestrained = frozenset(excluded)
    result = _minimise_with_attempts(mm, pdb_text, unrestrained, config, platform)
    energies.append((result['initial_energy'], result['final_energy']))
    relaxed = protein.from_pdb_string(result['pdb'])
    violating = violating_residues(relaxed)
    say(f'Amber round {round_index + 1} on {platform.getName()}: energy '
        f'{result["initial_energy"]:.1f} -> {result["final_energy"]:.1f} kcal/mol, '
        f'{len(unrestrained)} residues unrestrained, {len(violating)} violating after')
    if not len(violating):
      break
    excluded |= set(violating.tolist())
  return _Rounds(result, relaxed, violating, unrestrained, energies, added)


def relax_protein(prot: protein.Protein, config: RelaxConfig = RelaxConfig(), *,
                  use_gpu: bool | None = None,
                  progress: Callable[[str], None] | None = None) -> Relaxed:
  """Relaxes `prot` with AlphaFold's Amber protocol (Suppl. 1.8.6; steps in the module doc).

  Args:
    prot: the structure, e.g. a prediction; its residues must be standard amino acids, each
      with at least one heavy atom, in chains of two or more residues.
    config: the protocol's settings (AlphaFold's by default).
    use_gpu: True: minimise on OpenMM's CUDA or OpenCL platform, JaxfoldError if neither can
      run; False: on the CPU platform (AlphaFold's use_gpu=False); None: a GPU where one
      runs, else the CPU.
    progress: called with one line per round.

  Returns:
    The relaxed structure as PDB text (hydrogens added, pLDDT / B-factors kept) and its record.
  """
  start = time.perf_counter()
  _check_relaxable(prot, config)
  mm = _import_openmm()
  platform = _platform(mm, use_gpu)

  before = violating_residues(prot)
  with _repeatable(platform, config.seed):
    rounds = _relax_rounds(mm, prot, config, platform, progress or (lambda line: None))
  result, relaxed = rounds.last, rounds.relaxed

  # Same residues, same heavy atoms as a complete input; only OXT may be new.
  ideal = protein.ideal_atom_mask(prot) > 0
  relaxed_mask = relaxed.atom_mask > 0.5
  if relaxed.aatype.shape != prot.aatype.shape or (
      np.delete(relaxed_mask, _OXT, axis=1) != np.delete(ideal, _OXT, axis=1)).any():
    raise RuntimeError('The relaxed structure does not have the residues and heavy atoms of '
                       'the input.')
  present = prot.atom_mask > 0.5
  shift = relaxed.atom_positions[present] - prot.atom_positions[present]
  moved = result['final_positions'] - result['initial_positions']
  return Relaxed(
      pdb=_labelled(result['pdb'], result['topology'], prot),
      initial_energy=float(result['initial_energy']),
      final_energy=float(result['final_energy']),
      attempts=int(result['attempts']),
      rmsd=float(np.sqrt(np.sum(moved**2) / len(moved))),
      heavy_atom_rmsd=float(np.sqrt(np.mean(np.sum(shift**2, axis=-1)))),
      round_energies=tuple((float(a), float(b)) for a, b in rounds.energies),
      violations_before=tuple(before.tolist()),
      violations_after=tuple(rounds.violating.tolist()),
      excluded_residues=tuple(sorted(rounds.unrestrained)),
      added_heavy_atoms=int(rounds.added),
      platform=platform.getName(),
      seconds=time.perf_counter() - start)


def relax_pdb(pdb_text: str, config: RelaxConfig = RelaxConfig(), *,
              use_gpu: bool | None = None,
              progress: Callable[[str], None] | None = None) -> Relaxed:
  """`relax_protein` of PDB text (one model; hydrogens and non-amino-acid atoms are dropped
  on reading, so a water or ligand residue left with an atom is an unknown residue)."""
  try:
    prot = protein.from_pdb_string(pdb_text)
  except ValueError as error:
    raise JaxfoldError(str(error)) from error
  return relax_protein(prot, config, use_gpu=use_gpu, progress=progress)

