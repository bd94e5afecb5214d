"""Study configs: TOML files read into dataclasses, every field defaulted and explained, checked before use.

A config is checked before anything is created: as it is read, unknown keys (with the nearest valid one) and
wrong types; then each section's values beside its dataclass. The names a config chooses from a registry (data
sets, samplers, pruners, optimizers, schedules, block types, proxies, augmentation policies) are checked by the
layers that own those registries (bonas.nas.choices). Each failure is one ConfigError line naming the file
and the key.
"""

from bonas.config.data import DataConfig
from bonas.config.objective import ObjectiveConfig
from bonas.config.reading import config_from_dict, load_config, parse_config
from bonas.config.search import BudgetConfig, PrunerConfig, SamplerConfig, ScreenConfig, WarmStartConfig
from bonas.config.space import SpaceConfig, VariantConfig
from bonas.config.study import COMPARABLE_SECTIONS, NOT_COMPARED, StudyConfig
from bonas.config.training import FinalConfig, TrainingConfig
from bonas.config.workers import ArtifactsConfig, WorkersConfig

__all__ = [
    "COMPARABLE_SECTIONS",
    "NOT_COMPARED",
    "ArtifactsConfig",
    "BudgetConfig",
    "DataConfig",
    "FinalConfig",
    "ObjectiveConfig",
    "PrunerConfig",
    "SamplerConfig",
    "ScreenConfig",
    "SpaceConfig",
    "StudyConfig",
    "TrainingConfig",
    "VariantConfig",
    "WarmStartConfig",
    "WorkersConfig",
    "config_from_dict",
    "load_config",
    "parse_config",
]
