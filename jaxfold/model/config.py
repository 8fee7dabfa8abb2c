"""The whole model's configuration and DeepMind's ten monomer presets.

`AlphaFoldConfig` mirrors AlphaFold's `model_config(name)` (the parts a monomer uses): `data`
fixes the sizes of the processed features (MSA clusters, extra sequences, templates,
recycling slices), `model` the network. Field names and defaults are AlphaFold's base
config; each preset is that base with the differences of Jumper et al. (2021) Suppl.
Table 5 (AlphaFold's `CONFIG_DIFFS`), applied by `preset(name)`.

Everything is a frozen dataclass: derive variants with `replace(config, {'a.b.c': v})`;
`dataclasses.asdict(config)` and `from_dict(AlphaFoldConfig, d)` carry one through JSON (as
checkpoints record it).
"""

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from jaxfold.model.heads import (DistogramConfig, ExperimentallyResolvedConfig, MaskedMsaConfig,
                                 PredictedAlignedErrorConfig, PredictedLddtConfig)
from jaxfold.model.structure_module import StructureModuleConfig
from jaxfold.model.trunk import EmbeddingsAndEvoformerConfig


@dataclasses.dataclass(frozen=True)
class MaskedMsaDataConfig:
  """AlphaFold's `data.common.masked_msa`: how BERT-masked MSA positions are replaced."""
  profile_prob: float = 0.1
  same_prob: float = 0.1
  uniform_prob: float = 0.1


@dataclasses.dataclass(frozen=True)
class DataCommonConfig:
  """AlphaFold's `data.common` (feature-processing settings shared by training and eval)."""
  masked_msa: MaskedMsaDataConfig = MaskedMsaDataConfig()
  max_extra_msa: int = 1024
  msa_cluster_features: bool = True
  num_recycle: int = 3
  reduce_msa_clusters_by_max_templates: bool = False
  resample_msa_in_recycling: bool = True
  use_templates: bool = False


@dataclasses.dataclass(frozen=True)
class DataEvalConfig:
  """AlphaFold's `data.eval`: fixed sizes of the processed features at inference."""
  fixed_size: bool = True
  subsample_templates: bool = False
  masked_msa_replace_fraction: float = 0.15
  max_msa_clusters: int = 512
  max_templates: int = 4
  num_ensemble: int = 1


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """AlphaFold's `data`."""
  common: DataCommonConfig = DataCommonConfig()
  eval: DataEvalConfig = DataEvalConfig()


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
  """AlphaFold's `model.heads`. A head whose `weight` is 0 is not built (no parameters)."""
  distogram: DistogramConfig = DistogramConfig()
  experimentally_resolved: ExperimentallyResolvedConfig = ExperimentallyResolvedConfig()
  masked_msa: MaskedMsaConfig = MaskedMsaConfig()
  predicted_aligned_error: PredictedAlignedErrorConfig = PredictedAlignedErrorConfig()
  predicted_lddt: PredictedLddtConfig = PredictedLddtConfig()
  structure_module: StructureModuleConfig = StructureModuleConfig()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """AlphaFold's `model`: the network and its recycling.

  num_recycle: recycling iterations after the first pass (Suppl. Alg. 2, N_cycle - 1).
  resample_msa_in_recycling: each iteration reads its own slice of the batch's leading
    axis (a fresh MSA sample), as AlphaFold's processed features provide.
  """
  embeddings_and_evoformer: EmbeddingsAndEvoformerConfig = EmbeddingsAndEvoformerConfig()
  heads: HeadsConfig = HeadsConfig()
  num_recycle: int = 3
  resample_msa_in_recycling: bool = True


@dataclasses.dataclass(frozen=True)
class AlphaFoldConfig:
  """AlphaFold's `model_config(name)` for monomers: features and network."""
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()


