"""jaxfold.relax: AlphaFold's Amber relaxation (Suppl. 1.8.6) against AlphaFold's own.

Both relax the same jittered experimental structure (standard residues of a shared PDB file,
every atom moved by seeded Gaussian noise, a pLDDT-like B-factor per residue) on OpenMM's CPU
platform, with AlphaFold's settings (`alphafold.relax.relax.AmberRelaxation` as
run_alphafold.py builds it, use_gpu=False). AlphaFold's relaxation is not repeatable as it
comes: OpenMM's Modeller starts each hydrogen from Python's unseeded `random`, pdbfixer's
dynamics for an added atom that clashes get seed 0 (any seed, to OpenMM), and the CPU
platform's threads make the minimiser's path vary; two runs of glucagon jittered by 0.2 Å
differ by up to 0.2 Å. So AlphaFold's run gets what jaxfold's default seed=0 sets up (Python's
`random` seeded with 0, pdbfixer's dynamics with 1, one CPU thread, deterministic forces,
through the platform defaults every OpenMM context takes); then the two agree exactly: every
atom (hydrogens included) in
name, order, coordinates and B-factor, the energies, attempts and RMSD of AlphaFold's debug
record, the residues that violate. The bound is exact equality, since the same OpenMM calls
on the same PDB text, in the same process, give the same floating-point numbers.

Measured on the 2-core development machine (each relaxation, jaxfold / AlphaFold):
glucagon (29 residues, 0.5 Å jitter, 2 rounds) about 2-3 s each, glucagon at 1.5 Å with two
residues excluded (3 rounds, violations left) about 4-6 s each; 101m chain A (154 residues)
and 2rbg (two chains, 246 residues) are the slow tier.
"""

import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxfold import relax
from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError

# Settings AlphaFold's AmberRelaxation gets from RelaxConfig, by name.
_ALPHAFOLD_SETTINGS = ('max_iterations', 'tolerance', 'stiffness', 'max_outer_iterations')


def _jittered(shared_dir, name: str, noise: float, last_number: int | None = None
              ) -> protein.Protein:
  """The standard residues of data/pdb/<name>.pdb (numbered up to `last_number` if given),
  each atom moved by N(0, noise^2) Å per axis (seed 0), B-factors 50..90 rising along the
  chain as a prediction's pLDDT; as in a prediction, no OXT."""
  full = protein.from_pdb_string((shared_dir / 'data' / 'pdb' / f'{name}.pdb').read_text())
  keep = full.aatype < rc.restype_num  # waters and ligands are UNK residues
  if last_number is not None:
    keep &= full.residue_index <= last_number
  mask = full.atom_mask[keep]
  mask[:, rc.atom_order['OXT']] = 0
  noise = np.random.default_rng(0).normal(scale=noise, size=mask.shape + (3,))
  plddt = np.linspace(50.0, 90.0, int(keep.sum()))
  return protein.Protein(atom_positions=full.atom_positions[keep] + noise * mask[..., None],
                         aatype=full.aatype[keep], atom_mask=mask,
                         residue_index=full.residue_index[keep],
                         chain_index=full.chain_index[keep],
                         b_factors=np.repeat(plddt[:, None], rc.atom_type_num, axis=1))


def _atoms(pdb_text: str) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
  """(residue name, atom name) of every ATOM/HETATM line, its coordinates [A, 3], B [A]."""
  lines = [line for line in pdb_text.splitlines() if line.startswith(('ATOM  ', 'HETATM'))]
  names = [(line[17:20], line[12:16].strip()) for line in lines]
  xyz = np.array([[float(line[i:i + 8]) for i in (30, 38, 46)] for line in lines])
  return names, xyz, np.array([float(line[60:66]) for line in lines])


