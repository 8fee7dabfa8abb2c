"""Validation on held-out chains: structure metrics, loss terms and the predicted structures.

Every K training steps the averaged (EMA) parameters predict each held-out chain whole
(AlphaFold's inference: eval-mode features, every residue, no crop, no dropout), and the
prediction is scored against the chain's experimental structure as OpenFold's training
loop validates (`_compute_validation_metrics`): lDDT-Cα (Jumper et al. (2021) Suppl. 1.9.6),
GDT-TS / GDT-HA, Cα RMSD after Kabsch superposition and drmsd-Cα (`jaxfold.loss.metrics`),
plus every scalar of the training loss (`jaxfold.loss.total.alphafold_loss`) on the same
outputs. The structures of a few chains are kept as PDB files by step, beside the truth,
so that a training trajectory can be studied afterwards:

  <workdir>/predictions/<chain>/step_<step:08d>.pdb   prediction, pLDDT in the B-factors
  <workdir>/predictions/<chain>/truth.pdb             experimental atoms, written once

`load_validation_set` processes each chain once, deterministically; `evaluate` compiles one
function per model setting and chain shape and keeps it across calls, so validating again
recompiles nothing.
"""

import dataclasses
import functools
import logging
import os
import pathlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jaxfold.common import protein
from jaxfold.common import residue_constants as rc
from jaxfold.common.atomic_file import atomic_write, run_path
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import dataset_builder, processing
from jaxfold.loss import metrics
from jaxfold.loss.total import LossConfig, alphafold_loss
from jaxfold.model.alphafold import AlphaFold, model_features
from jaxfold.model.config import AlphaFoldConfig, ModelConfig
from jaxfold.model.global_config import GlobalConfig
from jaxfold.train import sharding

logger = logging.getLogger(__name__)

PREDICTIONS_DIR = 'predictions'
TRUTH_FILE = 'truth.pdb'

# The structure metrics of `chain_metrics` reported per chain ('num_ca' is a count, not a
# score, and is left out of the results).
STRUCTURE_METRICS = ('lddt_ca', 'gdt_ts', 'gdt_ha', 'rmsd_ca', 'drmsd_ca')


@dataclasses.dataclass(frozen=True, eq=False)
class ValidationChain:
  """One held-out chain, processed once (numpy).

  name: its `domain_name` (e.g. '2q2k_A').
  features: what the model reads, [N_slices, ...] (`model_features`), N_slices =
    (num_recycle + 1) * num_ensemble.
  labels: the last slice of every other processed feature (ground truth, 'true_msa',
    'bert_mask', 'seq_length', ...), no slice axis; the loss reads these with the last
    slice of `features` (`loss_batch`).
  truth: the experimental structure: resolved atoms only, residues numbered from 1 as in
    the predicted structure.
  num_recycle, num_ensemble: the slices the features were processed for.
  """
  name: str
  features: dict[str, np.ndarray]
  labels: dict[str, np.ndarray]
  truth: protein.Protein
  num_recycle: int
  num_ensemble: int

  @property
  def num_res(self) -> int:
    return self.features['aatype'].shape[1]

  def loss_batch(self) -> dict[str, np.ndarray]:
    """The batch `alphafold_loss` reads: the last slice of every feature, labels included."""
    return {**{k: v[-1] for k, v in self.features.items()}, **self.labels}


@dataclasses.dataclass(frozen=True)
class ValidationResult:
  """What one validation measured and predicted; dicts keyed by chain name, in input order.

  per_chain: chain -> {STRUCTURE_METRICS (lDDT-Cα and GDT as fractions in [0, 1], RMSDs in
    Å), and every scalar of the loss breakdown ('loss', 'fape', 'distogram', ...)}.
  mean: the unweighted mean over chains of each of those.
  predicted: chain -> predicted structure (real residues, pLDDT in the B-factors as
    `jaxfold predict` writes it; the model's frame, not superposed on the truth).
  truth: chain -> experimental structure (`ValidationChain.truth`).
  """
  per_chain: dict[str, dict[str, float]]
  mean: dict[str, float]
  predicted: dict[str, protein.Protein]
  truth: dict[str, protein.Protein]


def _chain_seed(seed: int, name: str) -> int:
  """A per-chain processing seed: chains of equal length get different MSA samples and masks."""
  return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _truth(features: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
           ) -> protein.Protein:
  mask = labels['all_atom_mask']
  return protein.Protein(
      atom_positions=labels['all_atom_positions'], aatype=features['aatype'][-1],
      atom_mask=mask, residue_index=features['residue_index'][-1] + 1,
      chain_index=np.zeros_like(features['aatype'][-1]), b_factors=np.zeros_like(mask))


