"""The `jaxfold` command: convert weights, predict structures, measure parity.

Every subcommand has --help; bad input ends with one line `jaxfold: error: ...` on stderr
and exit status 2, and leaves no partial output (writers go through temporary files).
"""

import argparse
import json
import logging
import os
import pathlib
import pickle
import sys
import time
import traceback
from collections.abc import Sequence

import numpy as np

from jaxfold.common.atomic_file import atomic_write, is_remote, run_path
from jaxfold.common.errors import JaxfoldError


class _Progress:
  """Stage lines on stderr with the time since the command started."""

  def __init__(self, quiet: bool = False):
    self.start = time.perf_counter()
    self.quiet = quiet

  def __call__(self, message: str) -> None:
    if not self.quiet:
      print(f'[{time.perf_counter() - self.start:7.1f}s] {message}', file=sys.stderr, flush=True)


def _preset(name: str):
  from jaxfold.model import config  # pylint: disable=import-outside-toplevel
  return config.preset(name)


def _convert(args: argparse.Namespace) -> None:
  from jaxfold import inference  # pylint: disable=import-outside-toplevel
  from jaxfold.convert import alphafold_npz, formats, schema  # pylint: disable=import-outside-toplevel
  if args.random:
    if args.dst is not None:
      raise ValueError(f'{args.src}: --random writes one path: give only the output')
    if args.preset is None:
      raise ValueError(f'{args.src}: --random needs --preset (the model to make weights for)')
    args.src, args.dst = None, args.src
  elif args.dst is None:
    raise ValueError(f'{args.src}: give the output path too (jaxfold convert SRC DST)')
  if os.path.lexists(args.dst) and not args.overwrite:
    raise FileExistsError(f'{args.dst}: exists (pass --overwrite to replace it)')
  _check_parent(args.dst)
  progress = _Progress(args.quiet)
  if args.random:
    preset_name, config = args.preset, _preset(args.preset)
    progress(f'drawing random weights of {preset_name} (seed {args.seed})')
    tree = schema.random_parameters(config.model, args.seed)
  else:
    progress(f'reading {args.src}')
    tree, preset_name, config = inference.load_params(
        args.src, args.preset, ema=args.ema, trusted=args.trust_pickle, finite=False)
  non_finite = alphafold_npz.first_non_finite(tree)
  if non_finite:  # converted bit for bit all the same: the file is the user's to judge
    logging.warning('%s: parameter %s holds %s non-finite values (NaN or inf); converting them '
                    'as they are', args.src, non_finite[0], f'{non_finite[1]:,}')
  if config != _preset(preset_name) and not formats.records_config(args.dst):
    logging.warning('%s: the model is not preset %s as it stands, and %s cannot record its '
                    'configuration; convert to a jaxfold checkpoint (a directory) to predict '
                    'with it', args.src, preset_name, args.dst)
  arrays = alphafold_npz.flat_keys(tree)
  progress(f'{len(arrays)} tensors, {sum(a.size for a in arrays.values()):,} parameters fit '
           f'{preset_name}; writing {args.dst}')
  formats.save_params(tree, args.dst, preset=preset_name, overwrite=args.overwrite,
                      config=config)
  progress('done')


def _train(args: argparse.Namespace) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from jaxfold.train import checkpoints, config as config_lib, distributed, loop, sharding
  distributed.initialize(args.coordinator, args.num_processes, args.process_id)
  config = config_lib.load(args.config)
  changes = list(args.set or [])
  if args.mesh:
    changes.append(f'mesh={sharding.parse_mesh(args.mesh)!r}')
  if args.sharding:
    changes.append(f'sharding={args.sharding}')
  if args.data:
    first = next((i for i, s in enumerate(config.data) if not s.distillation), None)
    if first is None:
      raise ValueError(f'{args.config}: --data replaces the PDB source, but every data source '
                       'is self-distillation')
    changes.insert(0, f'data.{first}.path={args.data}')
  if args.steps is not None:
    changes.append(f'steps={args.steps}')
  if args.checkpoint_every is not None:
    changes.append(f'checkpoint_every={args.checkpoint_every}')
  config = config_lib.override(config, changes)
  for source in config.data:
    if not pathlib.Path(source.path).is_dir():
      raise FileNotFoundError(f'{source.path or "(empty)"}: data source is not a directory '
                              '(build one with `jaxfold data build`, pass it with --data)')
  if args.init is not None:
    if not run_path(args.init).exists():
      raise FileNotFoundError(f'{args.init}: no such file or directory (--init)')
    if is_remote(args.init) and not checkpoints.is_training_checkpoint(args.init):
      raise ValueError(f'{args.init}: from Cloud Storage --init reads training checkpoints '
                       '(<workdir>/checkpoints/<step>); copy .npz / .pt weights to each worker')
  progress = _Progress(args.quiet or jax.process_index() > 0)  # one voice for all processes
  summary = loop.train(config, args.workdir, init=args.init, quiet=args.quiet, progress=progress)
  progress(f'step {summary.step}, {summary.skipped_steps} skipped steps; run in {args.workdir}')


def _check_template_date(args: argparse.Namespace) -> None:
  """A --max-template-date that is no date fails before any file is read, naming the flag."""
  from jaxfold.data import templates  # pylint: disable=import-outside-toplevel
  if args.max_template_date is not None:
    templates.parse_date(args.max_template_date, '--max-template-date')


def _raw_features(args: argparse.Namespace, progress: '_Progress'):
  """Raw features of --fasta / --msa-dir / --mmcif-dir, skipped templates reported."""
  from jaxfold.data import pipeline  # pylint: disable=import-outside-toplevel
  _check_template_date(args)
  progress(f'reading {args.fasta}, alignments in {args.msa_dir}'
           + (f', templates from {args.mmcif_dir}' if args.mmcif_dir else ''))
  made = pipeline.raw_features(args.fasta, args.msa_dir, args.mmcif_dir,
                               max_template_date=args.max_template_date)
  features = made.features
  progress(f'{features["msa"].shape[0]} MSA rows, '
           f'{features["template_aatype"].shape[0]} templates'
           + (f' ({len(made.skipped_templates)} hits skipped)' if made.skipped_templates else ''))
  return features


