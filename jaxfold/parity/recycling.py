"""Recycling judged the same way on every machine: teacher-forced iterations, the recycled
distogram's bin flips, and the rows a flip explains.

Each recycling iteration embeds the previous one's Cβ distances as a one-hot over 15 bins
(Jumper et al. (2021) Suppl. Alg. 32, `prev_pos_linear`). Two correct float32 models agree on
those positions to ~3e-4 Å, not exactly, so a distance that close to a bin edge can fall into
different bins in the two; the pair representation at that pair then differs by a whole row
of `prev_pos_linear`'s weights, and the Evoformer carries that everywhere. Whether it happens
depends on rounding, that is on the machine, so free-running rows alone cannot give a verdict
that holds everywhere. Three readings do:

- Teacher-forced: iteration k of jaxfold is fed AlphaFold's recycled outputs of iteration
  k - 1, so no recycled quantity differs, and each iteration is held to the module
  tolerances. Iteration 0 receives zeros in both models: it is compared on what it recycles.
- Free running, with a detector: both models iterate on their own outputs. Per iteration the
  detector lists the pairs whose AlphaFold distance lies within the measured difference of
  the two models' positions of a bin edge (candidates: twice the largest Cβ difference, as
  both ends may move), and the pairs whose bins differ (flips). A row beyond its tolerance
  passes only when flips explain it: jaxfold runs again from the first flip, fed AlphaFold's
  bins (they differ from its own exactly at the flipped pairs), and that run must be within
  every end-to-end tolerance, with every flip on the way a candidate of positions that agree
  within tolerance. Otherwise the row fails.
- AlphaFold against itself (`alphafold_model.compare`): the reference again with another op
  order, the envelope the free-running rows are read against (measured, not judged).

The other binned quantity on the path, the template distogram, bins the input's template
positions, the same float32 values in both models; `template_edge_margin` reports how close
to an edge they come.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxfold.model import confidence
from jaxfold.model.alphafold import PREV_KEYS, AlphaFold, AlphaFoldIteration
from jaxfold.model.config import ModelConfig
from jaxfold.model.embedders import DgramConfig, pseudo_beta_fn
from jaxfold.parity.agreement import ALPHAFOLD_MODULE_TOLERANCE, Row, rows

# The structure module's eight shared-weight iterations amplify float32 rounding of the
# frames; parity/test_structure_module.py shows float64 agreement at 1e-9 (a rounding
# effect, not a definitional difference). It bounds what comes out of it.
STRUCTURE_MODULE_TOLERANCE = 5e-4
# One teacher-forced iteration: representations and the pair-derived confidence at the
# module tolerance, the structure and pLDDT (computed from the structure module's
# activations) at the structure module's.
TEACHER_FORCED = {'representations': ('relative', ALPHAFOLD_MODULE_TOLERANCE),
                  'final_atom_positions': ('relative', STRUCTURE_MODULE_TOLERANCE),
                  'plddt': ('relative', STRUCTURE_MODULE_TOLERANCE),
                  'predicted_aligned_error': ('relative', ALPHAFOLD_MODULE_TOLERANCE),
                  'ptm': ('relative', ALPHAFOLD_MODULE_TOLERANCE)}
# End to end after recycling (issue #3): representations relative, the rest absolute.
END_TO_END = {'representations': ('relative', 1e-4), 'final_atom_positions': ('absolute', 0.01),
              'plddt': ('absolute', 0.01), 'predicted_aligned_error': ('absolute', 0.01),
              'ptm': ('absolute', 1e-3)}
REPRESENTATIONS = ('msa_first_row', 'pair', 'single')
CONFIDENCE = ('plddt', 'predicted_aligned_error', 'ptm')
# A distance computed from float32 squared distances is uncertain by ~1e-6 Å at 20 Å.
DISTANCE_ROUNDING = 1e-5
# Two orders of a float32 sum of three squares differ by at most a few spacings of the result.
TEMPLATE_ROUNDING_SPACINGS = 4
# Prefixes of the rows this module makes.
TEACHER_FORCED_ROWS = 'teacher-forced'
END_TO_END_ROWS = 'end to end'
REFERENCE_BINS_ROWS = "end to end, AlphaFold's recycled bins from the first flip"


# ---------------------------------------------------------------------------------------------
# The detector.
# ---------------------------------------------------------------------------------------------

def bin_edges(config: DgramConfig) -> np.ndarray:
  """The distances (Å) where a pair changes bin: the lower edge of every bin."""
  return np.linspace(config.min_bin, config.max_bin, config.num_bins)


def _squared_distances(points: np.ndarray) -> np.ndarray:
  """[N, 3] -> [N, N] squared distances, in the points' precision."""
  return np.sum(np.square(points[:, None] - points[None]), axis=-1)


