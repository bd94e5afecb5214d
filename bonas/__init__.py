"""bonas: Bayesian-optimisation neural architecture search on Optuna and Lightning.

config -> search space -> ArchSpec -> model -> trial -> study storage. The public names below are
the stable API; everything else lives in modules named for what they do. Names that need torch are
imported on first use, so ``import bonas`` (and ``bonas --help``, ``bonas trials``) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from bonas.config import StudyConfig, load_config, parse_config
from bonas.core.errors import BonasError, ConfigError, DataError, StorageError, StudyError, UsageError
from bonas.core.spec import ArchSpec, BlockSpec, TrainSpec

__version__ = "0.1.0"

_LAZY = {
    "build_model": "bonas.model.build",
    "count_flops": "bonas.model.build",
    "count_params": "bonas.model.build",
    # the Python API (bonas.api): a search, a budget to a tested model, the trials, the best trial, a model back
    "search": "bonas.api",
    "run": "bonas.api",
    "trials": "bonas.api",
    "best": "bonas.api",
    "load": "bonas.api",
}

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
    "best",
    "build_model",
    "count_flops",
    "count_params",
    "load",
    "load_config",
    "parse_config",
    "run",
    "search",
    "trials",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bonas' has no attribute {name!r}")