def _prediction_batch(args: argparse.Namespace, config, progress: '_Progress'
                      ) -> dict[str, np.ndarray]:
  """The model's batch of --batch (its recycling slices checked against --num-recycle),
  --features or --fasta (one slice per iteration: --num-recycle's, else the model's)."""
  from jaxfold import inference  # pylint: disable=import-outside-toplevel
  if args.batch:
    batch = inference.read_batch(args.batch, config, args.batch_layout)
    inference.batch_recycling(batch, args.num_recycle, args.batch)
    return batch
  if args.features:
    raw, source = inference.read_features(args.features, trusted=args.trust_pickle), args.features
  else:
    raw, source = _raw_features(args, progress), args.fasta
  batch = inference.make_batch(raw, config, max_msa_clusters=args.max_msa_clusters,
                               max_extra_msa=args.max_extra_msa, seed=args.seed,
                               num_recycle=args.num_recycle, source=source)
  asked = args.max_msa_clusters or config.data.eval.max_msa_clusters
  reduced = ''
  if config.data.common.reduce_msa_clusters_by_max_templates:  # AlphaFold's rule
    reduced = (f' (of {asked}: the {config.data.eval.max_templates} template rows join the MSA '
               'in the model)')
  progress(f'processed features: {batch["msa_feat"].shape[1]} MSA clusters{reduced}, '
           f'{batch["extra_msa"].shape[1]} extra sequences (seed {args.seed})')
  return batch


def _count(number: int, noun: str) -> str:
  """'1 recycling iteration', '0 recycling iterations'."""
  return f'{number} {noun}' + ('' if number == 1 else 's')


def _predict(args: argparse.Namespace) -> None:
  from jaxfold import inference, memory_plan, prediction_outputs  # pylint: disable=import-outside-toplevel
  from jaxfold.model.alphafold import AlphaFold  # pylint: disable=import-outside-toplevel
  from jaxfold.model.global_config import GlobalConfig  # pylint: disable=import-outside-toplevel
  from jaxfold.train import sharding  # pylint: disable=import-outside-toplevel
  progress = _Progress(args.quiet)
  name = args.name or pathlib.Path(args.batch or args.features or args.fasta).stem
  # Fail before the model runs, not after.
  prediction_outputs.check_destination(args.output, name, args.overwrite)
  for path in (args.batch, args.features, args.fasta):
    if path is not None and not pathlib.Path(path).is_file():
      raise FileNotFoundError(f'{path}: no such file')
  if args.fasta and args.msa_dir is None:
    raise ValueError(f'{args.fasta}: --fasta needs --msa-dir (its precomputed alignments)')
  for flag, value in (('--subbatch-size', args.subbatch_size),
                      ('--pair-chunk-size', args.pair_chunk_size)):
    if value < 0:
      raise ValueError(f'{flag} {value}: must be 0 (one piece) or more')
  if args.relax != 'none':
    from jaxfold import relax  # pylint: disable=import-outside-toplevel
    relax.check_available()
    relaxed_path = pathlib.Path(args.output) / f'{name}_relaxed.pdb'
    if relaxed_path.exists() and not args.overwrite:
      raise FileExistsError(f'{relaxed_path}: exists (pass --overwrite to replace it)')
  budget = None if args.budget is None else memory_plan.parse_bytes(args.budget)
  axes = sharding.parse_mesh(args.mesh) if args.mesh else ()
  mesh = inference.prediction_mesh(axes) if axes else None
  preset_name, config = inference.weights_config(args.params, args.preset)
  if config is None:  # weights that do not say their model: this fails, naming what they fit
    inference.load_params(args.params, None)
  # The inputs are read and checked before the (slower) weights.
  batch = _prediction_batch(args, config, progress)
  num_recycle = inference.batch_recycling(batch)
  progress(f'reading parameters {args.params}')
  model = inference.load_model(args.params, preset_name)

  def program(global_config):
    return inference.jit_prediction(inference.prediction_fn(
        AlphaFold(config.model, global_config), num_recycle, args.save_representations,
        args.save_logits), mesh)

  compiled = None
  if budget is None:
    global_config = GlobalConfig(dtype=args.dtype, subbatch_size=args.subbatch_size or None,
                                 attention=args.attention,
                                 pair_chunk_size=args.pair_chunk_size or None)
  else:  # the chosen program is the one that runs: it compiles once
    shapes = memory_plan.Shapes(preset_name, batch['aatype'].shape[1],
                                batch['msa_feat'].shape[1], batch['extra_msa'].shape[1],
                                batch.get('template_mask', np.zeros((1, 0))).shape[1],
                                num_recycle, args.dtype, logits=args.save_logits, mesh=axes)
    progress(f'choosing settings that fit {args.budget} (one compiled plan per settings)')

    def planner(shapes, settings):
      gc = memory_plan.global_config(settings, args.dtype)
      return memory_plan.compiled_plan(shapes, settings, gc, program(gc), (model.params, batch))

    chosen = memory_plan.choose(shapes, budget, progress, planner)
    global_config, compiled = chosen.global_config, chosen.compiled
  progress(f'predicting {name}: {batch["aatype"].shape[1]} residues, {preset_name}, '
           f'{_count(num_recycle, "recycling iteration")}, {args.dtype}, subbatch '
           f'{global_config.subbatch_size or "off"}, pair chunk '
           f'{global_config.pair_chunk_size or "off"}, {global_config.attention} attention'
           + (f', on {sharding.describe(mesh, "dap")}' if mesh else ''))
  outputs = inference.predict(model, batch, global_config=global_config,
                              save_representations=args.save_representations,
                              save_logits=args.save_logits, mesh=mesh, compiled=compiled,
                              progress=progress)
  progress(f'writing {args.output}')
  written = inference.write(args.output, name, batch, outputs,
                            save_representations=args.save_representations,
                            overwrite=args.overwrite)
  metrics = outputs['confidence']
  summary = f'mean pLDDT {float(np.mean(metrics["plddt"])):.2f}'
  if 'ptm' in metrics:
    summary += f', pTM {float(metrics["ptm"]):.4f}'
  written = list(written.values())
  if args.relax != 'none':  # one model per run: 'best' and 'all' relax the same one
    written.append(relaxed_path)
    _relax_file(written[0], relaxed_path, progress, use_gpu=args.relax_gpu)
  progress(f'done: {summary}; wrote {", ".join(str(p) for p in written)}')


def _relax_file(source: pathlib.Path, destination: pathlib.Path, progress: '_Progress', *,
                use_gpu: bool | None, config=None) -> None:
  """Relaxes the PDB file `source` into `destination` (written whole or not at all)."""
  from jaxfold import relax  # pylint: disable=import-outside-toplevel
  progress(f'relaxing {source} (Amber, AlphaFold\'s protocol)')
  try:
    relaxed = relax.relax_pdb(source.read_text(), config or relax.RelaxConfig(),
                              use_gpu=use_gpu, progress=progress)
  except JaxfoldError as error:
    raise JaxfoldError(f'{source}: {error}') from error
  except Exception as error:  # pylint: disable=broad-exception-caught
    # OpenMM and pdbfixer fail on geometry they cannot handle (e.g. atoms on top of each
    # other, as random weights predict: acos of a zero-length bond in addHydrogens).
    raise JaxfoldError(f'{source}: Amber relaxation failed ({_raised_at(error)}); is the '
                       'structure physically sensible?') from error
  with atomic_write(destination, 'w') as f:
    f.write(relaxed.pdb)
  progress(f'relaxed in {relaxed.seconds:.1f} s on {relaxed.platform}: energy '
           f'{relaxed.initial_energy:.1f} -> {relaxed.final_energy:.1f} kcal/mol, heavy atoms '
           f'moved {relaxed.heavy_atom_rmsd:.3f} Å RMS, {len(relaxed.violations_after)} '
           f'residues still violating; wrote {destination}')