def load_validation_set(dataset_dir: str | os.PathLike, split: str, config: AlphaFoldConfig,
                        *, num_recycle: int, seed: int = 0, max_chains: int | None = None,
                        max_length: int | None = None) -> list[ValidationChain]:
  """The held-out chains of a built split, each processed once for validation.

  Each chain is processed in eval mode with its labels (`process_features(mode='eval',
  supervised=True)`): every residue, no crop, MSA sampling and masking drawn from `seed`
  and the chain's name, so the set is the same at every call.

  Args:
    dataset_dir: a built training set (`jaxfold data build`; `load_data_source`'s folder).
    split: the split to read.
    config: the model's configuration: `data` sizes the features, `model` selects them.
    num_recycle: recycling iterations the features are processed for.
    seed: seed of the processing.
    max_chains: keep at most this many chains, the first ones of the split (None: all).
    max_length: skip chains longer than this, with a logged warning (None: no limit).

  Returns:
    The chains in the split's order, chains skipped (too long, or without a resolved Cα,
    which cannot be scored) left out with a logged warning.
  """
  source = dataset_builder.load_data_source(dataset_dir, split)
  ca = rc.atom_order['CA']
  chains = []
  for index in range(len(source)):
    if max_chains is not None and len(chains) >= max_chains:
      break
    raw = source[index]
    name = raw['domain_name'][0].decode()
    if 'all_atom_positions' not in raw or 'all_atom_mask' not in raw:
      raise ValueError(f'{dataset_dir}: validation chain {name} of split {split!r} has no '
                       'ground truth (all_atom_positions, all_atom_mask)')
    num_res = raw['aatype'].shape[0]
    if max_length is not None and num_res > max_length:
      logger.warning('validation: skipping chain %s of %s: %d residues > max_length %d',
                     name, split, num_res, max_length)
      continue
    if not np.any(raw['all_atom_mask'][:, ca]):
      logger.warning('validation: skipping chain %s of %s: no resolved CA atom', name, split)
      continue
    batch = processing.process_features(
        raw, config.data, mode='eval', seed=_chain_seed(seed, name), num_recycle=num_recycle,
        supervised=True, source=f'validation chain {name}')
    features = model_features(batch, config.model, source=f'validation chain {name}')
    labels = {k: v[-1] for k, v in batch.items() if k not in features}
    chains.append(ValidationChain(
        name=name, features=features, labels=labels, truth=_truth(features, labels),
        num_recycle=num_recycle, num_ensemble=config.data.eval.num_ensemble))
  return chains


def structure_scores(predicted_positions: jax.Array, labels: Mapping[str, jax.Array],
                     config: metrics.MetricsConfig = metrics.MetricsConfig()
                     ) -> dict[str, jax.Array]:
  """STRUCTURE_METRICS of predicted atom37 positions [N_res, 37, 3] against the labels'
  'all_atom_positions' and 'all_atom_mask' (resolved Cα only); jit-able."""
  scores = metrics.chain_metrics(predicted_positions, labels['all_atom_positions'],
                                 labels['all_atom_mask'], config)
  return {k: scores[k] for k in STRUCTURE_METRICS}


@functools.lru_cache(maxsize=8)
def _compiled_chain_evaluation(model_config: ModelConfig, global_config: GlobalConfig,
                               loss_config: LossConfig, metrics_config: metrics.MetricsConfig,
                               mesh: jax.sharding.Mesh | None):
  """The jitted evaluation of one chain; jax.jit keeps one compilation per chain shape."""
  model = AlphaFold(model_config, global_config)

  def evaluate_chain(params, features, labels, num_recycle, num_ensemble):
    outputs = model.apply({'params': params}, features, num_recycle=num_recycle,
                          num_ensemble=num_ensemble)
    # Scores in float32 whatever the compute dtype, as the training loss.
    outputs = jax.tree.map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, outputs)
    batch = {**{k: v[-1] for k, v in features.items()}, **labels}
    _, breakdown = alphafold_loss(outputs, batch, loss_config)
    structure = outputs['structure_module']
    num_res = features['aatype'].shape[1]
    plddt = (outputs['confidence']['plddt'] if 'confidence' in outputs
             else jnp.zeros((num_res,), jnp.float32))
    return {'scores': {**{k: v for k, v in breakdown.items() if jnp.ndim(v) == 0},
                       **structure_scores(structure['final_atom_positions'], batch,
                                          metrics_config)},
            'final_atom_positions': structure['final_atom_positions'],
            'final_atom_mask': structure['final_atom_mask'], 'plddt': plddt}

  if mesh is None:
    return jax.jit(evaluate_chain, static_argnames='num_ensemble')
  # On a training mesh (perhaps over several processes) the chain is given to every device and
  # the outputs come back whole on each, so every process can read them.
  everywhere = sharding.replicated(mesh)
  return jax.jit(evaluate_chain, static_argnames='num_ensemble',
                 in_shardings=(None, everywhere, everywhere, everywhere),
                 out_shardings=everywhere)


