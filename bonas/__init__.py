"""bonas: Bayesian-optimisation neural architecture search on Optuna and Lightning.

config -> search space -> ArchSpec -> model -> trial -> study storage. The public names below are
the stable API; everything else lives in modules named for what they do.
"""

from bonas.config import StudyConfig, load_config, parse_config
from bonas.errors import BonasError, ConfigError, DataError, StorageError, StudyError, UsageError
from bonas.model import build_model, count_flops, count_params
from bonas.spec import ArchSpec, BlockSpec, TrainSpec

__version__ = "0.1.0"

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "BonasError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyConfig",
    "StudyError",
    "TrainSpec",
    "UsageError",
    "build_model",
    "count_flops",
    "count_params",
    "load_config",
    "parse_config",
]
