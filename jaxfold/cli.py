"""The `jaxfold` command: convert weights, predict structures, measure parity.

Every subcommand has --help; bad input ends with one line `jaxfold: error: ...` on stderr
and exit status 2, and leaves no partial output (writers go through temporary files).
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np


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


def _load_params(path: str, preset_name: str | None):
  """(jaxfold params, preset) from an AlphaFold .npz or a jaxfold checkpoint, validated.

  The schema is the preset's (given, or recorded in the checkpoint); a .npz needs --preset.
  """
  from jaxfold.convert import formats, schema  # pylint: disable=import-outside-toplevel
  source = pathlib.Path(path)
  if not source.exists():
    raise FileNotFoundError(f'{source}: no such file or directory')
  recorded = formats.checkpoint_preset(source) if source.is_dir() else None
  if preset_name is None:
    preset_name = recorded
  if preset_name is None:
    raise ValueError(f'{source}: an AlphaFold .npz does not say which model it is; pass --preset')
  if recorded is not None and recorded != preset_name:
    raise ValueError(f'{source}: checkpoint holds preset {recorded!r}, not {preset_name!r}')
  config = _preset(preset_name)
  tree, _ = formats.load_params(source, expected=schema.parameter_shapes(config.model),
                                schema_name=f'preset {preset_name!r}')
  return tree, preset_name, config


def _convert(args: argparse.Namespace) -> None:
  from jaxfold.convert import formats  # pylint: disable=import-outside-toplevel
  if os.path.lexists(args.dst) and not args.overwrite:
    raise FileExistsError(f'{args.dst}: exists (pass --overwrite to replace it)')
  progress = _Progress(args.quiet)
  progress(f'reading {args.src}')
  tree, preset_name, _ = _load_params(args.src, args.preset)
  progress(f'writing {args.dst} ({preset_name})')
  formats.save_params(tree, args.dst, preset=preset_name, overwrite=args.overwrite)
  progress('done')


def _read_batch(path: str) -> dict[str, np.ndarray]:
  """A processed batch saved with np.savez: AlphaFold's feature names, leading recycle axis."""
  source = pathlib.Path(path)
  if not source.is_file():
    raise FileNotFoundError(f'{source}: no such file')
  try:
    with np.load(source, allow_pickle=False) as data:
      batch = {k: data[k] for k in data.files}
  except Exception as e:  # zipfile / pickle / format errors: all mean an unreadable batch
    raise ValueError(f'{source}: not a readable .npz batch ({type(e).__name__}: {e})') from e
  if 'aatype' not in batch or batch['aatype'].ndim != 2:
    raise ValueError(f'{source}: expected processed features with a leading recycle axis '
                     f"('aatype' [N_slices, N_res]); got "
                     f"{batch['aatype'].shape if 'aatype' in batch else 'no aatype'}")
  return batch


def _check_batch(batch: dict[str, np.ndarray], model_config, source: str) -> None:
  """Every feature the model reads is present with the right per-residue shape."""
  from jaxfold.model.alphafold import feature_shapes  # pylint: disable=import-outside-toplevel
  slices, num_res = batch['aatype'].shape
  num_seq = batch['msa_feat'].shape[1] if 'msa_feat' in batch else 1
  num_extra = batch['extra_msa'].shape[1] if 'extra_msa' in batch else 1
  num_templates = batch['template_mask'].shape[1] if 'template_mask' in batch else 4
  expected = feature_shapes(model_config, num_res, num_seq, num_extra, num_templates, slices)
  missing = sorted(set(expected) - set(batch))
  if missing:
    raise ValueError(f'{source}: missing features for this preset: {", ".join(missing)}')
  wrong = [f'{k} {batch[k].shape} {batch[k].dtype} (expected {v.shape} {v.dtype})'
           for k, v in expected.items()
           if batch[k].shape != v.shape or np.dtype(batch[k].dtype).kind != np.dtype(v.dtype).kind]
  if wrong:
    raise ValueError(f'{source}: features of the wrong shape or type: {"; ".join(wrong)}')


