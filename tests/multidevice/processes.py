"""One process of tests/test_multiprocess.py: three training steps of the step machinery on
all devices of all processes, then a checkpoint written by every process.

  python processes.py OUT --process-id I --num-processes N --port P   # one of N processes
  python processes.py OUT                                             # alone, for reference

Writes OUT/params_<I>.npz (process I's view of the final parameters, gathered) and the
checkpoint OUT/run/checkpoints/3; alone, it also restores OUT/restore_from's checkpoint (if
given) and writes OUT/restored.npz.
"""

import argparse
import pathlib
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxfold.train import checkpoints as checkpoints_lib
from jaxfold.train import config as config_lib, distributed, optimizer, sharding

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_layouts import SCALES, TINY, _every_parameter_loss, _sharded_step  # noqa: E402

MESH, LAYOUT = (('data', 2), ('fsdp', 2), ('res', 2)), 'fsdp_dap'
STEPS = 3


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('out')
  parser.add_argument('--process-id', type=int)
  parser.add_argument('--num-processes', type=int)
  parser.add_argument('--port', type=int)
  parser.add_argument('--restore-from')
  args = parser.parse_args()
  if args.port:
    distributed.initialize(f'localhost:{args.port}', args.num_processes, args.process_id)
  out = pathlib.Path(args.out)
  config = config_lib.override(config_lib.load(TINY), [
      'dropout=False', 'max_num_recycle=0', 'global_batch_size=8'])
  tx = optimizer.adam(config.optimizer)
  state, step, batch_sharding, shardings = _sharded_step(config, tx, MESH, LAYOUT,
                                                         _every_parameter_loss)
  shapes = jax.eval_shape(lambda: state)
  # Each process reads only its own block of the global batch, as the data loader does.
  per_process = 8 // jax.process_count()
  local = {k: v[jax.process_index() * per_process:][:per_process] for k, v in SCALES.items()}
  for _ in range(STEPS):
    state, _ = step(state, sharding.global_batch(local, batch_sharding))
  gathered = multihost_utils.process_allgather(state.params, tiled=True)
  np.savez(out / f'params_{jax.process_index()}.npz',
           **{jax.tree_util.keystr(k): v
              for k, v in jax.tree_util.tree_flatten_with_path(gathered)[0]})
  manager = checkpoints_lib.Checkpoints(out / 'run', keep=1)
  manager.save(STEPS, state, {'step': STEPS})
  manager.wait()
  if args.restore_from:
    restored, _ = checkpoints_lib.Checkpoints(args.restore_from, keep=1).restore(
        STEPS, sharding.abstract(shapes, shardings))
    np.savez(out / 'restored.npz',
             **{jax.tree_util.keystr(k): np.asarray(v)
                for k, v in jax.tree_util.tree_flatten_with_path(restored.params)[0]})
  manager.close()


if __name__ == '__main__':
  main()