def _predicted_protein(chain: ValidationChain, out: Mapping[str, np.ndarray]) -> protein.Protein:
  """The prediction as `jaxfold predict` writes it: real residues, pLDDT as B-factors."""
  real = chain.features['seq_mask'][-1] > 0
  return protein.from_prediction(
      features={'aatype': chain.features['aatype'][-1][real],
                'residue_index': chain.features['residue_index'][-1][real]},
      result={'structure_module': {'final_atom_positions': out['final_atom_positions'][real],
                                   'final_atom_mask': out['final_atom_mask'][real]}},
      b_factors=out['plddt'][real], remove_leading_feature_dimension=False)


def evaluate(params: Any, model_config: ModelConfig, chains: Sequence[ValidationChain],
             loss_config: LossConfig, *, num_recycle: int,
             global_config: GlobalConfig | None = None,
             metrics_config: metrics.MetricsConfig = metrics.MetricsConfig(),
             mesh: jax.sharding.Mesh | None = None) -> ValidationResult:
  """Predicts every chain without dropout and scores it.

  Args:
    params: the model's 'params' collection (e.g. the EMA parameters of the train state).
    model_config: the network (`AlphaFoldConfig.model`).
    chains: from `load_validation_set`, processed for `num_recycle`.
    loss_config: the loss whose breakdown is reported.
    num_recycle: recycling iterations; must be the count the chains were processed for.
    global_config: compute settings (dtype, memory); default GlobalConfig().
    metrics_config: lDDT radius and GDT search settings.
    mesh: the training mesh `params` live on (None: one device); every process gets the
      results.

  Returns:
    Per-chain scores, their means, and each chain's predicted and true structures.
  """
  if not chains:
    raise ValueError('evaluate: no validation chains given')
  for chain in chains:
    if chain.num_recycle != num_recycle:
      raise ValueError(f'validation chain {chain.name} was processed for num_recycle '
                       f'{chain.num_recycle}, evaluate was asked for {num_recycle}')
  run = _compiled_chain_evaluation(model_config, global_config or GlobalConfig(), loss_config,
                                   metrics_config, mesh)
  per_chain, predicted, truth = {}, {}, {}
  for chain in chains:
    out = jax.device_get(run(params, chain.features, chain.labels,
                             jnp.asarray(num_recycle, jnp.int32), chain.num_ensemble))
    per_chain[chain.name] = {k: float(v) for k, v in out['scores'].items()}
    predicted[chain.name] = _predicted_protein(chain, out)
    truth[chain.name] = chain.truth
  names = next(iter(per_chain.values()))
  mean = {k: float(np.mean([scores[k] for scores in per_chain.values()])) for k in names}
  return ValidationResult(per_chain=per_chain, mean=mean, predicted=predicted, truth=truth)


def prediction_paths(workdir: str | os.PathLike, chain: str, step: int
                     ) -> tuple[epath.Path, epath.Path]:
  """(prediction at `step`, truth) of a kept chain under `workdir` (local or gs://)."""
  folder = run_path(workdir) / PREDICTIONS_DIR / chain
  return folder / f'step_{step:08d}.pdb', folder / TRUTH_FILE


def write_predictions(result: ValidationResult, workdir: str | os.PathLike, step: int,
                      chain_names: Sequence[str]) -> list[epath.Path]:
  """Writes the predicted structure of each named chain at `step`, and its truth once.

  Each file appears whole or not at all (written beside its target, then renamed); a
  prediction already written at this step (a resumed run validating again) is replaced.

  Returns:
    The files written, in order.
  """
  missing = [name for name in chain_names if name not in result.predicted]
  if missing:
    raise JaxfoldError(f'validation chains {missing} to keep are not in the validation set '
                   f'({sorted(result.predicted)})')
  written = []
  for name in chain_names:
    if not name or name in ('.', '..') or pathlib.Path(name).name != name or '\\' in name:
      raise ValueError(f'validation chain name {name!r} cannot be a folder name')
    step_path, truth_path = prediction_paths(workdir, name, step)
    step_path.parent.mkdir(parents=True, exist_ok=True)
    if not truth_path.exists():
      with atomic_write(truth_path, 'w') as f:
        f.write(protein.to_pdb(result.truth[name]))
      written.append(truth_path)
    with atomic_write(step_path, 'w') as f:
      f.write(protein.to_pdb(result.predicted[name]))
    written.append(step_path)
  return written
