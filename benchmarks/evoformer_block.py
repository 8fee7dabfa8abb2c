"""Forward and forward+backward time of one full-size Evoformer block: jaxfold vs AlphaFold.

Both run jitted on the same device, the same inputs and the same parameters (AlphaFold's
perturbed random init, converted by re-nesting), measured in this one run; the script prints
times and the ratio jaxfold / AlphaFold. Needs the test extra (the live reference).

  python benchmarks/evoformer_block.py [--n-res 128] [--n-seq 64] [--repeats 5]
"""

import argparse
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from alphafold.model import modules as af

from jaxfold.model.evoformer import EvoformerIteration, EvoformerIterationConfig
from jaxfold.parity.alphafold_reference import (config_from_reference, flax_params,
                                                reference_config, reference_params)


def _best_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n-res', type=int, default=128)
  parser.add_argument('--n-seq', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()

  cfg = reference_config(one_chunk=True).model  # both unchunked: the fastest of each
  evo, gc = cfg.embeddings_and_evoformer.evoformer, cfg.global_config
  rng = np.random.default_rng(0)
  activations = {
      'msa': jnp.asarray(rng.standard_normal((args.n_seq, args.n_res, 256)), jnp.float32),
      'pair': jnp.asarray(rng.standard_normal((args.n_res, args.n_res, 128)), jnp.float32)}
  masks = {'msa': jnp.ones((args.n_seq, args.n_res)), 'pair': jnp.ones((args.n_res, args.n_res))}

  def reference(activations, masks):
    return af.EvoformerIteration(evo, gc, False)(activations, masks, is_training=False)

  hk_params = reference_params(reference, {'activations': activations, 'masks': masks},
                               from_shapes=True)
  ref_fn = hk.transform(reference).apply
  ours = EvoformerIteration(config_from_reference(EvoformerIterationConfig, evo))
  our_params = {'params': flax_params(hk_params)}
  key = jax.random.key(0)

  def loss(out):
    return jnp.sum(out['msa']) + jnp.sum(out['pair'])

  runs = {
      'forward': (jax.jit(lambda p: ref_fn(p, key, activations, masks)),
                  jax.jit(lambda p: ours.apply(p, activations, masks))),
      'forward+backward': (jax.jit(jax.grad(lambda p: loss(ref_fn(p, key, activations, masks)))),
                           jax.jit(jax.grad(lambda p: loss(ours.apply(p, activations, masks))))),
  }
  print(f'Evoformer block, N_res={args.n_res}, N_seq={args.n_seq}, float32, '
        f'device={jax.devices()[0].device_kind}, best of {args.repeats}')
  for name, (ref_run, our_run) in runs.items():
    t_ref = _best_time(ref_run, hk_params, repeats=args.repeats)
    t_ours = _best_time(our_run, our_params, repeats=args.repeats)
    print(f'{name:<17s} AlphaFold {t_ref * 1e3:9.1f} ms   jaxfold {t_ours * 1e3:9.1f} ms   '
          f'ratio jaxfold/AlphaFold {t_ours / t_ref:5.2f}')


if __name__ == '__main__':
  main()