def _predict(args: argparse.Namespace) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from jaxfold import prediction_outputs  # pylint: disable=import-outside-toplevel
  from jaxfold.model.alphafold import AlphaFold  # pylint: disable=import-outside-toplevel
  from jaxfold.model.global_config import GlobalConfig  # pylint: disable=import-outside-toplevel
  progress = _Progress(args.quiet)
  name = args.name or pathlib.Path(args.batch).stem
  # Fail before the model runs, not after.
  prediction_outputs.check_destination(args.output, name, args.overwrite)
  batch = _read_batch(args.batch)
  progress(f'reading parameters {args.params}')
  tree, preset_name, config = _load_params(args.params, args.preset)
  _check_batch(batch, config.model, args.batch)
  num_recycle = config.model.num_recycle if args.num_recycle is None else args.num_recycle
  model = AlphaFold(config.model, GlobalConfig(dtype=args.dtype))
  progress(f'predicting {name}: {batch["aatype"].shape[1]} residues, {preset_name}, '
           f'{num_recycle} recycling iterations, {args.dtype}')
  run = jax.jit(lambda params, batch: model.apply(
      {'params': params}, batch, num_recycle=num_recycle,
      return_representations=args.save_representations))
  outputs = jax.tree.map(np.asarray, run(tree, batch))
  progress(f'writing {args.output}')
  written = prediction_outputs.write_prediction(
      args.output, name, {k: v[0] for k, v in batch.items()}, outputs,
      save_representations=args.save_representations, overwrite=args.overwrite)
  metrics = outputs['confidence']
  summary = f'mean pLDDT {float(np.mean(metrics["plddt"])):.2f}'
  if 'ptm' in metrics:
    summary += f', pTM {float(metrics["ptm"]):.4f}'
  progress(f'done: {summary}; wrote {", ".join(str(p) for p in written.values())}')


def _parity(args: argparse.Namespace) -> int:
  try:
    from jaxfold.parity import alphafold_model  # pylint: disable=import-outside-toplevel
    import alphafold.model.modules  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
  except ImportError as e:
    raise RuntimeError(f'the AlphaFold reference is not installed ({e}); install the test '
                       "extra: pip install -e '.[test]'") from e
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update('jax_default_matmul_precision', 'highest')
  progress = _Progress(args.quiet)
  params = batch = None
  if args.params:
    tree, _, _ = _load_params(args.params, args.preset)
    from jaxfold.convert.haiku_tree import to_haiku  # pylint: disable=import-outside-toplevel
    params = to_haiku(tree, root='alphafold')
  if args.batch:
    batch = _read_batch(args.batch)
  if args.report:
    _check_parent(args.report)
  result = alphafold_model.compare(
      args.preset, num_recycle=args.num_recycle, params=params, batch=batch,
      max_msa_clusters=args.max_msa_clusters, max_extra_msa=args.max_extra_msa,
      bfloat16=args.bfloat16, progress=progress)
  print(f'jaxfold vs AlphaFold: {result.preset}, {result.num_residues} residues, '
        f'{result.num_recycle} recycling iterations, float32')
  print(alphafold_model.format_table(result.rows))
  failed = [r.name for r in result.rows if not r.passed]
  print(f'{len(result.rows) - len(failed)}/{len(result.rows)} rows within tolerance'
        + (f'; FAILED: {", ".join(failed)}' if failed else ''))
  if args.report:
    _write_json(args.report, result.report())
    print(f'report: {args.report}')
  return 1 if failed else 0


def _check_parent(path: str) -> None:
  parent = pathlib.Path(path).resolve().parent
  if not parent.is_dir():
    raise FileNotFoundError(f'{path}: directory {parent} does not exist')


def _write_json(path: str, value) -> None:
  """Writes JSON atomically: a temporary file beside `path`, then a rename."""
  target = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=target.resolve().parent, prefix=f'.{target.name}.')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(value, f, indent=1)
    os.replace(tmp, target)
  except BaseException:
    os.unlink(tmp)
    raise


