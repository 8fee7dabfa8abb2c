"""Recycling judged with the bin-flip detector (`jaxfold.parity.recycling`), against AlphaFold.

The comparison `jaxfold parity alphafold` prints, on the preset model_3_ptm reduced to two
Evoformer blocks (every layer type kept), perturbed random weights, query73 processed by
AlphaFold's pipeline (32 clusters, 64 extra sequences), one recycling iteration:

- A forced flip. AlphaFold's recycled positions are nudged, as another machine's rounding
  might: one residue moves by a few thousandths of an Å so that one Cβ distance crosses a
  bin edge by 1e-4 Å while no other distance of that residue comes near an edge. jaxfold,
  running free, keeps the distance on the other side. The detector must name exactly that
  pair, the end-to-end rows it throws beyond tolerance must be explained (jaxfold fed
  AlphaFold's bins agrees), and the teacher-forced rows must pass untouched.
- A negative control. One weight of jaxfold changed by 1e-3: the teacher-forced rows and the
  free-running rows fail, and no flip explains them.
"""

import numpy as np
import pytest

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.model import config
from jaxfold.model.embedders import DgramConfig, pseudo_beta_fn
from jaxfold.parity import alphafold_model, recycling

PRESET = 'model_3_ptm'
SIZES = {'max_msa_clusters': 32, 'max_extra_msa': 64}
CROSSING = 1e-4  # Å beyond the edge
# Residues moved by at most this (Å): far below the end-to-end positions tolerance.
MAX_NUDGE = 5e-3
# The moved residue's other distances keep this much more than the move from every edge.
CLEARANCE = 1e-3
# The negative control: a weight the structure sees in every iteration.
CONTROL_WEIGHT = ('alphafold_iteration', 'evoformer', 'single_activations', 'weights')


def nudge_one_distance(prev: dict, aatype: np.ndarray, seq_mask: np.ndarray,
                       bins: DgramConfig) -> tuple[dict, tuple[int, int]]:
  """prev with one residue moved so that exactly one Cβ distance crosses a bin edge.

  Picks the pair needing the smallest move among those whose moved residue keeps every other
  distance clear of the edges; moves all atoms of its second residue along the pair's axis.
  """
  real = np.asarray(seq_mask, bool)
  distances = recycling.cb_distances(aatype, prev['prev_pos'])
  edge, margin = recycling.nearest_edge(distances, recycling.bin_edges(bins))
  cb = np.asarray(pseudo_beta_fn(aatype, prev['prev_pos']), np.float64)
  best = None
  for i, j in zip(*np.nonzero(np.triu(real[:, None] & real[None, :], k=1))):
    move = margin[i, j] + CROSSING
    if not 10 * CROSSING < margin[i, j] < MAX_NUDGE - CROSSING:
      continue
    others = real.copy()
    others[[i, j]] = False
    if np.all(margin[j, others] > move + CLEARANCE) and (best is None or move < best[0]):
      best = (move, i, j)
  assert best is not None, 'no distance of the structure can be moved across an edge alone'
  _, i, j = best
  axis = (cb[j] - cb[i]) / distances[i, j]
  target = edge[i, j] + np.sign(edge[i, j] - distances[i, j]) * CROSSING
  positions = np.array(prev['prev_pos'], np.float64)
  positions[j] += (target - distances[i, j]) * axis
  return {**prev, 'prev_pos': positions.astype(np.float32)}, (int(i), int(j))


@pytest.fixture(scope='module')
def inputs(shared_dir):
  """The reduced config, AlphaFold's processed query73 batch and perturbed weights."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('JAXFOLD_SHARED', str(shared_dir))
    reduced = config.reduced(config.preset(PRESET), num_recycle=1)
    af_cfg = alphafold_model.alphafold_config(PRESET, 1, **SIZES)
    alphafold_model.apply_depths(af_cfg, reduced)
    batch = alphafold_model.query73_features(af_cfg)
  params = alphafold_model.perturbed_weights(af_cfg, batch)
  return reduced, batch, params


def compare(inputs, **kwargs):
  reduced, batch, params = inputs
  return alphafold_model.compare(PRESET, num_recycle=1, config=reduced, batch=batch,
                                 params=params, envelope=False, **kwargs)


def rows_named(result, prefix):
  return [r for r in result.rows if r.name.startswith(prefix + '/')]


def test_a_forced_flip_is_named_and_explains_the_rows(inputs, parity):
  reduced, batch, _ = inputs
  nudged = []

  def nudge(iteration, prev):
    prev, pair = nudge_one_distance(prev, batch['aatype'][iteration], batch['seq_mask'][iteration],
                                    reduced.model.embeddings_and_evoformer.prev_pos)
    nudged.append(pair)
    return prev

  result = compare(inputs, nudge=nudge)
  print('\n'.join(result.notes))
  (pair,) = nudged
  free = result.details['recycling']['free_running']
  assert [f['residues'] for f in free[0]['flips']] == [list(pair)]
  assert pair in [(c['residues'][0], c['residues'][1]) for c in free[0]['candidates']]
  (fed,) = result.details['recycling']['fed_reference_bins']
  assert [f['residues'] for f in fed['flips']] == [list(pair)]
  assert all(f['explained'] for f in fed['flips'])
  assert fed['flips'][0]['margin'] == pytest.approx(CROSSING, abs=1e-5)

  end_to_end = rows_named(result, recycling.END_TO_END_ROWS)
  beyond = [r for r in end_to_end if not r.within_tolerance]
  assert beyond, 'the flip changed no end-to-end row beyond tolerance: nothing was tested'
  assert all(r.explained_by and f'residues {pair[0] + 1}-{pair[1] + 1}' in r.explained_by
             for r in beyond)
  assert all(r.within_tolerance for r in rows_named(result, recycling.REFERENCE_BINS_ROWS))
  assert all(r.within_tolerance for r in rows_named(result, recycling.TEACHER_FORCED_ROWS))
  parity.record(result.rows)


def test_one_changed_weight_fails_teacher_forced_and_free_running(inputs):
  _, _, params = inputs
  tree = from_haiku(params, root='alphafold')
  *path, name = CONTROL_WEIGHT
  node = tree
  for key in path:
    node = node[key]
  node[name] = np.array(node[name])
  node[name][0, 0] += 1e-3

  result = compare(inputs, tree=tree)
  print('\n'.join(result.notes))
  failed = {r.name for r in result.rows if not r.passed}
  assert any(n.startswith(f'{recycling.TEACHER_FORCED_ROWS}/iteration 1/') for n in failed), failed
  assert any(n.startswith(f'{recycling.END_TO_END_ROWS}/') for n in failed), failed
  assert not any(r.explained_by for r in result.rows)
  assert not result.passed
