"""The bottom layer: the errors bonas raises on purpose, the trial record (every attribute a study or trial
carries, and the rules over them: ``bonas.core.records``, the one module here that needs Optuna's trial types), and
the specs between the search space and the model. Nothing here imports torch, Lightning or any other layer of bonas,
and importing the package imports no Optuna (the model builder never does)."""

from bonas.core.errors import BonasError, ConfigError, DataError, SchedulerError, StorageError, StudyError, UsageError
from bonas.core.spec import ArchSpec, BlockSpec, TrainSpec

__all__ = [
    "ArchSpec",
    "BlockSpec",
    "BonasError",
    "ConfigError",
    "DataError",
    "SchedulerError",
    "StorageError",
    "StudyError",
    "TrainSpec",
    "UsageError",
]