def _relax(args: argparse.Namespace) -> None:
  from jaxfold import relax  # pylint: disable=import-outside-toplevel
  source = pathlib.Path(args.input)
  if not source.is_file():
    raise FileNotFoundError(f'{source}: no such file')
  if os.path.lexists(args.output) and not args.overwrite:
    raise FileExistsError(f'{args.output}: exists (pass --overwrite to replace it)')
  _check_parent(args.output)
  relax.check_available()
  config = relax.RelaxConfig(max_outer_iterations=args.max_outer_iterations,
                             exclude_residues=tuple(args.exclude_residues or ()))
  _relax_file(source, pathlib.Path(args.output), _Progress(args.quiet), use_gpu=args.gpu,
              config=config)


def _plan(args: argparse.Namespace) -> None:
  from jaxfold import inference, memory_plan  # pylint: disable=import-outside-toplevel
  from jaxfold.train import sharding  # pylint: disable=import-outside-toplevel
  if args.train:
    for flag, given in (('--length', args.length is not None), ('--longest', args.longest),
                        ('--logits', args.logits)):
      if given:
        raise ValueError(f'--train plans a training step: give --crop, not {flag}')
    if args.crop is None:
      raise ValueError('--train needs --crop (the residues of a training crop)')
  elif args.crop is not None:
    raise ValueError('--crop sizes a training step: add --train, or give --length')
  if args.longest and args.budget is None:
    raise ValueError('--longest needs --budget (the memory to fit)')
  if args.length is None and not args.longest and not args.train:
    raise ValueError('--length is required (or --longest with --budget)')
  if args.settings and args.budget and not args.longest:
    raise ValueError('--settings and --budget: give one (--budget chooses the settings)')
  if args.settings:  # an unknown name fails before any compilation
    memory_plan.global_config(args.settings, train=args.train)
  budget = None if args.budget is None else memory_plan.parse_bytes(args.budget)
  mesh = sharding.parse_mesh(args.mesh) if args.mesh else ()
  if mesh:  # a mesh the devices cannot hold fails before any compilation
    if args.train:
      sharding.make_mesh(mesh, memory_plan.layout(mesh))
    else:
      inference.prediction_mesh(mesh)
  progress = _Progress(args.quiet)
  length = args.crop if args.train else args.length
  shapes = memory_plan.preset_shapes(
      args.preset, memory_plan.LENGTH_STEP if length is None else length,
      msa_clusters=args.msa_clusters, extra_msa=args.extra_msa, templates=args.templates,
      num_recycle=args.num_recycle, dtype=args.dtype, logits=args.logits, train=args.train,
      mesh=mesh)
  if args.longest:
    progress(f'longest sequence within {args.budget}: planning lengths '
             f'(one compilation each, about 20-60 s)')
    result = memory_plan.longest(shapes, budget, args.settings or 'leanest', progress)
  elif budget is not None:
    result = memory_plan.choose(shapes, budget, progress)
  else:
    progress(f'compiling the {"step" if args.train else "prediction"} of {shapes.describe()}')
    result = memory_plan.plan(shapes, args.settings or memory_plan.DEFAULT_SETTINGS)
  if args.json:
    print(json.dumps({**result.as_dict(), 'budget_bytes': budget, 'longest': args.longest}))
    return
  gc = result.global_config
  print(result.shapes.describe())
  print(f'settings {result.settings}: subbatch {gc.subbatch_size or "off"}, pair chunk '
        f'{gc.pair_chunk_size or "off"}, attention {gc.attention}'
        + (f' (blocks of {gc.attention_chunk_size})' if gc.attention == 'chunked' else '')
        + (', every block rematerialised' if gc.use_remat else ''))
  for label, value in (('arguments', result.argument_bytes), ('outputs', result.output_bytes),
                       ('temporaries', result.temp_bytes), ('aliased', -result.alias_bytes),
                       ('total', result.total_bytes)):
    print(f'  {label:<12} {memory_plan.gib(value):>12}')
  if args.longest:
    print(f'longest within {args.budget}: {result.shapes.length:,} residues '
          f'(to {memory_plan.LENGTH_STEP}; {result.shapes.length + memory_plan.LENGTH_STEP:,} '
          f'do not fit)')


def _data_features(args: argparse.Namespace) -> None:
  if os.path.lexists(args.output) and not args.overwrite:
    raise FileExistsError(f'{args.output}: exists (pass --overwrite to replace it)')
  _check_parent(args.output)
  progress = _Progress(args.quiet)
  features = _raw_features(args, progress)
  with atomic_write(args.output) as f:
    pickle.dump(features, f, protocol=4)
  progress(f'wrote {args.output}')


def _data_build(args: argparse.Namespace) -> None:
  from jaxfold.data import training_set  # pylint: disable=import-outside-toplevel
  if args.mmcif_dir is None and args.structures_dir is None:
    raise ValueError('data build needs the chains\' structures: --mmcif-dir or --structures-dir')
  if args.distillation and args.structures_dir is None:
    raise ValueError('--distillation builds from predicted structures: pass --structures-dir')
  for path in (args.alignments, args.mmcif_dir, args.structures_dir, args.cache, args.duplicates,
               args.chains):
    if path is not None and not os.path.exists(path):
      raise FileNotFoundError(f'{path}: no such file or directory')
  _check_template_date(args)
  chains = None
  if args.chains:
    chains = [line.strip() for line in pathlib.Path(args.chains).read_text().splitlines()
              if line.strip()]
    if not chains:
      raise ValueError(f'{args.chains}: lists no chain')
  progress = _Progress(args.quiet)
  structures = args.structures_dir or args.mmcif_dir
  progress(f'building {args.split} from {args.alignments} and {structures}'
           + (' (self-distillation)' if args.distillation else ''))
  summary = training_set.build(
      args.alignments, args.mmcif_dir, args.output, cache=args.cache, duplicates=args.duplicates,
      chains=chains, split=args.split, max_template_date=args.max_template_date,
      num_shards=args.num_shards, structures_dir=args.structures_dir,
      distillation=args.distillation)
  failed = summary.failed.get(args.split, {})
  progress(f'done: {summary.num_examples[args.split]} chains written to {summary.dataset_dir}, '
           f'{len(failed)} skipped' + (f' (reasons in {summary.dataset_dir}/'
                                        'build_summary.json)' if failed else ''))


