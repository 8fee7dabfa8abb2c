"""Per-device memory of the full AlphaFold2 training step under each sharding layout.

For a real training config (`configs/train/initial.py`, crop 256; `configs/train/finetune.py`,
crop 384) this compiles the whole training step as `jaxfold train` does
(`memory_plan.sharded_training_step`, as `jaxfold plan --train --mesh`: mesh by
`sharding.make_mesh`, state shardings by `sharding.state_shardings`, the step by
`step.jit_train_step`, the batch split by `sharding.batch_sharding`) over simulated CPU
devices (`--xla_force_host_platform_device_count`), on abstract inputs only: shape structs
carrying their shardings, so nothing is allocated or run. It reads XLA's plan for one device
from `compiled.memory_analysis()`:
  * arguments: parameters, their average (EMA) and Adam's moments as the layout splits them,
    plus this device's part of the batch;
  * outputs: the new state and the metrics;
  * aliased: outputs written into donated argument buffers (the state, donated by the step);
  * temporaries: XLA's planned scratch, the peak of everything the forward and backward pass
    keep alive at once (activations, remat recomputation, gradients, Adam's update).
Total = arguments + outputs + temporaries - aliased: arguments and temporaries are live
together at the peak, outputs need their own buffers except those aliased to a donated
argument, which are counted once (the formula MaxText prints). XLA's own `peak_memory` field
is kept in the JSON but not used: on CPU it reports about the arguments alone (1.54 GB for
the one-device step at crop 256, whose temporaries are planned at 26 GB). The parameters +
optimizer state column is summed from the state's shardings (shard shape of every leaf), so
it can be read against the arguments.

The step is that of the config: its remat setting (each Evoformer, extra-MSA and template
block rematerialised; the script says where the setting comes from and forces it on if a
config had it off), dropout, float32, and its `max_num_recycle`: the step compiles the
recycling loop whatever number it draws, so the batch carries `max_num_recycle + 1` slices
per example, as `jaxfold train`'s batches do. The global batch is one example per data-
parallel replica (the product of the layout's batch axes), the micro-batch the default (one
example per such replica), so one accumulation step. The batch's shapes are those of a real
training example of the config: PDB 2q2k chain A from the shared data through the training
pipeline (`processing.process_features`), padded to the config's crop, MSA clusters (less the
template rows, as AlphaFold reduces them), extra sequences and templates.

Meshes over `--devices` (8) devices, each compiled in a fresh process, one at a time: one
device (the reference of the ratio), then data=8 (data), fsdp=8 (fsdp), res=8 (dap) and
fsdp=2,res=4 (fsdp_dap); and the DAP sweep data=8/r,res=r for r = 1, 2, 4, 8, where each
device holds 1/r of an example.

What this measures, and what not:
  * CPU XLA's buffer assignment after SPMD partitioning. TPU and GPU compilers fuse
    differently, lay out and pad arrays differently (TPU tiles to (8, 128)), rematerialise on
    their own when memory is short and have real HBM limits; CPU has none of these, so a
    number here is the plan of the same partitioned program, not what an accelerator uses.
  * Collectives' buffers are in the plan as CPU XLA allocates them (all-gathers of FSDP's
    weights and DAP's all-to-alls); accelerators' collective libraries add their own.
  * No step time: simulated devices share the host's cores, so only real hardware can say
    what a layout costs in time. Compile time (lowering + XLA compilation, on this host) and
    the compiling process's peak host RSS are reported.

  python benchmarks/sharded_memory.py [--crops 256 384] [--layouts data fsdp dap fsdp_dap]
      [--sweep | --no-sweep] [--devices 8] [--output benchmarks/sharded_memory.md]
      [--deadline 08:55]
"""

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import resource
import subprocess
import sys
import time

import jax

from jaxfold import memory_plan
from jaxfold.common.atomic_file import atomic_write
from jaxfold.data.processing import TrainingDataConfig
from jaxfold.model import config as model_config
from jaxfold.parity.alphafold_model import shared_dir
from jaxfold.parity.alphafold_training import training_batch
from jaxfold.train import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {256: ROOT / 'configs' / 'train' / 'initial.py',
           384: ROOT / 'configs' / 'train' / 'finetune.py'}