def _pseudo_beta(aatype: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """Pseudo-β positions (float64): aatype [N], atom37 [N, 37, 3] -> [N, 3]."""
  return np.asarray(pseudo_beta_fn(jnp.asarray(aatype), jnp.asarray(positions)), np.float64)


def cb_distances(aatype: np.ndarray, positions: np.ndarray) -> np.ndarray:
  """Distances (Å, float64) between the pseudo-β atoms: aatype [N], atom37 [N, 37, 3] -> [N, N]."""
  return np.sqrt(_squared_distances(_pseudo_beta(aatype, positions)))


def bin_index(dgram: np.ndarray) -> np.ndarray:
  """[N, N, bins] one-hot -> [N, N] bin, -1 where none (closer than the first edge, or on one)."""
  return np.where(dgram.any(axis=-1), dgram.argmax(axis=-1), -1)


def nearest_edge(distances: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(edge, |distance - edge|) of the bin edge nearest each distance."""
  index = np.abs(distances[..., None] - edges).argmin(axis=-1)
  return edges[index], np.abs(distances - edges[index])


@dataclasses.dataclass(frozen=True)
class Flip:
  """A pair whose recycled distance falls in different bins in jaxfold and AlphaFold."""
  iteration: int  # the iteration that embedded it
  residues: tuple[int, int]  # i < j, 0-based
  distances: tuple[float, float]  # Cβ distance (Å): jaxfold, AlphaFold
  bins: tuple[int, int]  # jaxfold, AlphaFold; -1: no bin
  edge: float  # the edge (Å) nearest AlphaFold's distance
  window: float  # the iteration's candidate window (Å), see RecycledBins
  rounding: bool  # the two models' positions agreed within the end-to-end tolerance

  @property
  def margin(self) -> float:
    return abs(self.distances[1] - self.edge)

  @property
  def explained(self) -> bool:
    """A rounding-scale flip: the positions agree, and the distance lies in the window."""
    return self.rounding and self.margin <= self.window

  def describe(self) -> str:
    i, j = self.residues
    return (f'iteration {self.iteration}: residues {i + 1}-{j + 1} at {self.distances[1]:.6f} Å '
            f'(jaxfold {self.distances[0]:.6f}), {self.margin:.1e} Å from the {self.edge:g} Å '
            f'edge, in bin {self.bins[0]} of jaxfold and {self.bins[1]} of AlphaFold')

  def as_dict(self) -> dict[str, Any]:
    return {'iteration': self.iteration, 'residues': list(self.residues),
            'distances': list(self.distances), 'bins': list(self.bins), 'edge': self.edge,
            'margin': self.margin, 'window': self.window, 'explained': self.explained}


def _pair_dict(i: int, j: int, ours: float, reference: float, edge: float) -> dict[str, Any]:
  return {'residues': [i, j], 'distances': [ours, reference], 'edge': edge}


@dataclasses.dataclass(frozen=True)
class RecycledBins:
  """One iteration's recycled distogram in both models, compared.

  position_difference: the largest distance (Å) between the two models' Cβ positions.
  window: 2 * position_difference (+ rounding of a distance): no pair's distance can differ
    by more, so only pairs this close to an edge (the candidates) can flip.
  """
  iteration: int
  position_difference: float
  window: float
  # (i, j, jaxfold's distance, AlphaFold's distance, the edge nearest AlphaFold's)
  candidates: list[tuple[int, int, float, float, float]]
  flips: list[Flip]
  nearest: tuple[int, int, float, float, float] | None  # the pair closest to an edge

  def describe_nearest(self) -> str:
    if self.nearest is None:
      return 'no pair'
    i, j, ours, distance, edge = self.nearest
    return (f'residues {i + 1}-{j + 1} at {distance:.6f} Å (jaxfold {ours:.6f}), '
            f'{abs(distance - edge):.1e} Å from the {edge:g} Å edge')

  def as_dict(self) -> dict[str, Any]:
    return {'iteration': self.iteration, 'position_difference': self.position_difference,
            'window': self.window,
            'nearest': None if self.nearest is None else _pair_dict(*self.nearest),
            'candidates': [_pair_dict(*c) for c in self.candidates],
            'flips': [f.as_dict() for f in self.flips]}


def compare_bins(iteration: int, aatype: np.ndarray, seq_mask: np.ndarray,
                 ours: Mapping[str, Any], reference: Mapping[str, Any],
                 config: DgramConfig) -> RecycledBins:
  """Candidates and flips of one iteration.

  ours / reference: what the iteration received and embedded in each model: {'prev':
    {'prev_pos': [N, 37, 3], ...}, 'dgram': [N, N, bins]}.
  """
  edges = bin_edges(config)
  real = np.asarray(seq_mask, bool)
  cb = [_pseudo_beta(aatype, x['prev']['prev_pos']) for x in (ours, reference)]
  ours_d, ref_d = (np.sqrt(_squared_distances(c)) for c in cb)
  difference = float(np.max(np.linalg.norm(cb[0][real] - cb[1][real], axis=-1), initial=0.0))
  window = 2 * difference + DISTANCE_ROUNDING
  edge, margin = nearest_edge(ref_d, edges)
  upper = np.triu(real[:, None] & real[None, :], k=1)
  pair = lambda i, j: (int(i), int(j), float(ours_d[i, j]), float(ref_d[i, j]),
                       float(edge[i, j]))
  candidates = [pair(i, j) for i, j in zip(*np.nonzero(upper & (margin <= window)))]
  nearest = pair(*np.unravel_index(np.where(upper, margin, np.inf).argmin(), margin.shape)) \
      if upper.any() else None
  ours_bin, ref_bin = bin_index(ours['dgram']), bin_index(reference['dgram'])
  rounding = difference <= END_TO_END['final_atom_positions'][1]
  flips = [Flip(iteration, (int(i), int(j)), (float(ours_d[i, j]), float(ref_d[i, j])),
                (int(ours_bin[i, j]), int(ref_bin[i, j])), float(edge[i, j]), window, rounding)
           for i, j in zip(*np.nonzero(upper & (ours_bin != ref_bin)))]
  return RecycledBins(iteration, difference, window, candidates, flips, nearest)


def compare_iterations(ours: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]],
                       config: ModelConfig, start: int = 1) -> list[RecycledBins]:
  """`compare_bins` of iterations `start`.. (the first, 0, receives zeros in both models).

  reference: `alphafold_model.run_reference`'s records (their 'batch' gives the residues);
  ours: records with 'prev' and 'dgram' of the same iterations (from `start` on).
  """
  batch = reference[0]['batch']
  return [compare_bins(k, batch['aatype'][0], batch['seq_mask'][0], ours[k], reference[k],
                       config.embeddings_and_evoformer.prev_pos)
          for k in range(start, len(reference))]


def template_edge_margin(batch: Mapping[str, np.ndarray], config: DgramConfig
                         ) -> tuple[float, float] | None:
  """How close any template's pseudo-β distance comes to an edge of the template distogram:
  (Å, float32 spacings of the squared edge), None without templates.

  Both models bin the same float32 input, comparing squared distances with squared edges;
  only rounding of the three-term sum (a few spacings, `TEMPLATE_ROUNDING_SPACINGS`) could
  bin a pair differently, so a margin of more spacings than that cannot flip.
  """
  if 'template_pseudo_beta' not in batch:
    return None
  edges = bin_edges(config)
  squared = np.square(edges.astype(np.float32))
  positions = np.asarray(batch['template_pseudo_beta'], np.float64)
  positions = positions.reshape((-1,) + positions.shape[-2:])
  masks = np.asarray(batch['template_pseudo_beta_mask'], bool).reshape(len(positions), -1)
  best = (np.inf, np.inf)
  for cb, real in zip(positions, masks):
    cb = cb[real]
    if len(cb) < 2:
      continue
    dist2 = _squared_distances(cb)[np.triu_indices(len(cb), 1)]
    index = np.abs(dist2[:, None] - squared).argmin(axis=-1)
    spacings = np.abs(dist2 - squared[index]) / np.spacing(squared[index])
    nearest = int(spacings.argmin())
    if spacings[nearest] < best[1]:
      best = (abs(np.sqrt(dist2[nearest]) - edges[index[nearest]]), float(spacings[nearest]))
  return None if np.isinf(best[1]) else (float(best[0]), best[1])


def template_distogram(batch: Mapping[str, np.ndarray], config: ModelConfig
                       ) -> tuple[dict[str, float] | None, str | None]:
  """`template_edge_margin` of a model with templates, for the report and as a note."""
  template = config.embeddings_and_evoformer.template
  margin = template_edge_margin(batch, template.dgram_features) if template.enabled else None
  if margin is None:
    return None, None
  distance, spacings = margin
  verdict = ('within rounding, may bin differently' if spacings <= TEMPLATE_ROUNDING_SPACINGS
             else 'both models bin it alike')
  return ({'distance': distance, 'spacings': spacings},
          f'template distogram: the nearest template distance lies {distance:.1e} Å '
          f'({spacings:.0f} float32 spacings of its square) from a bin edge: {verdict}')


# ---------------------------------------------------------------------------------------------
# jaxfold, free running (recorded) and one iteration at a time (teacher-forced, or fed bins).
# ---------------------------------------------------------------------------------------------

def _is_recycled_embedding(context: nn.module.InterceptorContext) -> bool:
  return context.method_name == '__call__' and context.module.name == 'prev_pos_linear'


def free_running(config: ModelConfig, tree: Mapping[str, Any], batch: Mapping[str, np.ndarray],
                 num_recycle: int, num_ensemble: int = 1
                 ) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
  """jaxfold's recycling model as a user runs it, and what each iteration received.

  Returns (outputs with representations, as numpy; per iteration {'prev': the recycled
  inputs it received, 'dgram': the recycled distogram it embedded}, recorded from inside
  the compiled recycling loop, as `alphafold_model.run_reference` records AlphaFold's).
  """
  received: list[dict] = []
  dgrams: list[np.ndarray] = []

  def interceptor(next_f, args, kwargs, context):
    if context.method_name == '__call__' and isinstance(context.module, AlphaFoldIteration):
      jax.debug.callback(lambda p: received.append(jax.tree.map(np.asarray, p)), args[1],
                         ordered=True)
    elif _is_recycled_embedding(context):
      jax.debug.callback(lambda d: dgrams.append(np.asarray(d)), args[0], ordered=True)
    return next_f(*args, **kwargs)

  model = AlphaFold(config)

  def run(params, batch):
    with nn.intercept_methods(interceptor):
      return model.apply(params, batch, num_recycle=num_recycle, num_ensemble=num_ensemble,
                         return_representations=True)
  outputs = jax.tree.map(np.asarray, jax.jit(run)({'params': tree}, batch))
  jax.effects_barrier()
  # Every ensemble member embeds the same recycled distogram.
  return outputs, [{'prev': p, 'dgram': d} for p, d in zip(received, dgrams[::num_ensemble])]


def iteration_step(config: ModelConfig, tree: Mapping[str, Any]
                   ) -> Callable[..., tuple[dict[str, Any], np.ndarray]]:
  """step(batch, prev, dgram=None) -> (outputs, the recycled distogram jaxfold computed).

  One compiled recycling iteration of jaxfold on the batch slice [E, ...] and the recycled
  inputs `prev` (PREV_KEYS), its outputs laid out as `AlphaFold`'s (representations,
  confidence). Given `dgram` [N, N, bins], the network embeds it in place of the one it
  computes from prev['prev_pos'] (which is still returned).
  """
  iteration = AlphaFoldIteration(config)

  def run(params, batch, prev, dgram, substitute):
    computed = []

    def interceptor(next_f, args, kwargs, context):
      if _is_recycled_embedding(context):
        computed.append(args[0])
        args = (jnp.where(substitute, dgram.astype(args[0].dtype), args[0]),) + args[1:]
      return next_f(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      ret = iteration.apply(params, batch, prev)
    ret['confidence'] = confidence.confidence_metrics(ret, mask=batch['seq_mask'][0])
    return ret, computed[0]

  compiled = jax.jit(run)
  params = {'params': tree['alphafold_iteration']}

  def step(batch, prev, dgram=None):
    substitute = dgram is not None
    if dgram is None:
      num_res = batch['aatype'].shape[-1]
      dgram = np.zeros((num_res, num_res, config.embeddings_and_evoformer.prev_pos.num_bins),
                       np.float32)
    out = compiled(params, batch, {k: prev[k] for k in PREV_KEYS}, dgram, substitute)
    return jax.tree.map(np.asarray, out)
  return step


def next_prev(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """What an iteration's outputs (reference's or jaxfold's) recycle into the next one."""
  return {'prev_pos': outputs['structure_module']['final_atom_positions'],
          'prev_msa_first_row': outputs['representations']['msa_first_row'],
          'prev_pair': outputs['representations']['pair']}


# ---------------------------------------------------------------------------------------------
# Rows.
# ---------------------------------------------------------------------------------------------

def output_rows(prefix: str, ours: Mapping[str, Any], ref: Mapping[str, Any],
                tolerances: Mapping[str, tuple[str, float]] | None) -> list[Row]:
  """Representations, final atom positions and confidence of one iteration's outputs.

  ours: jaxfold's outputs (confidence under 'confidence'); ref: AlphaFold's (at the top
  level). tolerances: (measure, tolerance) per output, as END_TO_END; None: measured only.
  """
  def judged(name):
    measure, tol = (tolerances or END_TO_END)[name]
    return measure, (tol if tolerances is not None else None)
  measure, tol = judged('representations')
  table = rows(f'{prefix}/representations', {k: ours['representations'][k] for k in REPRESENTATIONS},
               {k: ref['representations'][k] for k in REPRESENTATIONS}, tol, measure)
  measure, tol = judged('final_atom_positions')
  table += rows(f'{prefix}/final_atom_positions', ours['structure_module']['final_atom_positions'],
                ref['structure_module']['final_atom_positions'], tol, measure)
  for name in CONFIDENCE:
    if name in ref:
      measure, tol = judged(name)
      table += rows(f'{prefix}/{name}', ours['confidence'][name], ref[name], tol, measure)
  return table


def recycled_rows(prefix: str, ours: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
                  ) -> list[Row]:
  """What an iteration recycles (PREV_KEYS), at the teacher-forced tolerances."""
  measure, positions = TEACHER_FORCED['final_atom_positions']
  representations = TEACHER_FORCED['representations'][1]
  table = rows(f'{prefix}/recycled', {k: ours[k] for k in PREV_KEYS if k != 'prev_pos'},
               {k: ref[k] for k in PREV_KEYS if k != 'prev_pos'}, representations)
  return table + rows(f'{prefix}/recycled/prev_pos', ours['prev_pos'], ref['prev_pos'],
                      positions, measure)


def teacher_forced(step: Callable[..., tuple[dict, np.ndarray]],
                   reference: Sequence[Mapping[str, Any]],
                   ours_free: Sequence[Mapping[str, np.ndarray]], config: ModelConfig,
                   progress: Callable[[str], None] = lambda _: None
                   ) -> tuple[list[Row], list[RecycledBins]]:
  """Iteration 0 on what it recycles; every later iteration of jaxfold fed AlphaFold's
  recycled inputs, against AlphaFold's outputs of that iteration.

  reference: AlphaFold's iterations ({'batch', 'prev', 'dgram', 'out'}, see
  `alphafold_model.run_reference`); ours_free: jaxfold's free-running iterations (from
  `free_running`), whose second entry holds what iteration 0 recycled.
  Returns the rows and, per fed iteration, its recycled distogram against AlphaFold's
  (the same positions in both: flips there would be rounding of the squared distance).
  """
  table: list[Row] = []
  if len(reference) > 1:
    table += recycled_rows(f'{TEACHER_FORCED_ROWS}/iteration 0', ours_free[1]['prev'],
                           reference[1]['prev'])
  received: list[Mapping[str, Any]] = [{}]
  for k in range(1, len(reference)):
    progress(f'jaxfold teacher-forced: iteration {k} fed AlphaFold\'s iteration {k - 1}')
    ref = reference[k]
    out, dgram = step(ref['batch'], ref['prev'])
    table += output_rows(f'{TEACHER_FORCED_ROWS}/iteration {k}', out, ref['out'], TEACHER_FORCED)
    received.append({'prev': ref['prev'], 'dgram': dgram})
  return table, compare_iterations(received, reference, config)


def _unexplained(flip: Flip) -> str:
  return '' if flip.explained else ': NOT of rounding scale'


def free_running_rows(step: Callable[..., tuple[dict, np.ndarray]],
                      reference: Sequence[Mapping[str, Any]], ours: Mapping[str, Any],
                      ours_free: Sequence[Mapping[str, np.ndarray]], config: ModelConfig,
                      progress: Callable[[str], None] = lambda _: None
                      ) -> tuple[list[Row], dict[str, Any], list[str]]:
  """The end-to-end rows of the free-running models, judged with the detector.

  Returns (rows, details for the report, notes). Rows beyond tolerance carry
  `explained_by` when flips explain them (see the module docstring); the run fed AlphaFold's
  bins from the first flip adds its own rows, judged at the end-to-end tolerances.
  """
  detected = compare_iterations(ours_free, reference, config)
  table = output_rows(END_TO_END_ROWS, ours, reference[-1]['out'], END_TO_END)
  details: dict[str, Any] = {'free_running': [d.as_dict() for d in detected]}
  notes = [f'free running, iteration {d.iteration}: Cβ positions agree within '
           f'{d.position_difference:.1e} Å; {len(d.candidates)} recycled distances within '
           f'{d.window:.1e} Å of a bin edge, {len(d.flips)} in other bins; nearest to an '
           f'edge: {d.describe_nearest()}' for d in detected]
  flipped = next((d for d in detected if d.flips), None)
  if flipped is not None:
    # Later iterations of the free run inherit the first flip's consequences: not listed.
    notes += [f'free running, flip {f.describe()}{_unexplained(f)}' for f in flipped.flips]
  if all(r.within_tolerance for r in table):
    return table, details, notes
  if flipped is None:
    notes.append('end-to-end rows beyond tolerance, and no recycled distance flipped: '
                 'NOT explained')
    return table, details, notes
  first = flipped.iteration

  prev = ours_free[first]['prev']
  received: list[Mapping[str, Any]] = [{}] * first
  for k in range(first, len(reference)):
    progress(f"jaxfold free running from iteration {first}, fed AlphaFold's bins: "
             f'iteration {k}')
    out, dgram = step(reference[k]['batch'], prev, reference[k]['dgram'])
    received.append({'prev': prev, 'dgram': dgram})
    prev = next_prev(out)
  fed = compare_iterations(received, reference, config, start=first)
  fed_rows = output_rows(REFERENCE_BINS_ROWS, out, reference[-1]['out'], END_TO_END)
  flips = [f for d in fed for f in d.flips]
  details['fed_reference_bins'] = [d.as_dict() for d in fed]
  notes += [f"fed AlphaFold's bins, flip {f.describe()}{_unexplained(f)}" for f in flips
            if f.iteration > first]
  if all(f.explained for f in flips) and all(r.passed for r in fed_rows):
    cause = (f'{len(flips)} recycled-bin flip(s) of rounding scale: '
             + '; '.join(f'iteration {f.iteration} residues {f.residues[0] + 1}-'
                         f'{f.residues[1] + 1}' for f in flips))
    table = [r if r.within_tolerance else dataclasses.replace(r, explained_by=cause)
             for r in table]
    notes.append(f'end-to-end rows beyond tolerance are explained: {cause}')
  else:
    notes.append('end-to-end rows beyond tolerance are NOT explained by the flips: '
                 + ('a flip is not of rounding scale' if not all(f.explained for f in flips)
                    else "jaxfold fed AlphaFold's bins still disagrees"))
  return table + fed_rows, details, notes
