"""Raw features to a model batch: AlphaFold's feature processing, eval and training mode.

`process_features(raw, data_config, mode=..., seed=...)` turns the data pipeline's raw
feature dict (AlphaFold's `features.pkl`) into the batch the model reads, laid out exactly
as AlphaFold's `np_example_to_features` returns it: AlphaFold's key names and dtypes, a
leading axis of (num_recycle + 1) * num_ensemble slices (each slice a fresh MSA sample when
`resample_msa_in_recycling`), and fixed sizes (clusters, extra rows, templates, residues).

Jumper et al. (2021) Suppl. 1.2 'Input features': the per-example steps run once; MSA
sampling, BERT masking (1.2.7), clustering and the extra-MSA crop run afresh per slice;
residue cropping (1.2.8) and template choice are drawn once, so every slice shows the same
residues and templates. Training mode adds contiguous or spatial crops, template
subsampling, MSA block deletion (Alg. 1) and carries ground-truth labels, with the settings
of `TrainingDataConfig` (OpenFold's `data.train`).

All randomness comes from `seed` through numpy Generators: the same seed gives the same
batch; AlphaFold's own random streams are not reproduced, only their distributions.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np

from jaxfold.common import residue_constants as rc
from jaxfold.common.errors import JaxfoldError
from jaxfold.data import crop as crop_lib
from jaxfold.data import transforms
from jaxfold.data.transforms import Features, MaskedMsaProbs

Mode = Literal['eval', 'train']


class DataCommonConfig(Protocol):
  """The fields of AlphaFold's `data.common` read here (jaxfold.model.config.DataCommonConfig)."""
  masked_msa: MaskedMsaProbs
  max_extra_msa: int
  msa_cluster_features: bool
  num_recycle: int
  reduce_msa_clusters_by_max_templates: bool
  resample_msa_in_recycling: bool
  use_templates: bool


class DataEvalConfig(Protocol):
  """The fields of AlphaFold's `data.eval` read here (jaxfold.model.config.DataEvalConfig)."""
  fixed_size: bool
  subsample_templates: bool
  masked_msa_replace_fraction: float
  max_msa_clusters: int
  max_templates: int
  num_ensemble: int


class DataConfig(Protocol):
  """AlphaFold's `data` config: jaxfold.model.config.DataConfig fits it."""
  common: DataCommonConfig
  eval: DataEvalConfig


@dataclasses.dataclass(frozen=True)
class BlockDeleteMsaConfig:
  """Suppl. Alg. 1 'MSABlockDeletion' (OpenFold's `data.common.block_delete_msa`)."""
  msa_fraction_per_block: float = 0.3
  num_blocks: int = 5
  randomize_num_blocks: bool = False


@dataclasses.dataclass(frozen=True)
class TrainingDataConfig:
  """Training-mode settings AlphaFold's released config lacks (OpenFold's `data.train`).

  crop_size: residues per crop (and the padded residue count).
  spatial_crop_prob: chance of a spatial rather than a contiguous crop.
  block_delete_msa: MSA block deletion before sampling; None turns it off.
  max_distillation_msa_clusters: rows kept of a self-distillation MSA (raw
    `is_distillation` set) before sampling.
  clamp_prob: chance that the batch's `use_clamped_fape` is 1 (Suppl. 1.9.2).
  shuffle_top_k_prefiltered: read by the template featurizer, which shuffles the top
    hits before choosing templates; kept here so `data.train` is one object.
  """
  crop_size: int = 256
  max_msa_clusters: int = 128
  max_extra_msa: int = 1024
  max_templates: int = 4
  shuffle_top_k_prefiltered: int = 20
  masked_msa_replace_fraction: float = 0.15
  subsample_templates: bool = True
  spatial_crop_prob: float = 0.5
  block_delete_msa: BlockDeleteMsaConfig | None = BlockDeleteMsaConfig()
  max_distillation_msa_clusters: int = 1000
  clamp_prob: float = 0.9


class RawFeatureError(JaxfoldError):
  """A raw feature dict lacks a key or holds an array of the wrong shape."""


