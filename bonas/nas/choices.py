"""The names a config chooses from a registry, checked against the registries as they are now (a data set,
block type or optimizer registered by the user's own code included), before anything is written.

Each registry checks its own names beside the code that dispatches on them; this is the one place that asks
them all, for every command that runs trials (search, worker, run, slurm, retrain, the Python API).
"""

from __future__ import annotations

from bonas.config import StudyConfig
from bonas.data import sources
from bonas.model import blocks
from bonas.nas import proxies, space
from bonas.study import samplers
from bonas.training import recipe


def check_choices(config: StudyConfig) -> None:
    """Raise ConfigError (one line: file, key, value, what is registered) at the first unknown name."""
    sources.check(config)
    samplers.check(config)
    recipe.check(config)
    space.check(config)
    blocks.check(config)
    proxies.check(config)