def _alphafold_relax(pdb_text: str, config: relax.RelaxConfig):
  """AlphaFold's AmberRelaxation.process on the CPU, made repeatable as jaxfold's seed does."""
  alphafold_relax = pytest.importorskip('alphafold.relax.relax')
  alphafold_protein = pytest.importorskip('alphafold.common.protein')
  openmm = pytest.importorskip('openmm')
  fixer = pytest.importorskip('pdbfixer').PDBFixer
  cpu = openmm.Platform.getPlatformByName('CPU')
  repeatable = {'Threads': '1', 'DeterministicForces': 'true'}
  saved = {name: cpu.getPropertyDefaultValue(name) for name in repeatable}
  saved_random = random.getstate()
  for name, value in repeatable.items():
    cpu.setPropertyDefaultValue(name, value)
  random.seed(config.seed)
  add_missing_atoms = fixer.addMissingAtoms
  with pytest.MonkeyPatch.context() as patch:
    # AlphaFold's seed=0 is 'any seed' to OpenMM's integrator.
    patch.setattr(fixer, 'addMissingAtoms',
                  lambda self, seed=None: add_missing_atoms(self, seed=config.seed + 1))
    try:
      relaxer = alphafold_relax.AmberRelaxation(
          **{name: getattr(config, name) for name in _ALPHAFOLD_SETTINGS},
          exclude_residues=list(config.exclude_residues), use_gpu=False)
      return relaxer.process(prot=alphafold_protein.from_pdb_string(pdb_text))
    finally:
      random.setstate(saved_random)
      for name, value in saved.items():
        cpu.setPropertyDefaultValue(name, value)


def _compare_with_alphafold(unrelaxed: protein.Protein, name: str, noise: float,
                            config: relax.RelaxConfig, rounds: int, violations_left: bool
                            ) -> relax.Relaxed:
  pytest.importorskip('openmm')
  pytest.importorskip('pdbfixer')
  amber_minimize = pytest.importorskip('alphafold.relax.amber_minimize')
  alphafold_protein = pytest.importorskip('alphafold.common.protein')
  pdb_text = protein.to_pdb(unrelaxed)

  start = time.perf_counter()
  ours = relax.relax_pdb(pdb_text, config, use_gpu=False)
  ours_seconds = time.perf_counter() - start
  start = time.perf_counter()
  theirs_pdb, theirs_debug, theirs_violations = _alphafold_relax(pdb_text, config)
  theirs_seconds = time.perf_counter() - start

  our_names, our_xyz, our_b = _atoms(ours.pdb)
  their_names, their_xyz, their_b = _atoms(theirs_pdb)
  assert our_names == their_names
  heavy = np.array([atom[0] != 'H' for _, atom in our_names])
  deviation = np.linalg.norm(our_xyz - their_xyz, axis=-1)
  print(f'\n{name} ({len(unrelaxed.aatype)} residues, {noise} Å jitter): jaxfold '
        f'{ours_seconds:.1f} s, AlphaFold {theirs_seconds:.1f} s; {len(ours.round_energies)} '
        f'rounds, energy {ours.round_energies[0][0]:.1f} -> {ours.final_energy:.1f} kcal/mol; '
        f'heavy atoms vs AlphaFold: RMSD {np.sqrt(np.mean(deviation[heavy]**2)):.3g} Å, max '
        f'{deviation[heavy].max():.3g} Å (all atoms max {deviation.max():.3g} Å); moved '
        f'{ours.heavy_atom_rmsd:.3f} Å RMSD from the start; violating residues '
        f'{len(ours.violations_before)} -> {len(ours.violations_after)}')
  np.testing.assert_array_equal(our_xyz, their_xyz)

  # AlphaFold's debug record, and its per-residue violations after relaxation.
  assert (ours.initial_energy, ours.final_energy, ours.attempts) == (
      theirs_debug['initial_energy'], theirs_debug['final_energy'], theirs_debug['attempts'])
  assert ours.rmsd == theirs_debug['rmsd']
  assert ours.violations_after == tuple(np.flatnonzero(theirs_violations).tolist())
  assert bool(ours.violations_after) == violations_left
  assert len(ours.round_energies) == rounds
  assert set(config.exclude_residues) <= set(ours.excluded_residues)
  # The violations of the input, as AlphaFold's amber_minimize finds them.
  theirs_before = amber_minimize.get_violation_metrics(
      alphafold_protein.from_pdb_string(pdb_text))['residue_violations']
  assert ours.violations_before == tuple(theirs_before.tolist())

  # B-factors: every atom, hydrogens included, carries its residue's input value.
  np.testing.assert_array_equal(our_b, their_b)
  relaxed = ours.to_protein()
  np.testing.assert_allclose(relaxed.b_factors * relaxed.atom_mask,
                             unrelaxed.b_factors * relaxed.atom_mask, atol=0.005)
  assert ours.platform == 'CPU'
  assert ours.added_heavy_atoms == len(np.unique(unrelaxed.chain_index))  # C-terminal OXTs
  return ours


