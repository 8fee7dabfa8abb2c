"""`jaxfold analyze trajectory` on a run whose answers are known: the kept predictions of a
real chain (3zee A) collapse onto its principal line, then its principal plane, then are the
truth itself (moved and turned), so the shape, accuracy and secondary-structure measures must
follow. Also the measures on real α and β proteins, when a measure reaches 90% of its final
value, and bad workdirs."""

import csv
import json
import math
import warnings

import numpy as np
import pytest

from cli_checks import assert_fails
from jaxfold import cli
from jaxfold.analysis import measures, trajectory
from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common import secondary_structure

CA = rc.atom_order['CA']
STEPS = (1, 10, 100, 1000)


def _read(shared_dir, name, chain='A'):
  path = shared_dir / 'data' / ('examples/6KWC_1/openfold_6KWC_1_model_1_ptm_unrelaxed.pdb'
                                if name == '6kwc' else f'mmcif/{name}.cif')
  return (protein.from_pdb_string(path.read_text()) if name == '6kwc'
          else protein.from_mmcif_string(path.read_text(), chain))


def _classes(prot):
  return secondary_structure.assign(prot.atom_positions[:, CA], prot.residue_index,
                                    prot.atom_mask[:, CA])


def test_myoglobin_is_mostly_helix_and_6kwc_mostly_strand(shared_dir):
  helix = secondary_structure.class_fractions(_classes(_read(shared_dir, '101m')))
  assert helix['helix'] > 0.65 and helix['strand'] == 0
  beta = secondary_structure.class_fractions(_classes(_read(shared_dir, '6kwc')))
  assert beta['strand'] > 0.3 and beta['strand'] > 5 * beta['helix']


def test_a_structure_scores_tm_1_and_its_classes_against_itself(shared_dir):
  prot = _read(shared_dir, '4i6p')
  ca = prot.atom_positions[prot.atom_mask[:, CA] > 0, CA]
  sequence = ''.join(rc.restypes_with_x[a] for a in prot.aatype[prot.atom_mask[:, CA] > 0])
  assert measures.tm_score(ca, ca, sequence) == pytest.approx(1.0, abs=1e-6)
  shuffled = np.random.default_rng(0).permutation(ca)  # same points, wrong order
  assert measures.tm_score(shuffled, ca, sequence) < 0.5
  classes = _classes(prot)
  scores = measures.secondary_structure_scores(classes, classes)
  assert all(value == 1 for by_class in scores.values() for value in by_class.values())
  # A prediction calling everything coil recalls all coil and nothing else.
  coil = np.where(classes == '', '', 'coil').astype(object)
  scores = measures.secondary_structure_scores(coil, classes)
  assert scores['recall'] == {'helix': 0.0, 'strand': 0.0, 'coil': 1.0}
  assert scores['precision']['coil'] == pytest.approx(np.mean(classes[classes != ''] == 'coil'))
  assert math.isnan(scores['precision']['helix'])
  # A prediction collapsed onto one point (early in training) is all coil, silently.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert set(secondary_structure.assign(np.zeros((10, 3)), np.arange(10))) == {'coil'}


def test_first_step_reaching_90_percent_of_final():
  first = trajectory.first_step_reaching
  assert first(STEPS, [0.1, 0.5, 0.85, 0.9], 'lddt_ca') == 100  # 0.85 >= 0.81
  assert first(STEPS, [0.1, 0.5, 0.8, 0.9], 'lddt_ca') == 1000
  assert first(STEPS, [10.0, 5.0, 2.2, 2.0], 'rmsd_ca') == 100  # 2.2 <= 2.0 / 0.9
  assert first(STEPS, [10.0, 5.0, 2.3, 2.0], 'rmsd_ca') == 1000
  # Shape has no better side: 90% of the way from the first value to the final one.
  assert first(STEPS, [1.0, 0.9, 0.63, 0.6], 'pc1_fraction') == 100
  assert first(STEPS, [1.0, 0.9, 0.7, 0.6], 'pc1_fraction') == 1000
  # No contact called: skipped; nothing finite, or a zero final score: no step.
  assert first(STEPS, [math.nan, 1.0, math.nan, 0.95], 'contact_precision_long') == 10
  assert first(STEPS, [math.nan] * 4, 'contact_precision_long') is None
  assert first(STEPS, [0.0] * 4, 'helix_recall') is None


def _projected(positions, mask, axes):
  """All atoms projected onto the first `axes` principal axes of the resolved Cα."""
  ca = positions[mask[:, CA] > 0, CA]
  centre = ca.mean(axis=0)
  _, _, directions = np.linalg.svd(ca - centre)
  kept = directions[:axes]
  return centre + (positions - centre) @ kept.T @ kept