def _data_subset(args: argparse.Namespace) -> None:
  from jaxfold.data import subset  # pylint: disable=import-outside-toplevel
  options = subset.Options(
      keep_list=args.keep_list, exclude_list=args.exclude_list,
      exclude_classes=tuple(subset.parse_class_limit(text) for text in args.exclude_class),
      fraction=args.fraction, count=args.count, seed=args.seed, validation=args.validation,
      validation_split=args.validation_split, max_identity=args.max_identity,
      drop_leaking=args.drop_leaking)
  progress = _Progress(args.quiet)
  progress(f'choosing chains of split {args.split} of {args.data}')
  record = subset.write_subset(args.data, args.output, options, split=args.split)
  for line in subset.summary(record):
    progress(line)


def _parity(args: argparse.Namespace) -> int:
  try:
    from jaxfold.parity import alphafold_model  # pylint: disable=import-outside-toplevel
    import alphafold.model.modules  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise JaxfoldError(f'the AlphaFold reference is not installed ({e}); install the test '
                       "extra: pip install -e '.[test]'") from e
  import jax  # pylint: disable=import-outside-toplevel
  from jaxfold import inference  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_default_matmul_precision', 'highest')
  _check_parent(args.report)
  if args.losses or args.gradients:
    flag = '--losses' if args.losses else '--gradients'
    if args.batch:
      raise ValueError(f'{args.batch}: {flag} makes its own training example (2q2k chain A '
                       'through jaxfold\'s data pipeline); --batch does not apply')
    if args.losses and args.gradients:
      raise ValueError('--losses and --gradients are two comparisons: ask for one at a time')
    if args.gradients and args.params:
      raise ValueError(f'{args.params}: --gradients uses perturbed random weights of its own; '
                       '--params does not apply')
  progress = _Progress(args.quiet)
  params = batch = None
  if args.params:
    tree, _, _ = inference.load_params(args.params, args.preset)
    from jaxfold.convert.haiku_tree import to_haiku  # pylint: disable=import-outside-toplevel
    params = to_haiku(tree, root='alphafold')
  if args.losses:
    from jaxfold.parity import alphafold_loss  # pylint: disable=import-outside-toplevel
    return _print_comparison(alphafold_loss.compare_losses(
        alphafold_model.shared_dir(), args.preset, params=params, progress=progress), args.report)
  if args.gradients:
    from jaxfold.parity import alphafold_gradients  # pylint: disable=import-outside-toplevel
    result = alphafold_gradients.compare_gradients(alphafold_model.shared_dir(), args.preset,
                                                   progress=progress)
    status = _print_comparison(result, args.report)
    print(alphafold_gradients.summary(result))
    return status
  if args.batch:
    from jaxfold.convert.openfold_batch import TEMPLATE_TORSION_FEATURES  # pylint: disable=import-outside-toplevel
    from jaxfold.model.alphafold import model_features  # pylint: disable=import-outside-toplevel
    batch = inference.read_batch(args.batch, layout=args.batch_layout)
    model_features(batch, _preset(args.preset).model, args.batch)  # fails on a misfit batch
    # AlphaFold reads the whole batch (e.g. seq_length) and computes the template torsion
    # angles from the atoms: so does jaxfold here.
    batch = {k: v for k, v in batch.items() if k not in TEMPLATE_TORSION_FEATURES}
  result = alphafold_model.compare(
      args.preset, num_recycle=args.num_recycle, params=params, batch=batch,
      max_msa_clusters=args.max_msa_clusters, max_extra_msa=args.max_extra_msa,
      bfloat16=args.bfloat16, progress=progress)
  return _print_comparison(result, args.report)


def _print_comparison(result, report: str | None) -> int:
  """Prints a parity table and its verdict, writes the report; 1 when a row failed."""
  from jaxfold.parity.agreement import format_table  # pylint: disable=import-outside-toplevel
  print(f'jaxfold vs {result.reference}: {result.preset}, {result.num_residues} residues, '
        f'{result.num_recycle} recycling iterations, float32')
  print(format_table(result.rows))
  for note in result.notes:
    print(note)
  failed = [r.name for r in result.rows if not r.passed]
  explained = sum(r.passed and not r.within_tolerance for r in result.rows)
  print(f'{len(result.rows) - len(failed) - explained}/{len(result.rows)} rows within tolerance'
        + (f', {explained} more beyond it but explained (expl, see above)' if explained else '')
        + (f'; FAILED: {", ".join(failed)}' if failed else ''))
  if report:
    _write_json(report, result.report())
    print(f'report: {report}')
  return 1 if failed else 0


def _parity_openfold(args: argparse.Namespace) -> int:
  from jaxfold.parity import openfold_fixture  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_default_matmul_precision', 'highest')
  _check_parent(args.report)
  progress = _Progress(args.quiet)
  if args.losses:
    if args.live or args.checkpoint:
      raise ValueError(f'{args.fixture}: --losses compares a loss fixture with its recorded '
                       'terms; --live and --checkpoint do not apply')
    from jaxfold.parity import openfold_loss  # pylint: disable=import-outside-toplevel
    return _print_comparison(openfold_loss.compare_losses(args.fixture, progress), args.report)
  state_dict = None
  if args.checkpoint:
    from jaxfold.convert.openfold_pt import read_openfold  # pylint: disable=import-outside-toplevel
    progress(f'weights: {args.checkpoint}')
    state_dict, _ = read_openfold(args.checkpoint)
  result = openfold_fixture.compare(args.fixture, state_dict, live=args.live, progress=progress)
  return _print_comparison(result, args.report)


def _analyze_trajectory(args: argparse.Namespace) -> None:
  from jaxfold.analysis import report  # pylint: disable=import-outside-toplevel
  progress = _Progress(args.quiet)
  progress(f'measuring the kept structures of {args.workdir}')
  written = report.analyze(args.workdir, args.output, quiet=args.quiet)
  progress(f'wrote {len(written)} files to {os.path.dirname(written[0])}')


def _check_parent(path: str | None) -> None:
  """Fails before any work when an output's directory does not exist (None: no output)."""
  if path is None:
    return
  parent = pathlib.Path(path).resolve().parent
  if not parent.is_dir():
    raise FileNotFoundError(f'{path}: directory {parent} does not exist')


def _write_json(path: str, value) -> None:
  with atomic_write(path, 'w') as f:
    json.dump(value, f, indent=1)


