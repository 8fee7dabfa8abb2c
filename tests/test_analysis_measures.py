"""Structure measures for training-trajectory analysis, on cases with known answers: a line has
one principal dimension, a planar ring two, an octahedron three; a real protein's contacts
against themselves are all right, and against a copy torn in two exactly as counted pair by
pair."""

import numpy as np
import pytest

from jaxfold.analysis import measures
from jaxfold.common import protein
from jaxfold.data import transforms


def _rotated(points, seed=0):
  """Points in a random orientation, off the axes, and shifted."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
  return points @ q.T + np.array([5.0, -3.0, 12.0])


def test_a_line_has_one_dimension_a_ring_two_an_octahedron_three():
  line = _rotated(np.outer(np.linspace(-20, 20, 50), [1.0, 0.0, 0.0]))
  np.testing.assert_allclose(measures.variance_fractions(line), [1, 0, 0], atol=1e-12)
  assert measures.effective_dimension(measures.variance_fractions(line)) == pytest.approx(1)

  angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
  ring = _rotated(np.stack([10 * np.cos(angles), 10 * np.sin(angles), 0 * angles], -1), seed=1)
  np.testing.assert_allclose(measures.variance_fractions(ring), [0.5, 0.5, 0], atol=1e-12)
  assert measures.effective_dimension(measures.variance_fractions(ring)) == pytest.approx(2)

  octahedron = _rotated(np.concatenate([np.eye(3), -np.eye(3)]) * 7.0, seed=2)
  np.testing.assert_allclose(measures.variance_fractions(octahedron), [1 / 3] * 3, atol=1e-12)
  assert measures.effective_dimension([1 / 3] * 3) == pytest.approx(3)
  # An elongated cloud lies in between, and the mask drops points.
  cloud = np.random.default_rng(3).normal(size=(200, 3)) * [10.0, 3.0, 1.0]
  fractions = measures.variance_fractions(cloud)
  assert fractions[0] > fractions[1] > fractions[2] > 0 and fractions.sum() == pytest.approx(1)
  assert 1 < measures.effective_dimension(fractions) < 2
  outlier = np.concatenate([line, [[0.0, 500.0, 0.0]]])
  mask = np.r_[np.ones(len(line)), 0]
  np.testing.assert_allclose(measures.variance_fractions(outlier, mask), [1, 0, 0], atol=1e-12)


@pytest.fixture(scope='module')
def chain(shared_dir):
  prot = protein.from_mmcif_string((shared_dir / 'data' / 'mmcif' / '3zee.cif').read_text(), 'A')
  positions, mask = transforms.pseudo_beta(prot.aatype, prot.atom_positions, prot.atom_mask)
  return positions.astype(np.float64), mask, prot.residue_index


def test_the_truth_predicts_its_own_contacts_in_every_range(chain):
  positions, mask, index = chain
  precision = measures.contact_precision(positions, positions, mask, index)
  assert precision == {'short': 1.0, 'medium': 1.0, 'long': 1.0}


def _count(made, real, mask, index, least, greatest):
  """Precision counted pair by pair, for the test."""
  called = right = 0
  for i in range(len(made)):
    for j in range(len(made)):
      separation = abs(int(index[i]) - int(index[j]))
      if not (mask[i] and mask[j] and least <= separation and
              (greatest is None or separation <= greatest)):
        continue
      if np.linalg.norm(made[i] - made[j]) < 8.0:
        called += 1
        right += np.linalg.norm(real[i] - real[j]) < 8.0
  return right / called


def test_contacts_of_a_torn_copy_are_counted_pair_by_pair(chain):
  positions, mask, index = chain
  torn = positions.copy()
  torn[len(torn) // 2:] += 100.0  # the second half moved away: its contacts with the first lost
  # The torn copy calls only real contacts; the whole chain, judged by the torn truth, calls
  # some the truth does not have.
  assert measures.contact_precision(torn, positions, mask, index) == {
      'short': 1.0, 'medium': 1.0, 'long': 1.0}
  mask = mask.copy()
  mask[10] = 0  # a residue missing from the truth takes no part
  precision = measures.contact_precision(positions, torn, mask, index)
  for name, (least, greatest) in measures.CONTACT_RANGES.items():
    assert precision[name] == pytest.approx(
        _count(positions, torn, mask, index, least, greatest)), name
  assert precision['long'] < 1.0


def test_no_predicted_contact_is_nan_and_bad_shapes_are_refused():
  line = np.outer(np.arange(30) * 3.8, [1.0, 0.0, 0.0])
  precision = measures.contact_precision(line, line, np.ones(30))
  assert all(np.isnan(value) for value in precision.values())
  with pytest.raises(ValueError, match=r'must both be \[N, 3\]'):
    measures.contact_precision(line, line[:-1], np.ones(30))
  with pytest.raises(ValueError, match=r'expected points \[N, 3\]'):
    measures.variance_fractions(np.zeros((5, 2)))
