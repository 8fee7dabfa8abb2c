"""Parameter paths and shapes of the Evoformer, extra-MSA and template pair stacks equal those
of DeepMind's released model_1_ptm weights (the manifest fixture), leading block axes included.
"""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxfold.convert.haiku_tree import to_haiku
from jaxfold.model.evoformer import evoformer_stack
from jaxfold.model.template_pair_stack import TemplatePairStack

EVOFORMER = 'alphafold/alphafold_iteration/evoformer/'
TEMPLATE = EVOFORMER + 'template_embedding/single_template_embedding/'


@pytest.fixture(scope='module')
def manifest_path(shared_dir):
  return shared_dir / 'fixtures' / 'alphafold' / 'model_1_ptm_manifest.json'


def _manifest_under(path: pathlib.Path, prefix: str) -> dict[str, tuple[int, ...]]:
  if not path.exists():
    pytest.skip(f'no manifest fixture at {path}')
  manifest = json.loads(path.read_text())
  return {key[len(prefix):]: tuple(shape) for key, shape in manifest.items()
          if key.startswith(prefix)}


def _shapes(variables: dict, root: str | None = None) -> dict[str, tuple[int, ...]]:
  return {f'{path}//{name}': tuple(leaf.shape)
          for path, leaves in to_haiku(variables['params'], root).items()
          for name, leaf in leaves.items()}


class _Stack(nn.Module):
  num_block: int
  is_extra_msa: bool

  @nn.compact
  def __call__(self, activations, masks):
    return evoformer_stack(activations, masks, num_block=self.num_block,
                           is_extra_msa=self.is_extra_msa)


@pytest.mark.parametrize('name, num_block, c_m', [('evoformer_iteration', 48, 256),
                                                  ('extra_msa_stack', 4, 64)])
def test_evoformer_stacks_match_alphafold(manifest_path, name, num_block, c_m):
  activations = {'msa': jnp.zeros((3, 8, c_m)), 'pair': jnp.zeros((8, 8, 128))}
  masks = {'msa': jnp.ones((3, 8)), 'pair': jnp.ones((8, 8))}
  variables = jax.eval_shape(_Stack(num_block, name == 'extra_msa_stack').init,
                             jax.random.key(0), activations, masks)
  expected = {k: v for k, v in _manifest_under(manifest_path, EVOFORMER).items()
              if k.startswith(name + '/')}
  assert _shapes(variables) == expected


def test_template_pair_stack_matches_alphafold(manifest_path):
  variables = jax.eval_shape(TemplatePairStack().init, jax.random.key(0),
                             jnp.zeros((8, 8, 64)), jnp.ones((8, 8)))
  expected = _manifest_under(manifest_path, TEMPLATE)
  expected = {k: v for k, v in expected.items() if k.startswith('template_pair_stack/')}
  assert _shapes(variables, 'template_pair_stack') == expected