def test_glucagon_relaxes_as_alphafold_in_two_rounds(shared_dir):
  """The 0.5 Å jitter leaves two residues violating after the first round; unrestrained,
  they relax in the second and nothing violates. A second run gives the same text."""
  config = relax.RelaxConfig()
  ours = _compare_with_alphafold(_jittered(shared_dir, 'glucagon', 0.5), 'glucagon', 0.5,
                                 config, rounds=2, violations_left=False)
  assert ours.violations_before and len(ours.excluded_residues) == 2
  random.seed(1)
  expected_next = random.random()
  random.seed(1)
  again = relax.relax_pdb(protein.to_pdb(_jittered(shared_dir, 'glucagon', 0.5)), config,
                          use_gpu=False)
  assert again.pdb == ours.pdb
  assert random.random() == expected_next  # the caller's random stream is left as it was


def test_glucagon_with_exclusions_runs_every_round_as_alphafold(shared_dir):
  """1.5 Å of jitter with two residues unrestrained from the start: violations remain after
  max_outer_iterations=3 rounds, in both."""
  config = relax.RelaxConfig(exclude_residues=(4, 20))
  _compare_with_alphafold(_jittered(shared_dir, 'glucagon', 1.5), 'glucagon', 1.5, config,
                          rounds=3, violations_left=True)


@pytest.mark.slow
@pytest.mark.parametrize('name, last_number, violations_left', [
    ('101m', None, False), ('2rbg', 101, True)])
def test_larger_structures_relax_as_alphafold(shared_dir, name, last_number, violations_left):
  """Myoglobin 101m (154 residues) and 2rbg's two chains up to the gap after residue 101
  (198 residues), 0.5 Å of jitter: three rounds each; in 2rbg three residues still violate
  after them, in both."""
  _compare_with_alphafold(_jittered(shared_dir, name, 0.5, last_number), name, 0.5,
                          relax.RelaxConfig(), rounds=3, violations_left=violations_left)


def test_a_gap_in_the_residue_numbers_is_a_chain_break(shared_dir):
  """Without residue 15, glucagon's residues 14 and 16 get their own termini (an OXT on 14);
  AlphaFold bonds them, pulling C(14)-N(16) from 3.10 Å to 1.38 Å (measured). Chain and
  numbers are kept."""
  pytest.importorskip('openmm')
  pytest.importorskip('pdbfixer')
  full = _jittered(shared_dir, 'glucagon', 0.0)
  keep = full.residue_index != 15
  gapped = protein.Protein(atom_positions=full.atom_positions[keep], aatype=full.aatype[keep],
                           atom_mask=full.atom_mask[keep],
                           residue_index=full.residue_index[keep],
                           chain_index=full.chain_index[keep], b_factors=full.b_factors[keep])
  relaxed = relax.relax_protein(gapped, use_gpu=False)
  assert relaxed.added_heavy_atoms == 2 and relaxed.violations_after == ()
  out = relaxed.to_protein()
  np.testing.assert_array_equal(out.residue_index, gapped.residue_index)
  np.testing.assert_array_equal(out.chain_index, 0)
  oxt = rc.atom_order['OXT']
  assert np.flatnonzero(out.atom_mask[:, oxt]).tolist() == [13, 27]
  gap = np.linalg.norm(out.atom_positions[13, rc.atom_order['C']] -
                       out.atom_positions[14, rc.atom_order['N']])
  before = np.linalg.norm(gapped.atom_positions[13, rc.atom_order['C']] -
                          gapped.atom_positions[14, rc.atom_order['N']])
  assert gap > 2.5, (gap, before)
  print(f'\nglucagon without residue 15: C(14)-N(16) {before:.2f} Å -> {gap:.2f} Å')


