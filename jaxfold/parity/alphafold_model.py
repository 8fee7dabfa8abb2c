"""jaxfold's whole model against AlphaFold's, module by module, iteration by iteration and end
to end.

`compare` runs the live reference (DeepMind's code as packaged by `alphafold-colabfold`, see
`alphafold_reference`) and jaxfold on the same weights and processed features, and measures:
- each module fed the inputs the reference's module received in the last recycling iteration
  (recorded with Haiku method interception), its output against the reference's; DESIGN.md's
  1e-5 relative, except where noted;
- each recycling iteration teacher-forced, and the free-running models end to end, judged with
  the recycled-bin flip detector (`recycling`: why and how);
- AlphaFold against itself with another op order: the envelope the free-running rows are read
  against, measured.
Needs the test extra (haiku, alphafold-colabfold); jaxfold imports it only when called.
"""

import copy
import functools
import os
import pathlib
import pickle
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxfold.convert.haiku_tree import from_haiku
from jaxfold.model import confidence, config as model_config, evoformer, heads, structure_module
from jaxfold.model.alphafold import AlphaFold
from jaxfold.model.global_config import GlobalConfig
from jaxfold.model.template_embedding import TEMPLATE_PAIR_FEATURES, TemplateEmbedding
from jaxfold.parity import recycling
from jaxfold.parity.agreement import Comparison, Row, rows
from jaxfold.parity.alphafold_reference import (config_from_reference, reference_config,
                                                reference_params)
from jaxfold.parity.recycling import STRUCTURE_MODULE_TOLERANCE

# AlphaFold's inference default: attention and transitions in chunks of 4 rows, other kernels
# than the single chunk of the comparison's main reference run.
ENVELOPE_SUBBATCH_SIZE = 4
ENVELOPE_ROWS = 'AlphaFold against itself (subbatch 4)'
QUERY73_FEATURES = 'data/features/alphafold_feature_dict.pickle'


# ---------------------------------------------------------------------------------------------
# Inputs: shared data, processed features, weights.
# ---------------------------------------------------------------------------------------------

def shared_dir() -> pathlib.Path:
  """The shared data folder: $JAXFOLD_SHARED, else `shared` beside the source checkout."""
  path = pathlib.Path(os.environ.get(
      'JAXFOLD_SHARED', pathlib.Path(__file__).resolve().parents[2].parent / 'shared'))
  if not path.is_dir():
    raise FileNotFoundError(f'{path}: shared data folder not found (set JAXFOLD_SHARED or pass '
                            f'--batch)')
  return path


def alphafold_processed_features(raw: Mapping[str, np.ndarray], af_config, seed: int = 0
                                 ) -> dict[str, np.ndarray]:
  """AlphaFold's own feature processing (`RunModel.process_features`) of a raw feature dict."""
  from alphafold.model import features  # pylint: disable=import-outside-toplevel
  return features.np_example_to_features(dict(raw), af_config, random_seed=seed)


def query73_features(af_config, seed: int = 0) -> dict[str, np.ndarray]:
  """The real query73 example of the shared data, processed by AlphaFold's pipeline."""
  with open(shared_dir() / QUERY73_FEATURES, 'rb') as f:
    return alphafold_processed_features(pickle.load(f), af_config, seed)


def alphafold_config(preset: str, num_recycle: int, max_msa_clusters: int | None = None,
                     max_extra_msa: int | None = None):
  """The reference's ConfigDict for `preset` (DeepMind's float32 settings), recycling set."""
  cfg = reference_config(preset, one_chunk=True)
  cfg.model.num_recycle = cfg.data.common.num_recycle = num_recycle
  if max_msa_clusters is not None:
    cfg.data.eval.max_msa_clusters = max_msa_clusters
  if max_extra_msa is not None:
    cfg.data.common.max_extra_msa = max_extra_msa
  return cfg


# ---------------------------------------------------------------------------------------------
# The reference, one recycling iteration per call, recording module inputs.
# ---------------------------------------------------------------------------------------------

