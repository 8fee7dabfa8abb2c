"""Per-device memory of one prediction split by residues over 8 devices (`predict --mesh res=8`).

Compiles `jaxfold predict`'s program (`memory_plan.plan`, as `jaxfold plan --mesh res=8`:
full-size model_1_ptm, one iteration, 512 MSA clusters less the 4 template rows, 1,024 extra
sequences, 4 templates, float32) on one device and over 8 simulated CPU devices, on abstract
inputs (nothing runs), and prints XLA's plan of one device (arguments + outputs + temporaries
- aliased) and the ratio. Parameters, batch and outputs are whole on every device; the MSA
and pair activations are split by rows or columns (dynamic axial parallelism).

This is the CPU compiler's plan after SPMD partitioning: a GPU's or TPU's fuses, pads and
buffers collectives differently. Simulated devices share the host's cores: no times.

  python benchmarks/sharded_inference_memory.py [--lengths 4096 8192] [--settings lean]
      [--devices 8]
"""

import argparse
import os
import sys


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--lengths', type=int, nargs='+', default=[4096, 8192])
  parser.add_argument('--settings', nargs='+', default=['lean'])
  parser.add_argument('--devices', type=int, default=8)
  args = parser.parse_args(argv)
  # The device count is fixed when JAX starts.
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={args.devices}').strip()
  import jax  # pylint: disable=import-outside-toplevel
  from jaxfold import memory_plan  # pylint: disable=import-outside-toplevel

  mesh = (('res', args.devices),)
  print(f'model_1_ptm, one iteration, 508 MSA clusters, 1,024 extra sequences, 4 templates, '
        f'float32; {len(jax.devices())} simulated {jax.devices()[0].platform} devices, jax '
        f'{jax.__version__}; GiB of one device')
  for length in args.lengths:
    for settings in args.settings:
      plans = [memory_plan.plan(memory_plan.preset_shapes(
          'model_1_ptm', length, extra_msa=1024, num_recycle=0, mesh=on), settings)
               for on in ((), mesh)]
      one, split = (p.total_bytes / 2**30 for p in plans)
      print(f'{length:,} residues, {settings}: one device {one:.2f}, res={args.devices} '
            f'{split:.2f} per device ({split / one:.2f}x); temporaries '
            f'{plans[0].temp_bytes / 2**30:.2f} -> {plans[1].temp_bytes / 2**30:.2f}; '
            f'compiles {plans[0].compile_seconds:.0f} s, {plans[1].compile_seconds:.0f} s',
            flush=True)


if __name__ == '__main__':
  sys.exit(main())