def test_missing_heavy_atoms_are_added(shared_dir):
  """AlphaFold refuses a residue missing heavy atoms; pdbfixer completes it here."""
  pytest.importorskip('openmm')
  pytest.importorskip('pdbfixer')
  full = _jittered(shared_dir, 'glucagon', 0.0)
  mask = full.atom_mask.copy()
  mask[9, [rc.atom_order['CE1'], rc.atom_order['CE2']]] = 0  # Tyr10's ring
  incomplete = protein.Protein(atom_positions=full.atom_positions * mask[..., None],
                               aatype=full.aatype, atom_mask=mask,
                               residue_index=full.residue_index,
                               chain_index=full.chain_index, b_factors=full.b_factors)
  relaxed = relax.relax_protein(incomplete, relax.RelaxConfig(max_outer_iterations=1),
                                use_gpu=False)
  assert relaxed.added_heavy_atoms == 3  # and the OXT
  expected = protein.ideal_atom_mask(full)
  expected[-1, rc.atom_order['OXT']] = 1
  np.testing.assert_array_equal(relaxed.to_protein().atom_mask, expected)
  print(f'\nglucagon missing 2 heavy atoms: relaxed in {relaxed.seconds:.1f} s')


def test_missing_extra_is_one_line_naming_it(shared_dir, monkeypatch):
  prot = _jittered(shared_dir, 'glucagon', 0.0)
  monkeypatch.setitem(sys.modules, 'openmm', None)  # None makes the import fail
  monkeypatch.setitem(sys.modules, 'pdbfixer', None)
  with pytest.raises(JaxfoldError) as error:
    relax.relax_protein(prot)
  assert str(error.value) == ("Amber relaxation needs the relax extra: "
                              "pip install 'jaxfold[relax]'")


def test_import_does_not_load_openmm():
  script = ('import sys, jaxfold.relax; '
            'print(sorted(name for name in ("openmm", "pdbfixer") if name in sys.modules))')
  result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split('\n')[-2] == '[]'


def _edited(prot: protein.Protein, **arrays) -> protein.Protein:
  fields = {field: getattr(prot, field) for field in (
      'atom_positions', 'aatype', 'atom_mask', 'residue_index', 'chain_index', 'b_factors')}
  fields.update(arrays)
  return protein.Protein(**fields)


def _with_unk(prot):
  return _edited(prot, aatype=np.where(np.arange(len(prot.aatype)) == 3, rc.unk_restype_index,
                                       prot.aatype))


def _with_lone_chain(prot):
  return _edited(prot, chain_index=np.where(np.arange(len(prot.aatype)) == 28, 1, 0))


def _with_foreign_atom(prot):
  glycine = int(np.flatnonzero(prot.aatype == rc.restype_order['G'])[0])
  mask = prot.atom_mask.copy()
  mask[glycine, rc.atom_order['CB']] = 1
  return _edited(prot, atom_mask=mask)


def _with_oxt_inside(prot):
  mask = prot.atom_mask.copy()
  mask[5, rc.atom_order['OXT']] = 1
  return _edited(prot, atom_mask=mask)