# Raw keys the processing reads (AlphaFold's `unsupervised_features` and
# `template_features`); labels come in addition when supervised.
_SEQUENCE_FEATURES = ('aatype', 'residue_index', 'between_segment_residues', 'msa')
_TEMPLATE_FEATURES = ('template_aatype', 'template_all_atom_positions',
                      'template_all_atom_masks', 'template_sum_probs')
# OpenFold's names for the same raw arrays.
_ALIASES = {'template_all_atom_mask': 'template_all_atom_masks'}


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What one call does, resolved from mode and configs."""
  num_slices: int
  msa_clusters: int
  max_extra_msa: int
  max_templates: int
  replace_fraction: float
  subsample_templates: bool
  fixed_size: bool
  train: TrainingDataConfig | None


def _plan(data_config: DataConfig, mode: Mode, num_recycle: int | None,
          train_config: TrainingDataConfig) -> _Plan:
  common, evaluation = data_config.common, data_config.eval
  num_recycle = common.num_recycle if num_recycle is None else num_recycle
  if mode == 'eval':
    max_clusters, max_templates = evaluation.max_msa_clusters, evaluation.max_templates
    sizes = dict(max_extra_msa=common.max_extra_msa,
                 replace_fraction=evaluation.masked_msa_replace_fraction,
                 subsample_templates=evaluation.subsample_templates,
                 fixed_size=evaluation.fixed_size, train=None)
    num_ensemble = evaluation.num_ensemble
  elif mode == 'train':
    max_clusters, max_templates = train_config.max_msa_clusters, train_config.max_templates
    sizes = dict(max_extra_msa=train_config.max_extra_msa,
                 replace_fraction=train_config.masked_msa_replace_fraction,
                 subsample_templates=train_config.subsample_templates,
                 fixed_size=True, train=train_config)
    num_ensemble = 1
  else:
    raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
  if common.reduce_msa_clusters_by_max_templates:
    # Templates' torsion-angle rows join the MSA in the model: keep the total fixed.
    max_clusters -= max_templates
  num_slices = num_ensemble * (num_recycle + 1 if common.resample_msa_in_recycling else 1)
  return _Plan(num_slices=num_slices, msa_clusters=max_clusters,
               max_templates=max_templates, **sizes)


def _require(raw: Mapping[str, Any], key: str, source: str) -> np.ndarray:
  if key not in raw:
    raise RawFeatureError(f'{source}: missing raw feature {key!r}')
  return np.asarray(raw[key])


def _check_shape(source: str, key: str, value: np.ndarray, expected: tuple) -> None:
  """expected: sizes, None for any size."""
  if value.ndim != len(expected) or any(e is not None and d != e
                                        for d, e in zip(value.shape, expected)):
    shown = tuple('*' if e is None else e for e in expected)
    raise RawFeatureError(f'{source}: raw feature {key!r} has shape {value.shape}; '
                          f'expected {shown}')


def _read_raw(raw: Mapping[str, Any], use_templates: bool, supervised: bool,
              source: str) -> Features:
  """The raw arrays the processing reads, shapes checked, deletion counts as float32."""
  raw = {_ALIASES.get(k, k): v for k, v in raw.items()}
  feats = {k: _require(raw, k, source) for k in _SEQUENCE_FEATURES}
  aatype = feats['aatype']
  if aatype.ndim not in (1, 2):
    raise RawFeatureError(f'{source}: raw feature aatype has shape {aatype.shape}; '
                          'expected (N_res, 21) one-hot or (N_res,) indices')
  num_res = aatype.shape[0]
  deletion_key = 'deletion_matrix_int' if 'deletion_matrix_int' in raw else 'deletion_matrix'
  feats['deletion_matrix'] = _require(raw, deletion_key, source).astype(np.float32)
  num_seq = feats['msa'].shape[0] if feats['msa'].ndim else 0
  for key, shape in (('residue_index', (num_res,)), ('between_segment_residues', (num_res,)),
                     ('msa', (num_seq, num_res)), ('deletion_matrix', (num_seq, num_res))):
    _check_shape(source, key if key != 'deletion_matrix' else deletion_key, feats[key], shape)
  if num_seq == 0:
    raise RawFeatureError(f'{source}: raw feature msa has no rows; the query must be row 0')
  if 'seq_length' in raw and int(np.ravel(raw['seq_length'])[0]) != num_res:
    raise RawFeatureError(f'{source}: seq_length says {np.ravel(raw["seq_length"])[0]} '
                          f'residues but aatype has {num_res}')
  if 'num_alignments' in raw and int(np.ravel(raw['num_alignments'])[0]) != num_seq:
    raise RawFeatureError(f'{source}: num_alignments says {np.ravel(raw["num_alignments"])[0]} '
                          f'rows but msa has {num_seq}')
  if use_templates:
    templates = {k: _require(raw, k, source) for k in _TEMPLATE_FEATURES}
    num_templates = templates['template_aatype'].shape[0]
    for key, shape in (('template_aatype', (num_templates, num_res, 22)),
                       ('template_all_atom_positions', (num_templates, num_res, 37, 3)),
                       ('template_all_atom_masks', (num_templates, num_res, 37)),
                       ('template_sum_probs', (num_templates, 1))):
      _check_shape(source, key, templates[key], shape)
    feats.update(templates)
  if supervised:
    for key in crop_lib.LABEL_FEATURES:
      if key in raw:
        value = np.asarray(raw[key])
        axes = crop_lib.FEATURE_AXES[key]
        if not axes and value.size == 1:  # scalars may come as [1], as AlphaFold stores them
          value = value.reshape(())
        _check_shape(source, key, value,
                     tuple(num_res if kind == crop_lib.RES else None for kind in axes))
        feats[key] = value
  return feats


def _per_example(feats: Features, use_templates: bool, supervised: bool,
                 rng: np.random.Generator, train: TrainingDataConfig | None) -> Features:
  """The steps run once per example (AlphaFold's `nonensembled_map_fns`)."""
  feats = transforms.cast_64bit_ints(feats)
  feats = transforms.squeeze_features(feats)
  feats = transforms.correct_msa_restypes(feats)
  feats = transforms.make_seq_mask(feats)
  feats = transforms.make_msa_mask(feats)
  feats = transforms.make_hhblits_profile(feats)
  feats = transforms.make_random_crop_to_size_seed(feats, rng)
  if use_templates:
    feats = transforms.fix_templates_aatype(feats)
    feats = transforms.make_template_mask(feats)
    feats = transforms.make_pseudo_beta(feats, 'template_')
  feats = transforms.make_atom14_masks(feats)
  if supervised and 'all_atom_positions' in feats and 'pseudo_beta' not in feats:
    feats = transforms.make_pseudo_beta(feats, '')
  if supervised and train is not None:
    feats['use_clamped_fape'] = np.float32(rng.random() < train.clamp_prob)
  return feats


def _crop_plan(feats: Features, raw: Mapping[str, Any], plan: _Plan, source: str
               ) -> tuple[np.ndarray, np.ndarray]:
  """Residues and templates every slice keeps, drawn from `random_crop_to_size_seed`."""
  rng = np.random.default_rng(feats['random_crop_to_size_seed'].astype(np.uint32))
  num_res = feats['aatype'].shape[0]
  num_templates = feats['template_aatype'].shape[0] if 'template_aatype' in feats else 0
  templates = crop_lib.template_selection(num_templates, plan.max_templates,
                                          plan.subsample_templates, rng)
  if plan.train is None:
    return np.arange(num_res), templates
  if rng.random() < plan.train.spatial_crop_prob:
    ca = rc.atom_order['CA']
    positions = _require(raw, 'all_atom_positions', source)
    mask = _require(raw, 'all_atom_mask', source)
    _check_shape(source, 'all_atom_positions', positions, (num_res, 37, 3))
    _check_shape(source, 'all_atom_mask', mask, (num_res, 37))
    residues = crop_lib.spatial_crop(positions[:, ca], mask[:, ca], plan.train.crop_size, rng)
  else:
    residues = crop_lib.contiguous_crop(num_res, plan.train.crop_size, rng)
  return residues, templates


def _per_slice(feats: Features, common: DataCommonConfig, plan: _Plan, residues: np.ndarray,
               templates: np.ndarray, rng: np.random.Generator) -> Features:
  """The steps run afresh for every ensemble / recycling slice (`ensembled_map_fns`)."""
  train = plan.train
  if train is not None and feats.get('is_distillation', 0):
    feats = transforms.sample_msa(feats, train.max_distillation_msa_clusters, rng,
                                  keep_extra=False)
  if train is not None and train.block_delete_msa is not None:
    feats = transforms.block_delete_msa(feats, rng,
                                        **dataclasses.asdict(train.block_delete_msa))
  feats = transforms.sample_msa(feats, plan.msa_clusters, rng, keep_extra=True)
  # Masking precedes clustering so the cluster profiles do not leak the masked residues.
  feats = transforms.make_masked_msa(feats, common.masked_msa, plan.replace_fraction, rng)
  if common.msa_cluster_features:
    feats = transforms.nearest_neighbor_clusters(feats)
    feats = transforms.summarize_clusters(feats)
  if plan.max_extra_msa:
    feats = transforms.crop_extra_msa(feats, plan.max_extra_msa, rng)
  else:
    feats = transforms.delete_extra_msa(feats)
  feats = transforms.make_msa_feat(feats)
  feats = transforms.select_feat(feats, list(crop_lib.FEATURE_AXES))
  feats = crop_lib.crop_features(feats, residues, templates)
  feats['seq_length'] = np.int32(len(residues))
  if not plan.fixed_size:
    return feats
  num_res = train.crop_size if train is not None else len(residues)
  return crop_lib.pad_to_fixed_size(feats, {
      crop_lib.RES: num_res, crop_lib.MSA: plan.msa_clusters,
      crop_lib.EXTRA: plan.max_extra_msa, crop_lib.TEMPLATE: plan.max_templates})


def process_features(raw: Mapping[str, Any], data_config: DataConfig, *, mode: Mode = 'eval',
                     seed: int, num_recycle: int | None = None,
                     train_config: TrainingDataConfig = TrainingDataConfig(),
                     supervised: bool | None = None, source: str = 'raw features'
                     ) -> dict[str, np.ndarray]:
  """The model batch for one example: every feature with a leading slice axis.

  raw: the data pipeline's feature dict (AlphaFold's names; `deletion_matrix_int` or
    `deletion_matrix`; OpenFold's `template_all_atom_mask` is accepted too).
  data_config: AlphaFold's `data` config (e.g. `preset('model_1_ptm').data`).
  mode: 'eval' keeps every residue and the top templates (AlphaFold's inference);
    'train' crops and subsamples with `train_config`.
  seed: the only source of randomness.
  num_recycle: overrides `data_config.common.num_recycle` (the number of slices).
  supervised: carry ground-truth labels found in `raw` (keys of crop.LABEL_FEATURES),
    cropped and padded with the residues; default: True in training mode.
  source: names the input (e.g. its file) in error messages.

  Returns arrays of shape [num_slices, ...], num_slices = (num_recycle + 1) * num_ensemble
  (or num_ensemble without `resample_msa_in_recycling`; num_ensemble is 1 in training).
  """
  supervised = mode == 'train' if supervised is None else supervised
  plan = _plan(data_config, mode, num_recycle, train_config)
  common = data_config.common
  example_seed, *slice_seeds = np.random.SeedSequence(seed).spawn(1 + plan.num_slices)
  feats = _read_raw(raw, common.use_templates, supervised, source)
  if plan.train is not None and 'is_distillation' in raw:
    feats['is_distillation'] = np.float32(np.ravel(raw['is_distillation'])[0])
  else:
    feats['is_distillation'] = np.float32(0)
  feats = _per_example(feats, common.use_templates, supervised,
                       np.random.default_rng(example_seed), plan.train)
  residues, templates = _crop_plan(feats, raw, plan, source)
  slices = [_per_slice(feats, common, plan, residues, templates, np.random.default_rng(s))
            for s in slice_seeds]
  return {k: np.stack([s[k] for s in slices]) for k in slices[0]}
