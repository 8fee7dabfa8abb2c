"""Several processes, one run: `jax.distributed` started before anything touches a device.

On a multi-host Cloud TPU slice JAX finds its peers itself; elsewhere (GPU nodes under SLURM,
CPU processes on one machine) the coordinator's address, the process count and this
process's index are given. CPU processes exchange data through gloo.
"""

import os

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the run's processes; a no-op for a single process."""
  explicit = (coordinator, num_processes, process_id)
  if any(value is not None for value in explicit):
    if any(value is None for value in explicit):
      raise ValueError('--coordinator, --num-processes and --process-id go together')
    if not 0 <= process_id < num_processes:
      raise ValueError(f'--process-id {process_id} is not in 0..{num_processes - 1}')
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator, num_processes, process_id)
  elif len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1:  # a multi-host slice
    jax.distributed.initialize()