def replace(config: Any, changes: Mapping[str, Any]) -> Any:
  """`config` with dotted fields changed: replace(c, {'model.num_recycle': 1}).

  Raises AttributeError naming the field when a path does not exist, so a misspelt key
  cannot silently do nothing.
  """
  nested: dict[str, dict[str, Any]] = {}
  direct: dict[str, Any] = {}
  for key, value in changes.items():
    head, _, rest = key.partition('.')
    if not any(f.name == head for f in dataclasses.fields(config)):
      raise AttributeError(f'{type(config).__name__} has no field {head!r} (in {key!r})')
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      direct[head] = value
  for head, sub in nested.items():
    direct[head] = replace(getattr(config, head), sub)
  return dataclasses.replace(config, **direct)


# Jumper et al. (2021) Suppl. Table 5: models 1.1.1-1.1.2 use templates, 1.2.1-1.2.3 do not;
# the *_ptm models are fine-tuned with the predicted aligned error head.
_TEMPLATES = {
    'data.common.reduce_msa_clusters_by_max_templates': True,
    'data.common.use_templates': True,
    'model.embeddings_and_evoformer.template.embed_torsion_angles': True,
    'model.embeddings_and_evoformer.template.enabled': True,
}
_LARGE_EXTRA_MSA = {'data.common.max_extra_msa': 5120}
_PTM = {'model.heads.predicted_aligned_error.weight': 0.1}
_DIFFS = {
    'model_1': {**_LARGE_EXTRA_MSA, **_TEMPLATES},
    'model_2': _TEMPLATES,
    'model_3': _LARGE_EXTRA_MSA,
    'model_4': _LARGE_EXTRA_MSA,
    'model_5': {},
}
_DIFFS.update({f'{name}_ptm': {**diff, **_PTM} for name, diff in list(_DIFFS.items())})

PRESETS: tuple[str, ...] = tuple(sorted(_DIFFS))


def preset(name: str) -> AlphaFoldConfig:
  """The configuration of one of DeepMind's monomer models, e.g. 'model_1_ptm'."""
  if name not in _DIFFS:
    raise ValueError(f'unknown preset {name!r}; choose one of {", ".join(PRESETS)}')
  return replace(AlphaFoldConfig(), _DIFFS[name])


def reduced(config: AlphaFoldConfig, num_block: int = 2, extra_msa_num_block: int = 1,
            template_num_block: int = 1, structure_num_layer: int = 2,
            num_recycle: int | None = None) -> AlphaFoldConfig:
  """A preset with fewer repeated blocks, for tests: every channel size is kept.

  Only the depth of the stacks (Evoformer, extra-MSA, template pair stack, structure
  module iterations) and optionally the recycling count change, so the reduced model
  exercises every layer type of the preset it comes from.
  """
  changes = {
      'model.embeddings_and_evoformer.evoformer_num_block': num_block,
      'model.embeddings_and_evoformer.extra_msa_stack_num_block': extra_msa_num_block,
      'model.embeddings_and_evoformer.template.template_pair_stack.num_block':
          template_num_block,
      'model.heads.structure_module.num_layer': structure_num_layer,
  }
  if num_recycle is not None:
    changes.update({'model.num_recycle': num_recycle, 'data.common.num_recycle': num_recycle})
  return replace(config, changes)


def from_dict(annotation: Any, value: Any) -> Any:
  """`value` (what `dataclasses.asdict` gave, through JSON) as an instance of `annotation`,
  recursively: dataclasses, optional fields and tuples rebuilt. A key the dataclass lacks
  raises TypeError naming it."""
  if dataclasses.is_dataclass(annotation):
    hints = typing.get_type_hints(annotation)
    unknown = sorted(set(value) - set(hints))
    if unknown:
      raise TypeError(f'{annotation.__name__} has no field {", ".join(unknown)}')
    return annotation(**{name: from_dict(hints[name], item) for name, item in value.items()})
  if is_union(annotation):
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    return None if value is None else from_dict(options[0], value)
  if typing.get_origin(annotation) is tuple:
    item_type = typing.get_args(annotation)[0]
    return tuple(from_dict(item_type, item) for item in value)
  return value


def is_union(annotation: Any) -> bool:
  """Whether a type annotation is `A | B` (or Optional)."""
  return typing.get_origin(annotation) in (typing.Union, types.UnionType)
