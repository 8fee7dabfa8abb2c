"""The recycled-bin flip detector of jaxfold.parity.recycling on made-up structures.

Three alanines (their Cβ is what the recycled distogram bins) on a line: jaxfold's and
AlphaFold's copies differ in one residue's position, and the detector must report the pairs
that lie within the measured difference of an edge, the pairs whose bins differ, and whether
the difference is of rounding scale. The distograms are the model's own function's. Last,
how a row beyond tolerance that a flip explains is printed and reported.
"""

import dataclasses
import json

import numpy as np
import pytest

from jaxfold.common import residue_constants
from jaxfold.model.embedders import DgramConfig, dgram_from_positions
from jaxfold.parity import recycling

BINS = DgramConfig()
CB = residue_constants.atom_order['CB']
ALANINE = residue_constants.restype_order['A']


def received(cb_x: list[float]) -> dict:
  """What an iteration receives when the Cβ atoms sit at x = cb_x on a line."""
  positions = np.zeros((len(cb_x), 37, 3), np.float32)
  positions[:, CB, 0] = cb_x
  return {'prev': {'prev_pos': positions},
          'dgram': np.asarray(dgram_from_positions(positions[:, CB], BINS))}


def compare(ours_x, ref_x):
  aatype = np.full(len(ref_x), ALANINE)
  return recycling.compare_bins(1, aatype, np.ones(len(ref_x)), received(ours_x),
                                received(ref_x), BINS)


def test_bins_and_edges():
  assert recycling.bin_edges(BINS)[[0, 1, -1]] == pytest.approx([3.25, 4.5, 20.75])
  dgram = np.asarray(dgram_from_positions(np.array([[0, 0, 0], [4.0, 0, 0], [30.0, 0, 0]],
                                                   np.float32), BINS))
  assert recycling.bin_index(dgram).tolist() == [[-1, 0, 14], [0, -1, 14], [14, 14, -1]]
  edge, margin = recycling.nearest_edge(np.array([4.4, 5.0]), recycling.bin_edges(BINS))
  assert edge.tolist() == [4.5, 4.5] and margin == pytest.approx([0.1, 0.5])


def test_a_distance_across_an_edge_is_a_flip_of_rounding_scale():
  # Residues 0-2 at 5.75 - 2e-4 Å in jaxfold and 5.75 + 1e-4 Å in AlphaFold: a 3e-4 Å move.
  result = compare([0.0, 13.0, 5.75 - 2e-4], [0.0, 13.0, 5.75 + 1e-4])
  assert result.position_difference == pytest.approx(3e-4, abs=1e-6)
  assert result.window == pytest.approx(2 * 3e-4 + recycling.DISTANCE_ROUNDING, abs=1e-6)
  assert [c[:2] for c in result.candidates] == [(0, 2)] and result.nearest[:2] == (0, 2)
  assert result.describe_nearest() == ('residues 1-3 at 5.750100 Å (jaxfold 5.749800), 1.0e-04 Å '
                                       'from the 5.75 Å edge')
  (flip,) = result.flips
  assert flip.residues == (0, 2) and flip.bins == (1, 2) and flip.edge == 5.75
  assert flip.margin == pytest.approx(1e-4, abs=1e-6)
  assert flip.explained


def test_no_flip_when_both_sides_of_the_difference_share_a_bin():
  result = compare([0.0, 13.0, 5.0], [0.0, 13.0, 5.0003])
  assert result.flips == [] and result.candidates == []


def test_a_flip_of_positions_that_disagree_is_not_explained():
  # 0.5 Å apart: beyond the end-to-end positions tolerance, so not rounding.
  (flip,) = compare([0.0, 13.0, 5.4], [0.0, 13.0, 5.9]).flips
  assert flip.residues == (0, 2) and not flip.rounding and not flip.explained


def test_padding_residues_are_ignored():
  aatype = np.full(3, ALANINE)
  result = recycling.compare_bins(1, aatype, np.array([1, 1, 0]), received([0, 4.0, 9.0]),
                                  received([0, 4.0, 4.6]), BINS)
  assert result.flips == [] and result.position_difference == 0.0


def test_template_distances_on_an_edge_are_within_rounding():
  template = BINS.__class__(min_bin=3.25, max_bin=50.75, num_bins=39)
  positions = np.zeros((1, 1, 3, 3), np.float32)  # [recycle, template, residue, xyz]
  positions[0, 0, :, 0] = [0.0, 4.5, 30.0]  # 4.5 Å is an edge; 25.5 and 30 Å are not
  batch = {'template_pseudo_beta': positions,
           'template_pseudo_beta_mask': np.ones((1, 1, 3), np.float32)}
  assert recycling.template_edge_margin(batch, template) == (0.0, 0.0)
  positions[0, 0, 1, 0] = 4.6
  batch['template_pseudo_beta_mask'][0, 0, 2] = 0
  distance, spacings = recycling.template_edge_margin(batch, template)
  assert distance == pytest.approx(0.1, abs=1e-6)
  assert spacings > 1e4 * recycling.TEMPLATE_ROUNDING_SPACINGS
  assert recycling.template_edge_margin({}, template) is None


def test_an_explained_row_passes_and_says_so(tmp_path, capsys):
  from jaxfold import cli  # pylint: disable=import-outside-toplevel
  from jaxfold.parity.agreement import Comparison, Row  # pylint: disable=import-outside-toplevel
  within = Row('end to end/ptm', 1e-6, 0.6, 1e-3, 'absolute')
  beyond = Row('end to end/final_atom_positions', 0.3, 44.0, 0.01, 'absolute')
  explained = dataclasses.replace(beyond, explained_by='1 recycled-bin flip(s): residues 32-64')
  assert not beyond.passed and explained.passed and not explained.within_tolerance

  report = tmp_path / 'r.json'
  result = Comparison('AlphaFold (live)', 'model_1_ptm', 2, 73, [within, explained], {},
                      ('free running, flip iteration 1: residues 32-64',))
  assert cli._print_comparison(result, str(report)) == 0  # pylint: disable=protected-access
  out = capsys.readouterr().out
  assert 'end to end/final_atom_positions' in out and ' expl\n' in out
  assert 'free running, flip iteration 1: residues 32-64\n' in out
  assert '1/2 rows within tolerance, 1 more beyond it but explained' in out
  document = json.loads(report.read_text())
  assert document['passed'] and document['notes'] == list(result.notes)
  assert document['rows'][1]['explained_by'] == explained.explained_by

  failed = Comparison('AlphaFold (live)', 'model_1_ptm', 2, 73, [within, beyond], {})
  assert cli._print_comparison(failed, None) == 1  # pylint: disable=protected-access
  assert 'FAILED: end to end/final_atom_positions' in capsys.readouterr().out
