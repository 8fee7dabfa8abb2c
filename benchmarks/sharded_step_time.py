"""Step time of the tiny config on 8 simulated CPU devices under each layout, vs one device.

The training step of `configs/train/tiny.py` (dropout off, no recycling, global batch 8 of
real 2q2k crops from the shared data, same initial parameters), jitted as `jaxfold train`
jits it (`sharding.make_mesh`, `sharding.state_shardings`, `step.jit_train_step`), on:
one device (a process with one CPU device), and 8 devices of one process
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`) under `data` (data=8), `fsdp`
(data=2,fsdp=4), `dap` (data=2,res=4) and `fsdp_dap` (data=2,fsdp=2,res=2). Each case runs in
a fresh process; printed: compile time, median step time over `--steps` steps after one
warm-up step, and the first step's loss (the same computation on every mesh).

What this can and cannot say: the 8 "devices" are threads of this machine's CPUs, so the
ratio shows the cost of the partitioned program (collectives, smaller kernels, compile time)
on shared cores, not a speed-up; with 2 cores no layout can be faster than one device. How a
layout scales on TPU or GPU (interconnect bandwidth, HBM) can only be measured there:
`python benchmarks/sharded_step_time.py` runs unchanged on an 8-chip host if `--simulate` is
left off.

  python benchmarks/sharded_step_time.py [--steps 5] [--simulate/--no-simulate]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {  # name: (mesh, layout, devices)
    'one device': ((('data', 1),), 'data', 1),
    'data': ((('data', 8),), 'data', 8),
    'fsdp': ((('data', 2), ('fsdp', 4)), 'fsdp', 8),
    'dap': ((('data', 2), ('res', 4)), 'dap', 8),
    'fsdp_dap': ((('data', 2), ('fsdp', 2), ('res', 2)), 'fsdp_dap', 8),
}
GLOBAL_BATCH = 8
TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', 'train',
                    'tiny.py')


def _child(name: str, steps: int) -> dict:
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np

  from jaxfold.parity.alphafold_model import shared_dir
  from jaxfold.parity.alphafold_training import training_batch
  from jaxfold.train import config as config_lib, loop, optimizer, sharding
  from jaxfold.train import state as state_lib, step as step_lib

  axes, layout, count = CASES[name]
  config = config_lib.override(config_lib.load(TINY), [
      'dropout=False', 'max_num_recycle=0', f'global_batch_size={GLOBAL_BATCH}',
      f'mesh={axes!r}', f'sharding={layout}'])
  tx = optimizer.adam(config.optimizer)
  mesh = sharding.make_mesh(config.mesh, config.sharding, jax.devices()[:count])
  rules = sharding.LAYOUTS[config.sharding]
  shapes = jax.eval_shape(lambda: state_lib.create(
      state_lib.init_params(config.model, jax.random.key(0)), tx, config.seed))
  shardings = sharding.state_shardings(shapes, mesh, rules, tx)
  params = loop.initial_params(config, None, shardings.params)
  state = jax.jit(lambda p: state_lib.create(p, tx, config.seed), out_shardings=shardings)(params)
  examples = [training_batch(shared_dir(), 'model_3_ptm', crop_size=32, max_msa_clusters=16,
                             max_extra_msa=32, seed=seed) for seed in range(GLOBAL_BATCH)]
  batch = sharding.global_batch({k: np.stack([e[k] for e in examples]) for k in examples[0]},
                                sharding.batch_sharding(mesh, rules))
  start = time.perf_counter()
  compiled = step_lib.jit_train_step(config, tx, mesh, shardings).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  times, losses = [], []
  for _ in range(steps + 1):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    losses.append(float(metrics['loss']))  # waits for the step
    times.append(time.perf_counter() - start)
  return {'devices': len(jax.devices()), 'compile_s': compile_s,
          'step_s': statistics.median(times[1:]), 'first_loss': losses[0]}


def _run_case(name: str, steps: int, simulate: bool) -> dict:
  env = dict(os.environ)
  if simulate:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count='
                        f'{CASES[name][2]}').strip()
    env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run([sys.executable, __file__, '--child', name, '--steps', str(steps)],
                        env=env, capture_output=True, text=True, check=False)
  if done.returncode:
    return {'error': (done.stderr.strip().splitlines() or ['?'])[-1]}
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--simulate', action=argparse.BooleanOptionalAction, default=True,
                      help='simulate the devices on the CPU (default); off on a real host')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.child, args.steps)))
    return
  print(f'tiny config, global batch {GLOBAL_BATCH}, median of {args.steps} steps'
        + (' on simulated CPU devices' if args.simulate else ''))
  print(f'{"layout":<11} {"mesh":<22} {"compile s":>9} {"step s":>8} {"x one":>6} '
        f'{"first loss":>11}')
  reference = None
  for name, (axes, _, _) in CASES.items():
    result = _run_case(name, args.steps, args.simulate)
    mesh = ','.join(f'{axis}={size}' for axis, size in axes)
    if 'error' in result:
      print(f'{name:<11} {mesh:<22} failed: {result["error"]}')
      continue
    reference = reference or result
    print(f'{name:<11} {mesh:<22} {result["compile_s"]:9.1f} {result["step_s"]:8.3f} '
          f'{result["step_s"] / reference["step_s"]:6.2f} {result["first_loss"]:11.5f}',
          flush=True)


if __name__ == '__main__':
  main()