def _record(store: dict, name: str, value: Any, keep: str = 'first') -> None:
  """Copies `value` out of the running computation (also inside a scan) into store[name]."""
  def save(v):
    if keep == 'last' or name not in store:
      store[name] = jax.tree.map(np.asarray, v)
  jax.debug.callback(save, value, ordered=True)


def _reference_interceptor(store: dict, modules: bool):
  """Records the recycled distogram AlphaFold embeds ('recycled_dgram', the input of its
  `prev_pos_linear`) and, with `modules`, the calls `module_rows` feeds jaxfold."""
  from alphafold.model import modules as af  # pylint: disable=import-outside-toplevel

  def interceptor(next_f, args, kwargs, context):
    out = next_f(*args, **kwargs)
    if context.method_name != '__call__':
      return out
    if context.module.module_name.endswith('/prev_pos_linear'):
      _record(store, 'recycled_dgram', args[0])
    if not modules:
      return out
    if isinstance(context.module, af.EvoformerIteration):
      call = {'activations': kwargs['activations'], 'masks': kwargs['masks'], 'out': out}
      if context.module.is_extra_msa:
        _record(store, 'extra_msa_stack[first]', call)
      else:
        _record(store, 'evoformer_iteration[first]', call)
        _record(store, 'evoformer_iteration[last]', call, keep='last')
    elif isinstance(context.module, af.PredictedAlignedErrorHead):
      # ColabFold's model replaces this head's output by the PAE matrix it derives.
      _record(store, 'predicted_aligned_error_head', out)
    elif isinstance(context.module, af.TemplateEmbedding):
      query, template_batch, mask_2d = args[:3]
      _record(store, 'template_embedding', {'query': query, 'templates': template_batch,
                                            'mask_2d': mask_2d, 'out': out})
    return out
  return interceptor


def _reference_fn(af_config, record: dict | None, modules: bool = True):
  from alphafold.model import modules as af  # pylint: disable=import-outside-toplevel
  import haiku as hk  # pylint: disable=import-outside-toplevel

  def fn(batch, prev):
    model = af.AlphaFold(af_config.model)
    if record is None:
      return model({**batch, 'prev': prev}, is_training=False, return_representations=True)
    with hk.experimental.intercept_methods(_reference_interceptor(record, modules)):
      return model({**batch, 'prev': prev}, is_training=False, return_representations=True)
  return fn


def _zero_prev(num_res: int, af_config) -> dict[str, np.ndarray]:
  evo = af_config.model.embeddings_and_evoformer
  return {'prev_pos': np.zeros((num_res, 37, 3), np.float32),
          'prev_msa_first_row': np.zeros((num_res, evo.msa_channel), np.float32),
          'prev_pair': np.zeros((num_res, num_res, evo.pair_channel), np.float32)}


def perturbed_weights(af_config, batch: Mapping[str, np.ndarray], seed: int = 0
                      ) -> dict[str, dict[str, np.ndarray]]:
  """AlphaFold's Haiku parameters for `af_config`, its initial values perturbed so that no
  layer is zero (`reference_params(from_shapes=True)`), shaped by one slice of `batch`."""
  probe = {'batch': {k: np.asarray(v)[:1] for k, v in batch.items()},
           'prev': _zero_prev(np.shape(batch['aatype'])[1], af_config)}
  return reference_params(_reference_fn(af_config, None), probe, seed, from_shapes=True)


def run_reference(af_config, haiku_params, batch, num_recycle: int, *, modules: bool = True,
                  nudge: Callable[[int, dict], dict] | None = None) -> list[dict[str, Any]]:
  """AlphaFold free running, one record per iteration (ColabFold's model runs one per call).

  Each record holds 'batch' (the iteration's slice, ensemble axis kept), 'prev' (the recycled
  inputs it received), 'dgram' (the recycled distogram it embedded) and 'out' (its outputs,
  as numpy); with `modules` the last one also 'modules', the module calls `module_rows`
  feeds jaxfold. `nudge(iteration, prev) -> prev` changes what an iteration receives: a
  test's way to move a recycled distance across a bin edge, as another machine's rounding may.
  """
  import haiku as hk  # pylint: disable=import-outside-toplevel
  record: dict = {}
  apply = jax.jit(hk.transform(_reference_fn(af_config, record, modules)).apply)
  prev = _zero_prev(batch['aatype'].shape[1], af_config)
  slices = batch['aatype'].shape[0]
  iterations = []
  for r in range(num_recycle + 1):
    record.clear()
    if nudge is not None and r > 0:
      prev = nudge(r, prev)
    # Iteration r reads slice r (resample_msa_in_recycling); past the end, the last one.
    sliced = {k: v[min(r, slices - 1)][None] for k, v in batch.items()}
    out = jax.tree.map(np.asarray, apply(haiku_params, jax.random.key(0), sliced, prev))
    # The recording callbacks run asynchronously: let them finish.
    jax.effects_barrier()
    iterations.append({'batch': sliced, 'prev': prev, 'dgram': record.pop('recycled_dgram'),
                       'out': out, **({'modules': dict(record)} if r == num_recycle else {})})
    prev = out['prev']
  return iterations