def build_parser() -> argparse.ArgumentParser:
  from jaxfold.model.config import PRESETS  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog='jaxfold', description=__doc__.splitlines()[0])
  parser.add_argument('--quiet', action='store_true', help='no progress lines on stderr')
  commands = parser.add_subparsers(dest='command', required=True)

  convert = commands.add_parser(
      'convert', help='convert weights between AlphaFold .npz and jaxfold checkpoints',
      description='Format from the path: a .npz file is AlphaFold\'s, a directory is a jaxfold '
                  '(orbax) checkpoint. Both sides are validated against the preset\'s schema.')
  convert.add_argument('src', help='AlphaFold params_<preset>.npz or jaxfold checkpoint directory')
  convert.add_argument('dst', help='output .npz or checkpoint directory (must not exist)')
  convert.add_argument('--preset', choices=PRESETS,
                       help='model preset (required for a .npz source; a checkpoint records it)')
  convert.add_argument('--overwrite', action='store_true', help='replace an existing DST')
  convert.set_defaults(run=_convert)

  predict = commands.add_parser(
      'predict', help='predict a structure from processed features',
      description='Runs the recycling model on AlphaFold\'s processed features and writes '
                  '<name>_unrelaxed.pdb/.cif (pLDDT in B-factors), outputs.npz, '
                  'confidence.json and <name>_confidence.png to the output directory.')
  predict.add_argument('--params', required=True,
                       help='AlphaFold .npz or jaxfold checkpoint directory')
  predict.add_argument('--preset', choices=PRESETS,
                       help='model preset (required for a .npz; a checkpoint records it)')
  predict.add_argument('--batch', required=True,
                       help='processed features (.npz, AlphaFold names, leading recycle axis)')
  predict.add_argument('--output', required=True, help='output directory')
  predict.add_argument('--name', help='structure name in file names (default: batch file stem)')
  predict.add_argument('--num-recycle', type=int, help='recycling iterations (default: preset)')
  predict.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32',
                       help='compute precision (default float32)')
  predict.add_argument('--save-representations', action='store_true',
                       help='also store msa_first_row, pair and single in outputs.npz')
  predict.add_argument('--overwrite', action='store_true',
                       help='replace existing prediction files in the output directory')
  predict.set_defaults(run=_predict)

  parity = commands.add_parser('parity', help='measure agreement with a reference model')
  references = parity.add_subparsers(dest='reference', required=True)
  alphafold = references.add_parser(
      'alphafold', help='against DeepMind AlphaFold (live, needs the test extra)',
      description='Runs AlphaFold\'s own Haiku model and jaxfold on the same weights and '
                  'features: one row per module (fed the reference\'s recorded inputs) and end '
                  'to end. Default: full-size model_1_ptm, perturbed random weights, the real '
                  'query73 features processed by AlphaFold\'s pipeline, 2 recycling iterations. '
                  'Exit status 1 when a row is beyond tolerance.')
  alphafold.add_argument('--preset', choices=PRESETS, default='model_1_ptm')
  alphafold.add_argument('--params', help='AlphaFold .npz or jaxfold checkpoint '
                                          '(default: perturbed random weights)')
  alphafold.add_argument('--batch', help='processed features .npz (default: query73)')
  alphafold.add_argument('--num-recycle', type=int, default=2)
  alphafold.add_argument('--max-msa-clusters', type=int,
                         help='MSA clusters of the default batch (default: the preset\'s, 512)')
  alphafold.add_argument('--max-extra-msa', type=int,
                         help='extra MSA rows of the default batch (default: the preset\'s)')
  alphafold.add_argument('--bfloat16', action='store_true',
                         help='also run jaxfold in bfloat16 and print its drift from float32')
  alphafold.add_argument('--report', help='write every row with its numbers to this JSON file')
  alphafold.set_defaults(run=_parity)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return args.run(args) or 0
  except (OSError, ValueError, KeyError, RuntimeError) as e:
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    print(f'jaxfold: error: {message}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
