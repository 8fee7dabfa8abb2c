"""Compiled memory plan of one full-size Evoformer block per attention kernel, vs AlphaFold.

Nothing runs: each variant is lowered on abstract inputs and compiled, and XLA's buffer plan
(`compiled.memory_analysis()`: temporaries, the part that grows with N_res) is printed for
the forward pass and for forward+backward (the gradient of every parameter and input), beside
AlphaFold's own block (`alphafold-colabfold`, float32, no Pallas) compiled the same way, in
one chunk and in its inference subbatches of 4, with the ratio jaxfold / AlphaFold (one chunk).
Needs the test extra (the live reference).

  python benchmarks/attention_memory.py [--n-res 256 512 768] [--n-seq 128] [--chunk 128]
"""

import argparse
import copy

import haiku as hk
import jax
import jax.numpy as jnp
from alphafold.model import modules as af

from jaxfold.model.evoformer import EvoformerIteration, EvoformerIterationConfig
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_reference import (config_from_reference, flax_params,
                                                reference_config)

GIB = 2.0**30


def temporaries(fn, *args) -> float:
  """GiB of temporaries in XLA's plan of jit(fn)(*args), args abstract."""
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes / GIB


def plans(apply, params, activations, masks) -> tuple[float, float]:
  """(forward, forward+backward) temporaries of apply(params, activations, masks)."""
  def loss(p, a):
    out = apply(p, a, masks)
    return jnp.sum(out['msa']) + jnp.sum(out['pair'])
  return (temporaries(apply, params, activations, masks),
          temporaries(jax.grad(loss, argnums=(0, 1)), params, activations))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n-res', type=int, nargs='+', default=[256, 512, 768])
  parser.add_argument('--n-seq', type=int, default=128)
  parser.add_argument('--chunk', type=int, default=128, help='chunk of the chunked kernel')
  args = parser.parse_args()

  cfg = reference_config(one_chunk=True).model
  subbatched = copy.deepcopy(cfg)
  subbatched.global_config.subbatch_size = 4
  evo = cfg.embeddings_and_evoformer.evoformer
  ours_config = config_from_reference(EvoformerIterationConfig, evo)
  variants = {'jaxfold xla': GlobalConfig(),
              'jaxfold chunked': GlobalConfig(attention='chunked', attention_chunk_size=args.chunk),
              'jaxfold xla, subbatch 4': GlobalConfig(subbatch_size=4),
              'jaxfold chunked, subbatch 4': GlobalConfig(
                  subbatch_size=4, attention='chunked', attention_chunk_size=args.chunk)}

  print(f'One Evoformer block, N_seq={args.n_seq}, float32, chunk {args.chunk}: temporaries '
        f'in GiB (XLA plan, {jax.devices()[0].platform}), ratio to AlphaFold in one chunk')
  print('| N_res | variant | forward | ratio | forward+backward | ratio |')
  print('|---|---|---|---|---|---|')
  for n in args.n_res:
    activations = {'msa': jax.ShapeDtypeStruct((args.n_seq, n, 256), jnp.float32),
                   'pair': jax.ShapeDtypeStruct((n, n, 128), jnp.float32)}
    masks = {'msa': jnp.ones((args.n_seq, n)), 'pair': jnp.ones((n, n))}
    results = {}
    for name, model_cfg in (('AlphaFold', cfg), ('AlphaFold, subbatch 4', subbatched)):
      def reference(activations, masks, c=model_cfg):
        return af.EvoformerIteration(c.embeddings_and_evoformer.evoformer, c.global_config,
                                     False)(activations, masks, is_training=False)
      transformed = hk.transform(reference)
      key = jax.random.key(0)
      params = jax.eval_shape(transformed.init, key, activations, masks)
      results[name] = plans(lambda p, a, m, t=transformed: t.apply(p, key, a, m), params,
                            activations, masks)
    tree = {'params': flax_params(params)}
    for name, gc in variants.items():
      block = EvoformerIteration(ours_config, global_config=gc)
      results[name] = plans(block.apply, tree, activations, masks)
    base = results['AlphaFold']
    for name, (forward, backward) in results.items():
      print(f'| {n} | {name} | {forward:.2f} | {forward / base[0]:.2f} | {backward:.2f} | '
            f'{backward / base[1]:.2f} |')


if __name__ == '__main__':
  main()