LAYOUTS = ('data', 'fsdp', 'dap', 'fsdp_dap')
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Case:
  """One compile: a config's crop on a mesh under a layout."""
  crop: int
  layout: str
  axes: tuple[tuple[str, int], ...]

  @property
  def mesh(self) -> str:
    return ','.join(f'{name}={size}' for name, size in self.axes)

  @property
  def devices(self) -> int:
    return math.prod(size for _, size in self.axes)


def layout_axes(layout: str, devices: int) -> tuple[tuple[str, int], ...]:
  """The issue's mesh of each layout over `devices` devices (FSDP x DAP: fsdp=2)."""
  return {'data': (('data', devices),), 'fsdp': (('fsdp', devices),),
          'dap': (('res', devices),),
          'fsdp_dap': (('fsdp', 2), ('res', devices // 2))}[layout]


def reference_case(crop: int) -> Case:
  return Case(crop, 'data', (('data', 1),))


def sweep_cases(crop: int, devices: int) -> list[Case]:
  """DAP with data=devices/r, res=r for r = 1, 2, 4, ... devices."""
  return [Case(crop, 'dap', (('data', devices // r), ('res', r)) if r < devices
               else (('res', devices),))
          for r in (2**k for k in range(int(math.log2(devices)) + 1))]


# ---------------------------------------------------------------------------------------------
# Child: one compile, numbers as JSON on stdout.
# ---------------------------------------------------------------------------------------------
def _tree_bytes(tree) -> int:
  """Bytes one device holds of a tree of shape structs carrying shardings."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
             for x in jax.tree.leaves(tree))


def measure(case: Case, shared: str) -> dict:
  """Compiles `case` on abstract inputs; its memory plan per device, compile time, peak RSS."""
  config = config_lib.load(CONFIGS[case.crop])
  crop = config.crop
  if crop != TrainingDataConfig(crop.crop_size, crop.max_msa_clusters, crop.max_extra_msa):
    raise ValueError(f'{CONFIGS[case.crop]}: crop settings beyond the three sizes the example '
                     'is built with')
  if config.model != model_config.preset(config.preset):
    raise ValueError(f'{CONFIGS[case.crop]}: the network is not the preset {config.preset}\'s')
  config = dataclasses.replace(config, mesh=case.axes, sharding=case.layout, use_remat=True)
  example = training_batch(shared, config.preset, crop_size=crop.crop_size,
                           max_msa_clusters=crop.max_msa_clusters,
                           max_extra_msa=crop.max_extra_msa,
                           num_recycle=config.max_num_recycle, seed=config.seed)
  # One example per data-parallel replica.
  train_step, state, batch = memory_plan.sharded_training_step(
      config, example, jax.devices()[:case.devices])
  examples = next(iter(batch.values())).shape[0]

  clock = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - clock
  stats = compiled.memory_analysis()
  result = {
      'examples_per_device': examples / case.devices,
      'state_bytes': _tree_bytes(state), 'batch_bytes': _tree_bytes(batch),
      'argument_bytes': stats.argument_size_in_bytes, 'output_bytes': stats.output_size_in_bytes,
      'alias_bytes': stats.alias_size_in_bytes, 'temp_bytes': stats.temp_size_in_bytes,
      'peak_memory_bytes': getattr(stats, 'peak_memory_in_bytes', 0),
      'compile_s': compile_s,
      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB
      'batch_shapes': {k: list(v.shape) for k, v in sorted(example.items())},
      'max_num_recycle': config.max_num_recycle,
  }
  result['total_bytes'] = (result['argument_bytes'] + result['output_bytes']
                           + result['temp_bytes'] - result['alias_bytes'])
  return result


# ---------------------------------------------------------------------------------------------
# Parent: cases in fresh processes, one at a time; tables.
# ---------------------------------------------------------------------------------------------
def run_case(case: Case, devices: int, shared: str, timeout: float) -> dict | None:
  """`measure(case)` in a fresh process with `devices` simulated CPU devices; a failure is a
  dict with 'error', a compile stopped after `timeout` seconds None."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') +
                        f' --xla_force_host_platform_device_count={devices}').strip())
  spec = json.dumps({'case': dataclasses.asdict(case), 'shared': shared})
  clock = time.perf_counter()
  try:
    done = subprocess.run([sys.executable, __file__, '--child', spec], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return None
  wall = time.perf_counter() - clock
  if done.returncode:
    reason = ('killed (out of host memory?)' if done.returncode < 0
              else done.stderr.strip().splitlines()[-1] if done.stderr.strip()
              else f'exit status {done.returncode}')
    sys.stderr.write(done.stderr[-4000:])
    return {'error': f'failed: {reason}'[:200], 'wall_s': wall}
  return {**json.loads(done.stdout.strip().splitlines()[-1]), 'wall_s': wall}


def _gib(value: float) -> str:
  return f'{value / GIB:.2f}'


HEADER = ('layout', 'mesh', 'examples per device', 'params+EMA+Adam GiB', 'batch GiB',
          'arguments GiB', 'outputs GiB', 'aliased GiB', 'temporaries GiB', 'total GiB',
          'x one device', 'compile s', 'peak RSS GiB')


def table(cases: list[Case], results: dict[Case, dict], reference: Case | None) -> list[str]:
  """Markdown rows of `cases`; the ratio is to `reference`'s total."""
  lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
  ref = results.get(reference, {}).get('total_bytes') if reference else None
  for case in cases:
    r = results.get(case)
    name = 'one device' if case == reference else case.layout
    if r is None or 'error' in r:
      note = r['error'] if r else 'not run (time)'
      lines.append(f'| {name} | {case.mesh} | {note} |' + ' |' * (len(HEADER) - 3))
      continue
    ratio = f'{r["total_bytes"] / ref:.2f}' if ref else '-'
    lines.append('| ' + ' | '.join([
        name, case.mesh, f'{r["examples_per_device"]:g}', _gib(r['state_bytes']),
        _gib(r['batch_bytes']), _gib(r['argument_bytes']), _gib(r['output_bytes']),
        _gib(r['alias_bytes']), _gib(r['temp_bytes']), _gib(r['total_bytes']), ratio,
        f'{r["compile_s"]:.0f}', _gib(r['peak_rss_bytes'])]) + ' |')
  return lines


def report(args, tables: list[tuple[str, list[Case], Case | None]], results: dict[Case, dict],
           notes: list[str]) -> str:
  lines = ['# Per-device memory of the training step under each sharding layout', '',
           f'`python benchmarks/sharded_memory.py {" ".join(args.argv)}`'.replace(' `', '`'),
           '', *notes, '']
  for title, cases, reference in tables:
    lines += [f'## {title}', '', *table(cases, results, reference), '']
  return '\n'.join(lines)


def write_atomically(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_write(path, 'w') as f:
    f.write(text)


def _deadline(text: str | None) -> datetime.datetime | None:
  """'HH:MM' (UTC, today) -> the time after which no compile starts."""
  if not text:
    return None
  hour, minute = (int(part) for part in text.split(':'))
  return datetime.datetime.now(datetime.timezone.utc).replace(hour=hour, minute=minute,
                                                              second=0, microsecond=0)


def _notes(args) -> list[str]:
  """What the configs set, as the tables' preamble."""
  notes = [f'CPU XLA buffer plan per device over {args.devices} simulated CPU devices, '
           'abstract inputs, nothing run; total = arguments + outputs + temporaries - aliased '
           '(see the script\'s docstring for what this does and does not measure). Global '
           'batch: one example per data-parallel replica, one micro-batch. params+EMA+Adam: '
           'the parameters, their average and Adam\'s two moments on one device; the batch is '
           'split over the batch axes only, so each device of a res group holds its whole '
           f'example\'s batch. jax {jax.__version__}; compile s (lowering + XLA) and peak RSS '
           f'of the compiling process on a {os.cpu_count()}-core host shared with other work.',
           '']
  for crop in args.crops:
    config = config_lib.load(CONFIGS[crop])
    source = ('set by the config file' if 'use_remat' in CONFIGS[crop].read_text()
              else "TrainConfig's default; the config file does not set it")
    remat = (f'use_remat={config.use_remat} ({source})' if config.use_remat
             else 'use_remat=False in the config, forced on here')
    notes.append(f'- crop {crop}: {CONFIGS[crop].relative_to(ROOT)}, {config.preset}, '
                 f'{config.crop.max_msa_clusters} MSA clusters ({config.crop.max_templates} '
                 f'of them template rows), {config.crop.max_extra_msa} extra sequences, '
                 f'{config.crop.max_templates} templates, {remat}, attention='
                 f'{config.attention!r}, subbatch_size={config.subbatch_size}, '
                 f'dropout={config.dropout}, '
                 f'{config.dtype}, max_num_recycle={config.max_num_recycle} (the recycling loop '
                 f'is compiled whatever is drawn; {config.max_num_recycle + 1} batch slices).')
  return notes


def _case(fields: dict) -> Case:
  return Case(**{**fields, 'axes': tuple(map(tuple, fields['axes']))})


def _read_results(path: pathlib.Path | None) -> dict[Case, dict]:
  if path is None or not path.exists():
    return {}
  lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return {_case(line['case']): line['result'] for line in lines}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--child', help=argparse.SUPPRESS)
  parser.add_argument('--crops', type=int, nargs='+', default=[256, 384], choices=sorted(CONFIGS))
  parser.add_argument('--layouts', nargs='+', default=list(LAYOUTS), choices=LAYOUTS)
  parser.add_argument('--sweep', action=argparse.BooleanOptionalAction, default=True,
                      help='DAP with data=devices/r, res=r for every power of two r')
  parser.add_argument('--devices', type=int, default=8)
  parser.add_argument('--output', type=pathlib.Path, default=ROOT / 'benchmarks' /
                      'sharded_memory.md')
  parser.add_argument('--deadline', help='HH:MM UTC: stop compiling then; what did not finish is '
                      'marked not run (time)')
  parser.add_argument('--timeout', type=float, default=3 * 3600, help='seconds per compile')
  parser.add_argument('--results', type=pathlib.Path, default=None,
                      help='JSON lines of finished cases: read (those are not compiled again) '
                      'and appended to')
  parser.add_argument('--shared', default=None, help='shared data folder (default: ../shared)')
  args = parser.parse_args()
  if args.child:
    spec = json.loads(args.child)
    print(json.dumps(measure(_case(spec['case']), spec['shared'])), flush=True)
    return
  if args.devices < 2 or args.devices & (args.devices - 1):
    parser.error('--devices must be a power of two >= 2')
  args.argv = sys.argv[1:]
  shared = str(args.shared or shared_dir())

  tables, order = [], []
  for crop in args.crops:
    ref = reference_case(crop)
    cases = [ref] + [Case(crop, layout, layout_axes(layout, args.devices))
                     for layout in args.layouts]
    tables.append((f'Crop {crop}: each layout on {args.devices} devices', cases, ref))
    order += cases
  if args.sweep:
    for crop in args.crops:
      cases = sweep_cases(crop, args.devices)
      tables.append((f'Crop {crop}: DAP sweep, data={args.devices}/r, res=r (each device holds '
                     '1/r of an example)', cases, reference_case(crop)))
      order += [c for c in cases if c not in order]

  notes = _notes(args)
  print('\n'.join(notes), flush=True)
  deadline, results = _deadline(args.deadline), _read_results(args.results)
  for case in order:
    if case in results:
      continue
    timeout = args.timeout
    if deadline:
      timeout = min(timeout, (deadline - datetime.datetime.now(datetime.timezone.utc)
                              ).total_seconds())
      if timeout <= 0:
        break
    print(f'{time.strftime("%H:%M:%S")} crop {case.crop} {case.layout} {case.mesh}', flush=True)
    result = run_case(case, args.devices, shared, timeout)
    if result is None and deadline and timeout < args.timeout:
      break  # not run (time)
    result = result or {'error': f'compile took over {timeout:.0f} s'}
    results[case] = result
    print(json.dumps({'case': dataclasses.asdict(case), 'result': result}), flush=True)
    if args.results:
      with args.results.open('a') as f:
        f.write(json.dumps({'case': dataclasses.asdict(case), 'result': result}) + '\n')
    write_atomically(args.output, report(args, tables, results, notes))
  text = report(args, tables, results, notes)
  write_atomically(args.output, text)
  print('\n' + text)


if __name__ == '__main__':
  main()