# ---------------------------------------------------------------------------------------------
# jaxfold, end to end and module by module.
# ---------------------------------------------------------------------------------------------

def _block(stacked: Mapping[str, Any], index: int) -> Any:
  return jax.tree.map(lambda leaf: leaf[index], stacked)


def _apply(module: nn.Module, params: Any, *args) -> Any:
  return jax.tree.map(np.asarray, jax.jit(module.apply)({'params': params}, *args))


def module_rows(cfg: model_config.ModelConfig, tree: Mapping[str, Any], last: Mapping[str, Any],
                progress: Callable[[str], None] = lambda _: None) -> list[Row]:
  """Each module of jaxfold fed the reference's recorded inputs of its last iteration (a
  `run_reference` record). The whole iteration fed them is `recycling.teacher_forced`'s."""
  evo_cfg, head_cfg = cfg.embeddings_and_evoformer, cfg.heads
  iteration = tree['alphafold_iteration']
  evo_params = iteration['evoformer']
  ref, record = last['out'], last['modules']
  member = {**{k: v[0] for k, v in last['batch'].items()}, **last['prev']}
  reps = ref['representations']
  table: list[Row] = []

  if 'template_embedding' in record:
    progress('module: template embedding')
    rec = record['template_embedding']
    module = TemplateEmbedding(evo_cfg.template)
    templates = {k: rec['templates'][k] for k in TEMPLATE_PAIR_FEATURES + ('template_mask',)}
    out = _apply(module, evo_params['template_embedding'], rec['query'], templates,
                 rec['mask_2d'])
    table += rows('evoformer/template_embedding', out, rec['out'])

  for name, key, is_extra, index in (
      ('evoformer/extra_msa_stack[0]', 'extra_msa_stack[first]', True, 0),
      ('evoformer/evoformer_iteration[0]', 'evoformer_iteration[first]', False, 0),
      (f'evoformer/evoformer_iteration[{evo_cfg.evoformer_num_block - 1}]',
       'evoformer_iteration[last]', False, evo_cfg.evoformer_num_block - 1)):
    progress(f'module: {name}')
    rec = record[key]
    block = evoformer.EvoformerIteration(evo_cfg.evoformer, is_extra)
    stack = 'extra_msa_stack' if is_extra else 'evoformer_iteration'
    out = _apply(block, _block(evo_params[stack], index), rec['activations'], rec['masks'])
    table += rows(name, out, rec['out'])

  progress('module: structure module')
  sm = structure_module.StructureModule(head_cfg.structure_module)
  out = _apply(sm, iteration['structure_module'], {k: reps[k] for k in ('single', 'pair')},
               member)
  # Without losses AlphaFold's structure module returns only these two of its outputs.
  table += rows('structure_module', {'final_atom_positions': out['final_atom_positions'],
                                     'act': out['representations']['structure_module']},
                {'final_atom_positions': ref['structure_module']['final_atom_positions'],
                 'act': reps['structure_module']}, STRUCTURE_MODULE_TOLERANCE)

  progress('module: heads')
  head_modules = (
      ('masked_msa', heads.MaskedMsaHead(head_cfg.masked_msa), reps['msa']),
      ('distogram', heads.DistogramHead(head_cfg.distogram), reps['pair']),
      ('experimentally_resolved',
       heads.ExperimentallyResolvedHead(head_cfg.experimentally_resolved), reps['single']),
      ('predicted_lddt', heads.PredictedLddtHead(head_cfg.predicted_lddt),
       reps['structure_module']),
      ('predicted_aligned_error',
       heads.PredictedAlignedErrorHead(head_cfg.predicted_aligned_error), reps['pair']))
  head_outputs = {k: ref[k] for k in ('masked_msa', 'distogram', 'experimentally_resolved',
                                      'predicted_lddt')}
  if 'predicted_aligned_error_head' in record:
    head_outputs['predicted_aligned_error'] = record['predicted_aligned_error_head']
  for name, module, act in head_modules:
    if f'{name}_head' in iteration:
      table += rows(f'{name}_head', _apply(module, iteration[f'{name}_head'], act)['logits'],
                    head_outputs[name]['logits'])

  # Confidence metrics computed from the reference's own logits.
  metrics = confidence.confidence_metrics(
      {k: head_outputs[k] for k in ('predicted_lddt', 'predicted_aligned_error')
       if k in head_outputs}, mask=member['seq_mask'])
  for name in ('plddt', 'predicted_aligned_error', 'ptm'):
    if name in metrics:
      table += rows(f'confidence/{name}', metrics[name], ref[name])
  return table


