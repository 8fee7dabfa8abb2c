"""Output heads (Suppl. 1.9.6-1.9.10) and confidence measures against AlphaFold's own code.

Heads run at full AlphaFold sizes (msa c_m 256, pair c_z 128, single c_s 384) on 20
residues and 6 MSA rows. The confidence functions are compared with
`alphafold.common.confidence` (numpy) on the logits the reference heads produced.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from alphafold.common import confidence as af_confidence
from alphafold.model import config as af_config
from alphafold.model import modules as af

from jaxfold.model import confidence, heads
from jaxfold.model.global_config import GlobalConfig
from jaxfold.parity.alphafold_reference import flax_params, reference_config, run_reference

CFG = reference_config('model_1_ptm').model
N_RES, N_SEQ = 20, 6

# name: (AlphaFold class, jaxfold class, jaxfold config, representation key, input shape).
HEADS = {
    'distogram': (af.DistogramHead, heads.DistogramHead, heads.DistogramConfig,
                  'pair', (N_RES, N_RES, 128)),
    'masked_msa': (af.MaskedMsaHead, heads.MaskedMsaHead, heads.MaskedMsaConfig,
                   'msa', (N_SEQ, N_RES, 256)),
    'predicted_lddt': (af.PredictedLDDTHead, heads.PredictedLddtHead, heads.PredictedLddtConfig,
                       'structure_module', (N_RES, 384)),
    'experimentally_resolved': (af.ExperimentallyResolvedHead, heads.ExperimentallyResolvedHead,
                                heads.ExperimentallyResolvedConfig, 'single', (N_RES, 384)),
    'predicted_aligned_error': (af.PredictedAlignedErrorHead, heads.PredictedAlignedErrorHead,
                                heads.PredictedAlignedErrorConfig, 'pair', (N_RES, N_RES, 128)),
}


def _activation(rng, shape):
  """Un-normalised activations: per-channel offsets and scales, as a residual stream has."""
  c = shape[-1]
  return (rng.standard_normal(shape) * rng.uniform(0.5, 3.0, c)
          + rng.normal(0.0, 1.0, c)).astype(np.float32)


def _run_head(name, seed=0):
  """(haiku params, reference outputs, jaxfold outputs) of one head on the same input."""
  af_cls, ours_cls, _, key, shape = HEADS[name]
  x = _activation(np.random.default_rng(seed), shape)

  def reference(x):
    return af_cls(CFG.heads[name], CFG.global_config)({key: x}, None, False)

  params, ref = run_reference(reference, {'x': x}, seed=seed)
  ours = ours_cls().apply({'params': flax_params(params)}, x)
  return params, ref, ours


@pytest.mark.parametrize('name', sorted(HEADS))
def test_head(parity, name):
  _, ref, ours = _run_head(name)
  parity.check(f'{name}_head', ours, ref)


@pytest.mark.parametrize('name', sorted(HEADS))
def test_config_defaults_are_alphafold_base_values(name):
  config_cls = HEADS[name][2]
  assert dataclasses.asdict(config_cls()) == af_config.CONFIG.model.heads[name].to_dict()


@pytest.fixture(scope='module')
def manifest_path(shared_dir):
  return shared_dir / 'fixtures' / 'alphafold' / 'model_1_ptm_manifest.json'


def test_parameter_tree_matches_released_checkpoint(manifest_path):
  if not manifest_path.exists():
    pytest.skip(f'no parameter manifest at {manifest_path}')
  prefix = 'alphafold/alphafold_iteration/'
  released = {k[len(prefix):]: tuple(v) for k, v in json.loads(manifest_path.read_text()).items()
              if k.startswith(prefix) and k.split('/')[2].endswith('_head')
              and not k.startswith(prefix + 'structure_module')}
  ours = {}
  for name, (_, ours_cls, _, _, shape) in HEADS.items():
    params = ours_cls().init(jax.random.key(0), jnp.zeros(shape))['params']
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      keys = [p.key for p in path]
      ours[f"{name}_head/{'/'.join(keys[:-1])}//{keys[-1]}"] = leaf.shape
  assert ours == released


def test_heads_run_in_bfloat16():
  gc = GlobalConfig(dtype='bfloat16')
  rng = np.random.default_rng(3)
  for name, (_, ours_cls, _, _, shape) in HEADS.items():
    module = ours_cls(global_config=gc)
    x = jnp.asarray(_activation(rng, shape), jnp.bfloat16)
    params = module.init(jax.random.key(0), x)
    out = module.apply(params, x)
    assert out['logits'].dtype == jnp.bfloat16, name
    assert jax.tree.leaves(params)[0].dtype == jnp.float32, name
    assert bool(jnp.all(jnp.isfinite(out['logits'].astype(jnp.float32)))), name


@pytest.fixture(scope='module')
def logits():
  """pLDDT and PAE outputs of the reference heads, as numpy (what AlphaFold's numpy code reads)."""
  out = {name: _run_head(name, seed=1)[1] for name in ('predicted_lddt', 'predicted_aligned_error')}
  return jax.tree.map(np.asarray, out)


def _mask_and_chains(num_res=N_RES):
  mask = np.ones(num_res, np.float32)
  mask[-4:] = 0.0  # padded residues
  asym_id = np.repeat(np.arange(3), [num_res // 2, num_res // 2 - 4, 4]).astype(np.int32)
  return mask, asym_id


def _long_chain_pae(num_res=192, seed=4):
  """PAE logits [N, N, 64] peaked at 0.5-10 Å, as for a confident long chain.

  At 20 residues TM-score's d0 is ~0.3 Å, so any error scores near 0; a long chain with
  small errors exercises pTM across its range.
  """
  rng = np.random.default_rng(seed)
  centre = rng.uniform(1.0, 20.0, (num_res, num_res, 1))
  bins = np.arange(64)
  logits = -0.5 * ((bins - centre) / 3.0) ** 2 + 0.3 * rng.standard_normal((num_res, num_res, 64))
  breaks = np.linspace(0.0, 31.0, 63, dtype=np.float32)
  return {'logits': logits.astype(np.float32), 'breaks': breaks}


def test_plddt(parity, logits):
  lddt = logits['predicted_lddt']['logits']
  parity.check('compute_plddt', confidence.compute_plddt(lddt), af_confidence.compute_plddt(lddt))


def test_predicted_aligned_error(parity, logits):
  pae = logits['predicted_aligned_error']
  parity.check('compute_predicted_aligned_error',
               confidence.compute_predicted_aligned_error(pae['logits'], pae['breaks']),
               af_confidence.compute_predicted_aligned_error(pae['logits'], pae['breaks']))


@pytest.mark.parametrize('weighting', ['none', 'mask', 'soft', 'interface'])
@pytest.mark.parametrize('chain', ['heads', 'long'])
def test_predicted_tm_score(parity, logits, chain, weighting):
  pae = logits['predicted_aligned_error'] if chain == 'heads' else _long_chain_pae()
  num_res = pae['logits'].shape[0]
  mask, asym_id = _mask_and_chains(num_res)
  soft = np.random.default_rng(2).uniform(0.2, 1.0, num_res).astype(np.float32)
  weights = {'none': None, 'mask': mask, 'interface': mask, 'soft': soft}[weighting]
  chains = asym_id if weighting == 'interface' else None
  ours = confidence.predicted_tm_score(pae['logits'], pae['breaks'], weights, asym_id=chains,
                                       interface=chains is not None)
  ref = af_confidence.predicted_tm_score(pae['logits'], pae['breaks'], weights, asym_id=chains)
  parity.check(f'predicted_tm_score({chain}, {weighting})', ours, ref)


@pytest.mark.parametrize('multimer_mode', [False, True])
@pytest.mark.parametrize('padded', [False, True])
def test_confidence_metrics_jitted(parity, logits, multimer_mode, padded):
  mask, asym_id = _mask_and_chains()
  if not padded:
    mask = np.ones_like(mask)
  fn = jax.jit(confidence.confidence_metrics, static_argnames='multimer_mode')
  # Without padding DeepMind passes no mask; ColabFold's all-ones mask is the same thing.
  ours = fn(logits, multimer_mode=multimer_mode, asym_id=asym_id, mask=mask if padded else None)
  ref_input = {name: dict(out) for name, out in logits.items()}  # ColabFold reads asym_id here
  ref_input['predicted_aligned_error']['asym_id'] = asym_id
  ref = af_confidence.get_confidence_metrics(ref_input, mask,
                                             rank_by='multimer' if multimer_mode else 'plddt')
  # ColabFold ranks multimers by 80 ipTM + 20 pTM; DeepMind's (and ours) by 0.8 ipTM + 0.2 pTM.
  ref['ranking_confidence'] = (0.8 * ref['iptm'] + 0.2 * ref['ptm'] if multimer_mode
                               else ref['ranking_confidence'])
  if not multimer_mode:
    del ref['iptm']
  del ref['mean_plddt']
  parity.check(f'confidence_metrics(multimer={multimer_mode}, padded={padded})', ours, ref)


@pytest.mark.parametrize('num_res', [19, 256])
def test_ptm_of_peaked_errors(num_res):
  """Reference-free: all mass in the first PAE bin gives pTM near 1, in the last near 0.

  pTM's first bin is valued at its centre (0.25 Å) against d0(N), and d0 shrinks to
  0.17 Å at the 19-residue floor, so 'near 1' is asserted only for a long chain.
  """
  breaks = heads.PredictedAlignedErrorHead().init_with_output(
      jax.random.key(0), jnp.zeros((1, 1, 128)))[0]['breaks']

  def ptm(peak_bin):
    logits = 50.0 * jax.nn.one_hot(jnp.full((num_res, num_res), peak_bin), 64)
    return float(confidence.predicted_tm_score(logits, breaks))

  d0 = 1.24 * (max(num_res, 19) - 15) ** (1 / 3) - 1.8
  assert ptm(0) == pytest.approx(1 / (1 + (0.25 / d0) ** 2), rel=1e-5)
  assert ptm(63) == pytest.approx(1 / (1 + (31.75 / d0) ** 2), rel=1e-5)
  assert ptm(63) < 0.05
  if num_res >= 100:
    assert ptm(0) > 0.99