@pytest.fixture(scope='module')
def run(tmp_path_factory, shared_dir):
  """A workdir as `jaxfold train` leaves it: 3zee A's truth with one residue unresolved, and a
  prediction of every residue at each of STEPS."""
  truth = _read(shared_dir, '3zee')
  truth = protein.Protein(**{**vars(truth), 'b_factors': np.zeros_like(truth.b_factors)})
  workdir = tmp_path_factory.mktemp('run')
  folder = workdir / 'predictions' / '3zee_A'
  folder.mkdir(parents=True)
  unresolved = truth.atom_mask.copy()
  unresolved[20] = 0
  (folder / 'truth.pdb').write_text(protein.to_pdb(
      protein.Protein(**{**vars(truth), 'atom_mask': unresolved})))
  turn, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
  moved = truth.atom_positions @ turn.T * np.sign(np.linalg.det(turn)) + [30.0, -4.0, 9.0]
  shapes = [_projected(truth.atom_positions, unresolved, 1),
            _projected(truth.atom_positions, unresolved, 2), truth.atom_positions, moved]
  for step, positions in zip(STEPS, shapes):
    plddt = np.full_like(truth.b_factors, step / 20)
    (folder / f'step_{step:08d}.pdb').write_text(protein.to_pdb(protein.Protein(
        **{**vars(truth), 'atom_positions': positions, 'b_factors': plddt})))
  return workdir


@pytest.fixture(scope='module')
def analysed(run):
  assert cli.main(['--quiet', 'analyze', 'trajectory', '--workdir', str(run)]) == 0
  return run / 'analysis'


def _table(analysed):
  with open(analysed / 'trajectory.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  return {(row['measure'], int(row['step'])): float(row['value']) for row in rows}


def test_the_line_then_the_plane_then_the_truth(analysed):
  table = _table(analysed)
  assert table['pc1_fraction', 1] == pytest.approx(1, abs=1e-6)
  assert table['effective_dimension', 1] == pytest.approx(1, abs=1e-5)
  assert table['pc3_fraction', 10] == pytest.approx(0, abs=1e-6)
  assert 1 < table['effective_dimension', 10] < 2
  for step in (100, 1000):
    for measure in ('pc1_fraction', 'pc2_fraction', 'pc3_fraction', 'effective_dimension'):
      # PDB coordinates carry 3 decimals.
      assert table[measure, step] == pytest.approx(table[f'truth_{measure}', step], abs=1e-4)
    assert table['lddt_ca', step] == pytest.approx(1, abs=1e-4)
    assert table['rmsd_ca', step] == pytest.approx(0, abs=1e-2)
    assert table['gdt_ts', step] == pytest.approx(1) == table['tm_score', step]
    for name in ('helix', 'strand', 'coil'):
      assert table[f'{name}_recall', step] == 1 and table[f'{name}_precision', step] == 1
      assert table[f'{name}_fraction', step] == table[f'truth_{name}_fraction', step]
    for name in ('short', 'medium', 'long'):
      assert table[f'contact_precision_{name}', step] == 1
  # The collapsed predictions are worse than the truth, the line worst.
  assert table['lddt_ca', 1] < table['lddt_ca', 10] < 1
  assert table['rmsd_ca', 1] > table['rmsd_ca', 10] > 1
  assert table['strand_recall', 1] < 1
  assert [table['mean_plddt', step] for step in STEPS] == pytest.approx(
      [step / 20 for step in STEPS], abs=0.01)


def test_the_summary_and_every_figure_are_written(analysed):
  table = _table(analysed)
  summary = json.loads((analysed / 'trajectory.json').read_text())
  assert summary['chains'] == {'3zee_A': list(STEPS)}
  assert len(summary['rows']) == len(table)
  reached = summary['reaching_step']['3zee_A']
  expected = next(step for step in STEPS if table['lddt_ca', step] >= 0.9)
  assert reached['lddt_ca'] == expected and reached['tm_score'] <= 100
  assert reached['pc1_fraction'] == 100
  for name in ('accuracy', 'dimensions', 'secondary_structure', 'contacts'):
    assert (analysed / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not list(analysed.glob('.*.tmp'))


def test_a_workdir_without_kept_predictions_fails_with_one_line(tmp_path, capsys, run):
  assert_fails(capsys, ['analyze', 'trajectory', '--workdir', tmp_path / 'nowhere'],
               tmp_path / 'nowhere')
  (tmp_path / 'predictions' / 'a').mkdir(parents=True)
  (tmp_path / 'predictions' / 'a' / 'step_00000001.pdb').write_text('')  # no truth beside it
  line = assert_fails(capsys, ['analyze', 'trajectory', '--workdir', tmp_path], tmp_path)
  assert 'no kept predictions' in line
  copy = tmp_path / 'copy'
  folder = copy / 'predictions' / '3zee_A'
  folder.mkdir(parents=True)
  for path in (run / 'predictions' / '3zee_A').iterdir():
    (folder / path.name).write_text(path.read_text())
  (folder / 'step_00000010.pdb').write_text('ATOM  garbage\n')
  assert_fails(capsys, ['--quiet', 'analyze', 'trajectory', '--workdir', copy],
               folder / 'step_00000010.pdb')
  assert not (copy / 'analysis').exists()