@pytest.mark.parametrize('make_bad, config, message', [
    (_with_unk, relax.RelaxConfig(), 'residue A4 (chain, number): unknown residue type'),
    (_with_lone_chain, relax.RelaxConfig(), 'residue B29 (chain, number): a chain, or piece'),
    (_with_foreign_atom, relax.RelaxConfig(), 'residue A4 (chain, number): an atom its'),
    (_with_oxt_inside, relax.RelaxConfig(), 'residue A6 (chain, number): an atom its'),
    (lambda prot: prot, relax.RelaxConfig(exclude_residues=(0, 29)),
     'exclude_residues [29] are outside 0..28'),
])
def test_what_amber_cannot_relax_is_one_line(shared_dir, make_bad, config, message):
  """Refused before OpenMM is imported: the same error with or without the extra."""
  with pytest.raises(JaxfoldError, match=re.escape(message)):
    relax.relax_protein(make_bad(_jittered(shared_dir, 'glucagon', 0.0)), config)


def test_bad_settings_and_text_are_one_line():
  with pytest.raises(JaxfoldError, match=r'RelaxConfig: stiffness=-1.0 must be >= 0; '
                                         r'max_outer_iterations=0 must be >= 1\.'):
    relax.RelaxConfig(stiffness=-1.0, max_outer_iterations=0)
  with pytest.raises(JaxfoldError, match=r'PDB: expected exactly one model, found 0'):
    relax.relax_pdb('HEADER    NOTHING\nEND\n')


def test_use_gpu_without_a_gpu_platform_names_what_to_install(shared_dir):
  openmm = pytest.importorskip('openmm')
  names = [openmm.Platform.getPlatform(i).getName()
           for i in range(openmm.Platform.getNumPlatforms())]
  if {'CUDA', 'OpenCL'} & set(names):
    pytest.skip(f'OpenMM has a GPU platform here ({names})')
  with pytest.raises(JaxfoldError, match=r'openmm\[cuda12\]==8\.6\.1'):
    relax.relax_protein(_jittered(shared_dir, 'glucagon', 0.0), use_gpu=True)


def test_the_relax_command_writes_the_relaxed_structure_and_fails_in_one_line(
    shared_dir, tmp_path, capsys, monkeypatch):
  from cli_checks import assert_fails  # pylint: disable=import-outside-toplevel
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  unrelaxed = tmp_path / 'glucagon_unrelaxed.pdb'
  unrelaxed.write_text(protein.to_pdb(_jittered(shared_dir, 'glucagon', 0.5)))
  relaxed = tmp_path / 'glucagon_relaxed.pdb'
  assert cli.main(['relax', str(unrelaxed), str(relaxed), '--no-gpu']) == 0
  err = capsys.readouterr().err
  assert 'residues still violating; wrote' in err and 'Amber round 1 on CPU' in err, err
  written = relax.relax_pdb(unrelaxed.read_text(), use_gpu=False)
  assert relaxed.read_text() == written.pdb  # repeatable: the command is the library call
  assert_fails(capsys, ['relax', str(unrelaxed), str(relaxed)], relaxed)  # exists
  assert_fails(capsys, ['relax', str(tmp_path / 'absent.pdb'), str(tmp_path / 'x.pdb')],
               'absent.pdb')
  garbage = tmp_path / 'garbage.pdb'
  garbage.write_text('ATOM      1  CA  UNK A   1       0.000   0.000   0.000\n')
  assert_fails(capsys, ['relax', str(garbage), str(tmp_path / 'x.pdb')], garbage)
  monkeypatch.setitem(sys.modules, 'openmm', None)
  line = assert_fails(capsys, ['relax', str(unrelaxed), str(tmp_path / 'x.pdb')],
                      'jaxfold[relax]')
  assert line.endswith(relax.MISSING_EXTRA)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'garbage.pdb', 'glucagon_relaxed.pdb', 'glucagon_unrelaxed.pdb']