def _add_alignment_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
  parser.add_argument('--msa-dir', required=required,
                      help='folder of precomputed alignments (and pdb70_hits.hhr for templates)')
  parser.add_argument('--mmcif-dir', help='folder of <pdb_id>.cif template structures '
                                          '(default: no templates)')
  parser.add_argument('--max-template-date', help='drop templates released after this '
                                                  'date (YYYY-MM-DD)')


def _add_batch_layout_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      '--batch-layout', choices=('alphafold', 'openfold'), default='alphafold',
      help='layout of --batch: alphafold (AlphaFold\'s names, leading recycle axis; default) '
           'or openfold (OpenFold\'s FeaturePipeline output, recycling axis last; its '
           'precomputed template torsion angles are used as OpenFold uses them)')


def build_parser() -> argparse.ArgumentParser:
  from jaxfold.model.attention_core import IMPLEMENTATIONS  # pylint: disable=import-outside-toplevel
  from jaxfold.model.config import PRESETS  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog='jaxfold', description=__doc__.splitlines()[0])
  parser.add_argument('--quiet', action='store_true', help='no progress lines on stderr')
  parser.add_argument('--debug', action='store_true',
                      help='on an error, print the whole traceback, not only its one line')
  commands = parser.add_subparsers(dest='command', required=True)

  convert = commands.add_parser(
      'convert', help='convert weights between AlphaFold .npz, OpenFold .pt/.ckpt and jaxfold '
                      'checkpoints',
      description='Format from the path: a .npz file is AlphaFold\'s, a .pt/.pth/.ckpt file '
                  'OpenFold\'s (a state dict, or a PyTorch Lightning checkpoint whose EMA '
                  'weights are read by default), a directory a jaxfold (orbax) checkpoint. '
                  'Every pair converts; the source is checked against the preset\'s keys and '
                  'shapes before anything is written, and the output appears whole or not at '
                  'all. OpenFold files need PyTorch: pip install \'jaxfold[torch]\'.')
  convert.add_argument('src', help='AlphaFold params_<preset>.npz, OpenFold .pt/.ckpt, '
                                   'jaxfold checkpoint directory, or a training checkpoint '
                                   '<workdir>/checkpoints/<step> (with --random: the output)')
  convert.add_argument('dst', nargs='?', help='output .npz, .pt (OpenFold state dict) or '
                                              'checkpoint directory (must not exist)')
  convert.add_argument('--random', action='store_true',
                       help='write random weights of --preset (N(0, 0.02²) each, --seed) '
                            'to the one path given: to try predict, tests and benchmarks '
                            'without downloading weights; their structures mean nothing')
  convert.add_argument('--seed', type=int, default=0, help='seed of --random (default 0)')
  convert.add_argument('--preset', choices=PRESETS,
                       help='model preset (required for a .npz or OpenFold source; a jaxfold '
                            'checkpoint records it)')
  convert.add_argument('--ema', action=argparse.BooleanOptionalAction, default=None,
                       help='of a Lightning .ckpt or a training checkpoint, read the EMA weights '
                            '(--ema) or the trained ones (--no-ema); default: EMA when present')
  convert.add_argument('--trust-pickle', action='store_true',
                       help='let PyTorch unpickle any object in an OpenFold file (it can run '
                            'code: only for files from a trusted source)')
  convert.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  convert.set_defaults(run=_convert)

  predict = commands.add_parser(
      'predict', help='predict a structure from sequence and alignments, or from features',
      description='Runs the recycling model and writes <name>_unrelaxed.pdb/.cif (pLDDT in '
                  'B-factors), outputs.npz, confidence.json and <name>_confidence.png to the '
                  'output directory. Input: a FASTA file with its precomputed alignments '
                  '(--fasta, --msa-dir, optionally --mmcif-dir for templates), AlphaFold\'s raw '
                  'features (--features features.pkl), or processed features (--batch).')
  predict.add_argument('--params', required=True,
                       help='AlphaFold .npz, OpenFold .pt/.ckpt or jaxfold checkpoint directory')
  predict.add_argument('--preset', choices=PRESETS,
                       help='model preset (required for a .npz or .pt/.ckpt; a jaxfold '
                            'checkpoint records it)')
  source = predict.add_mutually_exclusive_group(required=True)
  source.add_argument('--fasta', help='FASTA file of one protein sequence (needs --msa-dir)')
  source.add_argument('--features', help='raw features: the features.pkl AlphaFold or '
                                         '`jaxfold data features` writes')
  source.add_argument('--batch', help='processed features (.npz; layout: --batch-layout)')
  predict.add_argument('--trust-pickle', action='store_true',
                       help='unpickle --features without restriction (it can run code: only '
                            'for files from a trusted source); by default only what a '
                            'features.pkl holds (numpy arrays, numbers, strings) is read')
  _add_batch_layout_argument(predict)
  _add_alignment_arguments(predict, required=False)
  predict.add_argument('--max-msa-clusters', type=int,
                       help='MSA clusters (default: the preset\'s, 512; --fasta / --features)')
  predict.add_argument('--max-extra-msa', type=int,
                       help='extra MSA sequences (default: the preset\'s; --fasta / --features)')
  predict.add_argument('--seed', type=int, default=0,
                       help='seed of MSA sampling and masking (--fasta / --features; default 0)')
  predict.add_argument('--output', required=True, help='output directory')
  predict.add_argument('--name', help='structure name in file names (default: input file stem)')
  predict.add_argument('--num-recycle', type=int,
                       help='recycling iterations (default: the model\'s; a --batch holds its '
                            'own, one per slice, which this must then equal)')
  predict.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                       help='compute precision (default float32)')
  predict.add_argument('--subbatch-size', type=int, default=4,
                       help='compute attention, transitions and the outer product mean this '
                            'many rows at a time, as AlphaFold does at inference: the same '
                            'result in a fraction of the memory (default 4; 0: in one piece)')
  predict.add_argument('--attention', choices=IMPLEMENTATIONS, default='xla',
                       help="attention kernel: 'xla' (AlphaFold's, default), 'chunked' "
                            "(online softmax over query and key chunks) or 'cudnn' (cuDNN's "
                            'fused kernel on a GPU in bfloat16; elsewhere XLA\'s, with a '
                            'warning)')
  predict.add_argument('--pair-chunk-size', type=int, default=64,
                       help='compute triangle multiplication, the pair biases and the template '
                            'attention this many pair rows at a time: the same result without '
                            'whole N x N intermediates (default 64; 0: in one piece)')
  predict.add_argument('--budget',
                       help='memory to fit (e.g. 40GiB): compile the memory plan of each of '
                            '`jaxfold plan`\'s settings, least chunked first, and predict with '
                            'the first that fits (overrides --subbatch-size, --pair-chunk-size '
                            'and --attention)')
  predict.add_argument('--mesh',
                       help='split one structure\'s residues over this machine\'s devices, '
                            'res=N (e.g. res=8, or res=-1 for all): each row-wise module '
                            'holds 1/N of the MSA\'s and the pair\'s rows, each column-wise '
                            'one 1/N of their columns (FastFold\'s dynamic axial '
                            'parallelism), for a sequence no single device holds; the same '
                            'prediction as one device')
  predict.add_argument('--save-representations', action='store_true',
                       help='also store msa_first_row, pair and single in outputs.npz')
  predict.add_argument('--save-logits', action='store_true',
                       help='also store the heads\' logits and aligned_confidence_probs in '
                            'outputs.npz, as AlphaFold\'s result does (the distogram\'s, PAE\'s '
                            'and the probabilities are N x N x 64 each: kept in memory and on '
                            'disk only when asked)')
  predict.add_argument('--relax', choices=('none', 'best', 'all'), default='none',
                       help='Amber-relax the predicted structure into <name>_relaxed.pdb '
                            '(AlphaFold\'s protocol; needs the relax extra: pip install '
                            '\'jaxfold[relax]\'); best and all: one model per run, so the same')
  predict.add_argument('--relax-gpu', action=argparse.BooleanOptionalAction, default=None,
                       help='relax on a GPU (CUDA/OpenCL) or not; default: a GPU if OpenMM has '
                            'one')
  predict.add_argument('--overwrite', action='store_true',
                       help='replace existing prediction files in the output directory')
  predict.set_defaults(run=_predict)

  relax_command = commands.add_parser(
      'relax', help='Amber-relax a structure (AlphaFold\'s protocol)',
      description='Restrained energy minimisation of a predicted structure, as AlphaFold '
                  'relaxes its models (Amber99sb, stiffness 10 kcal/mol/Å², tolerance 2.39, '
                  'rounds while residues violate); B-factors (pLDDT) kept. Needs the relax '
                  'extra: pip install \'jaxfold[relax]\'.')
  relax_command.add_argument('input', help='PDB file to relax (one model)')
  relax_command.add_argument('output', help='PDB file to write')
  relax_command.add_argument('--max-outer-iterations', type=int, default=3,
                             help='minimisation rounds while residues violate (default 3, '
                                  'AlphaFold\'s)')
  relax_command.add_argument('--exclude-residues', type=int, nargs='*',
                             help='0-based residue indices left unrestrained')
  relax_command.add_argument('--gpu', action=argparse.BooleanOptionalAction, default=None,
                             help='on a GPU (CUDA/OpenCL) or not; default: a GPU if OpenMM '
                                  'has one')
  relax_command.add_argument('--overwrite', action='store_true', help='replace OUTPUT')
  relax_command.set_defaults(run=_relax)

  plan = commands.add_parser(
      'plan', help='will N residues fit? the compiled memory plan of a prediction',
      description='Compiles the prediction jaxfold predict would run, on abstract inputs '
                  '(nothing is allocated or run), and prints XLA\'s memory plan: arguments, '
                  'outputs, temporaries and the total. Settings, least chunked first: '
                  'one_piece, alphafold (AlphaFold\'s subbatches), lean (predict\'s default: '
                  'and the pair in row chunks), leanest (and attention in blocks). The plan is '
                  'this machine\'s compiler\'s; a GPU\'s or TPU\'s differs somewhat. With '
                  '--train, one step of jaxfold train on a crop, on one device (or one '
                  'device\'s part of a --mesh).')
  plan.add_argument('--preset', required=True, help=f'model preset ({", ".join(PRESETS)})')
  plan.add_argument('--length', type=int, help='residues')
  plan.add_argument('--msa-clusters', type=int,
                    help='MSA clusters (default: the preset\'s, less its template rows)')
  plan.add_argument('--extra-msa', type=int, help='extra MSA sequences (default: the preset\'s)')
  plan.add_argument('--templates', type=int, help='templates (default: the preset\'s, 4)')
  plan.add_argument('--num-recycle', type=int,
                    help='recycling iterations (default: the preset\'s; sets the batch\'s '
                         'recycling slices)')
  plan.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  plan.add_argument('--logits', action='store_true',
                    help='plan predict --save-logits (the heads\' logits returned too)')
  plan.add_argument('--train', action='store_true',
                    help='plan one step of jaxfold train instead: forward and backward pass '
                         'of a --crop, the fine-tuning loss, Adam and the parameter average '
                         '(settings: alphafold, lean)')
  plan.add_argument('--crop', type=int, help='with --train: residues of the training crop')
  plan.add_argument('--mesh', help='the device mesh over this machine\'s devices, the plan of '
                                   'one device (default: one device): a prediction\'s '
                                   'residues over res=N, as predict --mesh; with --train, '
                                   'axis=size pairs over data, fsdp and res (the layout that '
                                   'uses its axes), one example per data-parallel replica')
  plan.add_argument('--settings', help='plan these settings (default: lean, or leanest with '
                                       '--longest)')
  plan.add_argument('--budget', help='memory to fit, e.g. 40GiB, 16G, 80GB: plan the settings '
                                     'least chunked first and report the first that fits')
  plan.add_argument('--longest', action='store_true',
                    help='with --budget: the longest sequence (to 32 residues) that fits')
  plan.add_argument('--json', action='store_true', help='print the plan as one JSON object')
  plan.set_defaults(run=_plan)

  train = commands.add_parser(
      'train', help='train AlphaFold2 (from scratch, or fine-tune AlphaFold / OpenFold weights)',
      description='Trains with the procedure of Jumper et al. (2021) Suppl. 1.11 as the config '
                  'file sets it (configs/train/{initial,finetune,tiny}.py), reading training sets '
                  'built by `jaxfold data build`. Writes checkpoints, TensorBoard events, '
                  'metrics.jsonl, validation structures and loss_curves.png to the workdir. '
                  'Running the same command again resumes from the latest checkpoint, '
                  'bit-identically; SIGTERM / SIGINT save a checkpoint and stop.')
  train.add_argument('--config', required=True, help='config file defining get_config()')
  train.add_argument('--workdir', required=True, help='the run\'s directory (resumed if it '
                                                      'holds a run)')
  train.add_argument('--data', help='built training set (<output>/chain_features/1.0.0): '
                                    'replaces the config\'s PDB source')
  train.add_argument('--steps', type=int, help='train until this step (default: the config\'s)')
  train.add_argument('--checkpoint-every', type=int, help='checkpoint interval in steps')
  train.add_argument('--init', help='start from these weights: AlphaFold .npz, OpenFold '
                                    '.pt/.ckpt, jaxfold checkpoint, or a training checkpoint '
                                    '<workdir>/checkpoints/<step> (its EMA weights)')
  train.add_argument('--set', action='append', metavar='KEY=VALUE',
                     help='override a config field by dotted path, e.g. '
                          'optimizer.learning_rate=5e-4 or data.0.weight=0.25 (repeatable)')
  train.add_argument('--mesh', help='device mesh as axis=size pairs over data, fsdp and res, '
                                    'e.g. data=2,fsdp=2,res=2 (one size may be -1: the rest; '
                                    'default: the config\'s, data=-1)')
  train.add_argument('--sharding', choices=('data', 'fsdp', 'dap', 'fsdp_dap'),
                     help='layout: data-parallel, FSDP (parameters and Adam state sharded), '
                          'DAP (one example\'s residue axis over the res axis) or both')
  train.add_argument('--coordinator', metavar='HOST:PORT',
                     help='several processes: process 0\'s address (with --num-processes and '
                          '--process-id; TPU pods need none of these)')
  train.add_argument('--num-processes', type=int, help='number of processes (with --coordinator)')
  train.add_argument('--process-id', type=int, help='this process, 0..N-1 (with --coordinator)')
  train.set_defaults(run=_train)

  data = commands.add_parser('data', help='make features from sequence, alignment and mmCIF files')
  data_commands = data.add_subparsers(dest='data_command', required=True)
  features = data_commands.add_parser(
      'features', help='AlphaFold\'s raw features (features.pkl) of one sequence',
      description='Reads a FASTA file, its precomputed alignments (uniref90_hits, '
                  'bfd_*_hits, mgnify_hits as .sto or .a3m, in AlphaFold\'s merge order) and, '
                  'with --mmcif-dir, templates from the folder\'s HHsearch output; writes the '
                  'dict AlphaFold\'s data pipeline writes, as a pickle.')
  features.add_argument('--fasta', required=True, help='FASTA file of one protein sequence')
  _add_alignment_arguments(features, required=True)
  features.add_argument('--output', required=True, help='features.pkl to write (must not exist)')
  features.add_argument('--overwrite', action='store_true', help='replace an existing output')
  features.set_defaults(run=_data_features)

  build = data_commands.add_parser(
      'build', help='a training set (ArrayRecord shards) from OpenProteinSet-style files',
      description='Reads each PDB chain\'s alignments (a folder per chain, <pdb>_<chain>/, or '
                  'OpenFold\'s alignment database .index) and its mmCIF structure, and writes its '
                  'raw features and ground truth as a tensorflow-datasets ArrayRecord dataset '
                  '(read with tfds.data_source or jaxfold.data.training_set.batches). A chain '
                  'that fails is logged, skipped and counted in build_summary.json. With '
                  '--structures-dir the structures are predicted ones (a self-distillation set '
                  'with --distillation).')
  build.add_argument('--alignments', required=True,
                     help='alignment folder tree or alignment database .index')
  build.add_argument('--mmcif-dir', help='folder of <pdb_id>.cif files: the chains\' structures '
                                         'and the templates\' (with --structures-dir, the '
                                         'templates\' only)')
  build.add_argument('--structures-dir',
                     help='folder of predicted structures, <chain>.pdb or <chain>_unrelaxed.pdb '
                          '(as `jaxfold predict` writes them), the ground truth instead of mmCIF; '
                          'their resolution is 0, so the confidence losses skip them')
  build.add_argument('--distillation', action='store_true',
                     help='a self-distillation set (needs --structures-dir): residues whose '
                          'pLDDT (B-factor column) is not above 50 lose their atoms from the '
                          'ground truth, as in OpenFold')
  build.add_argument('--output', required=True, help='dataset directory (tfds data_dir)')
  build.add_argument('--cache', help='OpenFold chain-data or mmCIF cache JSON (metadata)')
  build.add_argument('--duplicates', help='OpenProteinSet duplicate-chains file')
  build.add_argument('--chains', help='file of <pdb>_<chain> IDs (with --structures-dir, '
                                      'structure names), one per line (default: every chain '
                                      'with alignments)')
  build.add_argument('--split', default='train', help='split name (default train)')
  build.add_argument('--max-template-date', help='drop templates released after this date '
                                                 '(YYYY-MM-DD); a chain\'s own date applies too')
  build.add_argument('--num-shards', type=int, help='ArrayRecord shards (default: by size)')
  build.set_defaults(run=_data_build)
  subset = data_commands.add_parser(
      'subset', help='a reduced copy of a built training set, with a leakage report',
      description='Copies the records of some chains of one split of a built set (`jaxfold '
                  'data build`) into a new set that `jaxfold train --data` reads. Chains leave '
                  'in this order: by --keep-list / --exclude-list, by the secondary structure '
                  'of their ground truth (--exclude-class), by a random draw (--fraction or '
                  '--count, from --seed), and with --drop-leaking by sequence identity to a '
                  'validation set. subset.json in the new dataset directory records every '
                  'option, the chains kept, each chain left out with its reason and the '
                  'leakage report.')
  subset.add_argument('--data', required=True,
                      help='built dataset directory (or the --output of `jaxfold data build`)')
  subset.add_argument('--output', required=True,
                      help='new tfds data_dir (must not exist); the dataset is written to '
                           'OUTPUT/chain_features/<version>/')
  subset.add_argument('--split', default='train', help='split read and written (default train)')
  subset.add_argument('--keep-list', help='file of chain IDs (1abc_A) or PDB IDs (1abc, all its '
                                          'chains), one per line, # comments: keep only these')
  subset.add_argument('--exclude-list', help='file of chain or PDB IDs as --keep-list: leave '
                                             'these out')
  subset.add_argument('--exclude-class', action='append', default=[], metavar='CLASS:FRACTION',
                      help='leave out chains whose ground truth has at least FRACTION of its '
                           'assigned residues in CLASS (helix, strand or coil; P-SEA on Cα); '
                           'repeatable')
  size = subset.add_mutually_exclusive_group()
  size.add_argument('--fraction', type=float, help='keep a random fraction (0, 1] of the chains '
                                                   'left, rounded to the nearest chain')
  size.add_argument('--count', type=int, help='keep a random N of the chains left')
  subset.add_argument('--seed', type=int, default=0, help='seed of the random draw (default 0)')
  subset.add_argument('--validation', help='validation set, a built dataset or a FASTA file: '
                                           'report each validation chain\'s highest sequence '
                                           'identity to the chosen chains')
  subset.add_argument('--validation-split',
                      help='split of a --validation dataset (default: validation, or its only '
                           'split)')
  subset.add_argument('--max-identity', type=float, default=0.4,
                      help='flag identities above this (default 0.4: identical aligned pairs '
                           'over the shorter length; global BLOSUM62 alignment)')
  subset.add_argument('--drop-leaking', action='store_true',
                      help='leave out chosen chains above --max-identity to a validation chain')
  subset.set_defaults(run=_data_subset)

  parity = commands.add_parser('parity', help='measure agreement with a reference model')
  references = parity.add_subparsers(dest='reference', required=True)
  alphafold = references.add_parser(
      'alphafold', help='against DeepMind AlphaFold (live, needs the test extra)',
      description='Runs AlphaFold\'s own Haiku model and jaxfold on the same weights and '
                  'features: one row per module (fed the reference\'s recorded inputs), per '
                  'recycling iteration teacher-forced (jaxfold fed AlphaFold\'s recycled '
                  'outputs), end to end free running, and AlphaFold against itself in '
                  'subbatches (measured). A recycled Cβ distance that falls in another of the '
                  '15 bins in the two models (a flip, within rounding of a bin edge) is named; '
                  'an end-to-end row beyond tolerance passes only when jaxfold fed AlphaFold\'s '
                  'bins agrees. Default: full-size model_1_ptm, perturbed random weights, the '
                  'real query73 features processed by AlphaFold\'s pipeline, 2 recycling '
                  'iterations. Exit status 1 when a row fails.')
  alphafold.add_argument('--preset', choices=PRESETS, default='model_1_ptm')
  alphafold.add_argument('--params', help='AlphaFold .npz or jaxfold checkpoint '
                                          '(default: perturbed random weights)')
  alphafold.add_argument('--batch', help='processed features .npz (default: query73)')
  _add_batch_layout_argument(alphafold)
  alphafold.add_argument('--num-recycle', type=int, default=2)
  alphafold.add_argument('--max-msa-clusters', type=int,
                         help='MSA clusters of the default batch (default: the preset\'s, 512)')
  alphafold.add_argument('--max-extra-msa', type=int,
                         help='extra MSA rows of the default batch (default: the preset\'s)')
  alphafold.add_argument('--bfloat16', action='store_true',
                         help='also run jaxfold in bfloat16 and print its drift from float32')
  alphafold.add_argument('--losses', action='store_true',
                         help='compare every loss term and the total with AlphaFold\'s own '
                              'loss code, on a training example of 2q2k chain A (64 residues) '
                              'made by jaxfold\'s data pipeline')
  alphafold.add_argument('--gradients', action='store_true',
                         help='compare the gradient of the total training loss for every '
                              'parameter with AlphaFold\'s through its own model, on the same '
                              'training example (one recycling iteration; ~10 min on 2 cores)')
  alphafold.add_argument('--report', help='write every row with its numbers to this JSON file')
  alphafold.set_defaults(run=_parity)
  openfold = references.add_parser(
      'openfold', help='against a recorded OpenFold run (shared/fixtures/openfold/<set>)',
      description='Runs jaxfold with OpenFold\'s weights on the inputs of a recorded OpenFold '
                  'run and compares every recorded output: each module fed its recorded '
                  'inputs, and the whole model end to end. Exit status 1 when a row is beyond '
                  'tolerance.')
  openfold.add_argument('--fixture', required=True,
                        help='fixture directory (manifest.json, inputs.npz, outputs.npz)')
  openfold.add_argument('--checkpoint', help='OpenFold .pt/.ckpt holding the run\'s weights '
                                             '(default: regenerated from the manifest\'s names '
                                             'by the fixture\'s rule; no torch needed)')
  openfold.add_argument('--live', action='store_true',
                        help='run OpenFold itself (the openfold package must be importable) on '
                             'the fixture\'s inputs and weights, its modules recorded with '
                             'hooks, instead of reading the recorded outputs.npz')
  openfold.add_argument('--losses', action='store_true',
                        help='compare every loss term and the total with a loss fixture\'s '
                             '(small_loss: losses.json), on its recorded outputs and on '
                             'jaxfold\'s own forward pass')
  openfold.add_argument('--report', help='write every row with its numbers to this JSON file')
  openfold.set_defaults(run=_parity_openfold)

  analyze = commands.add_parser('analyze', help='study a training run')
  analyses = analyze.add_subparsers(dest='analysis', required=True)
  trajectory = analyses.add_parser(
      'trajectory', help='measure the structures a run kept at every validation step against '
                         'their truth (accuracy, shape, secondary structure, contacts): a '
                         'table and figures; a run still training is read as far as it got')
  trajectory.add_argument('--workdir', required=True,
                          help='the run\'s workdir (predictions/<chain>/step_*.pdb, truth.pdb)')
  trajectory.add_argument('--output', help='folder for trajectory.csv/.json and the figures '
                                           '(default: <workdir>/analysis)')
  trajectory.set_defaults(run=_analyze_trajectory)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs one command. Bad input (jaxfold's own errors, ValueError, a file that cannot be
  read or written) ends in one `jaxfold: error:` line and exit 2; anything else is a fault of
  jaxfold or a library: one line naming the exception and where it was raised, exit 1.
  `--debug` adds the traceback."""
  parser = build_parser()
  args = parser.parse_args(argv)
  # Library warnings (e.g. a template hit skipped for a missing mmCIF) as `jaxfold: warning:` lines.
  logging.basicConfig(format='jaxfold: %(levelname)s: %(message)s',
                      level=logging.ERROR if args.quiet else logging.WARNING, force=True)
  logging.addLevelName(logging.WARNING, 'warning')
  try:
    return args.run(args) or 0
  except (ValueError, OSError) as e:  # JaxfoldError is a ValueError
    if args.debug:
      traceback.print_exc()
    print(f'jaxfold: error: {_first_line(e)}', file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-exception-caught
    if args.debug:
      traceback.print_exc()
    print(f'jaxfold: error: {_raised_at(e)} (a fault, not your input: please report it; '
          '--debug shows the traceback)', file=sys.stderr)
    return 1


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _raised_at(error: BaseException) -> str:
  """'IndexError at jaxfold/data/hhr.py:88: list index out of range': the exception, where it
  was raised (the path from its package, not the whole install path) and its first line."""
  where = traceback.extract_tb(error.__traceback__)[-1]
  parts = pathlib.Path(where.filename).parts
  filename = where.filename
  for package in ('jaxfold', 'site-packages'):
    if package in parts:
      start = len(parts) - 1 - parts[::-1].index(package)
      filename = str(pathlib.Path(*parts[start + (package == 'site-packages'):]))
      break
  return f'{type(error).__name__} at {filename}:{where.lineno}: {_first_line(error)}'


if __name__ == '__main__':
  sys.exit(main())