def run_jaxfold(config: model_config.ModelConfig, tree: Mapping[str, Any],
                batch: Mapping[str, np.ndarray], num_recycle: int,
                global_config: GlobalConfig = GlobalConfig()) -> dict[str, Any]:
  """jaxfold's recycling model with representations, as numpy."""
  model = AlphaFold(config, global_config)
  run = jax.jit(functools.partial(model.apply, num_recycle=num_recycle,
                                  return_representations=True))
  return jax.tree.map(np.asarray, run({'params': tree}, batch))


def compare(preset: str = 'model_1_ptm', *, num_recycle: int = 2,
            params: Mapping[str, Mapping[str, np.ndarray]] | None = None,
            batch: Mapping[str, np.ndarray] | None = None,
            max_msa_clusters: int | None = None, max_extra_msa: int | None = None,
            config: model_config.AlphaFoldConfig | None = None, seed: int = 0,
            bfloat16: bool = False, envelope: bool = True,
            tree: Mapping[str, Any] | None = None,
            nudge: Callable[[int, dict], dict] | None = None,
            progress: Callable[[str], None] = lambda _: None) -> Comparison:
  """Runs the reference and jaxfold side by side and measures every row.

  Args:
    preset: one of jaxfold.model.config.PRESETS.
    num_recycle: recycling iterations after the first pass (both models).
    params: AlphaFold's Haiku parameters ({'alphafold/...': {name: array}}); by default
      perturbed random weights (every layer non-zero).
    batch: processed features with the leading recycle axis; by default the shared
      query73 example processed by AlphaFold's pipeline with the preset's data config.
    max_msa_clusters / max_extra_msa: override the preset's MSA sizes for the default batch.
    config: a jaxfold config to compare instead of the full preset (e.g. a reduced one);
      the reference is given the same depths.
    seed: the random weights' and the feature processing's seed.
    bfloat16: also run jaxfold in bfloat16 and add its drift from float32 (rows without
      a tolerance: measured, not judged).
    envelope: also run AlphaFold against itself (another op order), measured.
    tree: jaxfold's parameters, when they are not `params` re-nested (a negative control).
    nudge: fn(iteration, prev) -> prev applied to what AlphaFold's iterations after the
      first receive (`run_reference`), standing in for another machine's rounding.
    progress: called with a line before each stage.

  Returns:
    A Comparison: the module rows; 'teacher-forced/iteration k/...'; 'end to end/...' (free
    running, judged with `recycling.free_running_rows`); 'AlphaFold against itself...'; notes
    listing what the detector found, and 'recycling' in its report.
  """
  seconds: dict[str, float] = {}
  clock = time.perf_counter()
  af_cfg = alphafold_config(preset, num_recycle, max_msa_clusters, max_extra_msa)
  if config is not None:
    apply_depths(af_cfg, config)
  cfg = config_from_reference(model_config.AlphaFoldConfig, af_cfg)
  if batch is None:
    progress('features: query73 through AlphaFold\'s pipeline')
    batch = query73_features(af_cfg, seed)
  batch = {k: np.asarray(v) for k, v in batch.items()}
  num_res = batch['aatype'].shape[1]
  if params is None:
    progress('weights: perturbed random')
    params = perturbed_weights(af_cfg, batch, seed)
  seconds['inputs'] = time.perf_counter() - clock

  def timed(stage, fn, *args, **kwargs):
    progress(stage)
    clock = time.perf_counter()
    value = fn(*args, **kwargs)
    seconds[stage.split(':')[0]] = time.perf_counter() - clock
    return value

  reference = timed(f'reference: AlphaFold, {num_recycle + 1} iterations', run_reference,
                    af_cfg, params, batch, num_recycle, nudge=nudge)
  tree = from_haiku(params, root='alphafold') if tree is None else tree
  ours, ours_free = timed(f'jaxfold: {num_recycle + 1} iterations, free running',
                          recycling.free_running, cfg.model, tree, batch, num_recycle)
  table = timed('modules', module_rows, cfg.model, tree, reference[-1], progress)
  step = recycling.iteration_step(cfg.model, tree)
  forced, forced_bins = timed('teacher-forced', recycling.teacher_forced, step, reference,
                              ours_free, cfg.model, progress)
  free, details, notes = timed('free running', recycling.free_running_rows, step, reference,
                               ours, ours_free, cfg.model, progress)
  table += forced + free
  details['teacher_forced'] = [b.as_dict() for b in forced_bins]
  notes += [f'teacher-forced, {f.describe()}' for b in forced_bins for f in b.flips]
  template, note = recycling.template_distogram(batch, cfg.model)
  if template is not None:
    details['template_distogram_edge_margin'] = template
    notes.append(note)
  if envelope:
    again_cfg = copy.deepcopy(af_cfg)
    again_cfg.model.global_config.subbatch_size = ENVELOPE_SUBBATCH_SIZE
    again = timed(f'reference again: AlphaFold in subbatches of {ENVELOPE_SUBBATCH_SIZE}',
                  run_reference, again_cfg, params, batch, num_recycle, modules=False, nudge=nudge)
    table += recycling.output_rows(ENVELOPE_ROWS, _as_ours(again[-1]['out']),
                                   reference[-1]['out'], None)
    envelope_bins = recycling.compare_iterations(again, reference, cfg.model)
    details['envelope'] = [b.as_dict() for b in envelope_bins]
    notes += [f'AlphaFold against itself, iteration {b.iteration}: Cβ positions agree within '
              f'{b.position_difference:.1e} Å, {len(b.flips)} recycled distances in other bins'
              for b in envelope_bins]
  if bfloat16:
    half = timed(f'jaxfold in bfloat16: {num_recycle + 1} iterations', run_jaxfold, cfg.model,
                 tree, batch, num_recycle, GlobalConfig(dtype='bfloat16'))
    table += recycling.output_rows('bfloat16 drift from float32', half,
                                   {**ours, **ours['confidence']}, None)
  return Comparison('AlphaFold (live)', preset, num_recycle, num_res, table, seconds,
                    tuple(notes), {'recycling': details})


def _as_ours(out: Mapping[str, Any]) -> dict[str, Any]:
  """AlphaFold's outputs laid out as jaxfold's: confidence metrics under 'confidence'."""
  return {**out, 'confidence': {k: out[k] for k in recycling.CONFIDENCE if k in out}}


def apply_depths(af_cfg, config: model_config.AlphaFoldConfig) -> None:
  """Gives the reference ConfigDict the stack depths of a (reduced) jaxfold config."""
  evo, af_evo = config.model.embeddings_and_evoformer, af_cfg.model.embeddings_and_evoformer
  af_evo.evoformer_num_block = evo.evoformer_num_block
  af_evo.extra_msa_stack_num_block = evo.extra_msa_stack_num_block
  af_evo.template.template_pair_stack.num_block = evo.template.template_pair_stack.num_block
  af_cfg.model.heads.structure_module.num_layer = config.model.heads.structure_module.num_layer
