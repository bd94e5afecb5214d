"""A study's whole config: its sections, its own top-level settings, and where it lives."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonas.config.checks import Fail, at_least, failer
from bonas.config.data import DataConfig
from bonas.config.objective import ObjectiveConfig
from bonas.config.search import BudgetConfig, PrunerConfig, SamplerConfig, ScreenConfig, WarmStartConfig
from bonas.config.space import SpaceConfig
from bonas.config.training import FinalConfig, TrainingConfig
from bonas.config.workers import ArtifactsConfig, WorkersConfig

# Sections whose change makes old trials incomparable; budget, sampler, pruner and workers may change
# between runs of one study.
COMPARABLE_SECTIONS = ("dataset", "seed", "training", "data", "space", "objective")
# Settings inside those sections that change where or how data is read, not which images trials see.
NOT_COMPARED = {"data": ("dir", "memory_limit_mb", "store")}  # python data: compared by fingerprint


@dataclass
class StudyConfig:
    name: str = ""  # study name in the storage; also names the default database file
    dataset: str = "digits"  # a data source (bonas.data.sources.DATA_SOURCES)
    storage: str = ""  # any Optuna RDB URL; "" = sqlite:///<config dir>/<name>.db; $VARS expand
    seed: int = 0  # seeds the sampler, the data split and the weights
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    artifacts: ArtifactsConfig = field(default_factory=ArtifactsConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    path: str = field(default="", metadata={"internal": True})  # the file it came from
    # the tables as written (which keys the file set: a [pruner] key for another pruner is an error)
    written: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    @property
    def directory(self) -> Path:
        """Where the config file is: relative paths in it (the SQLite database, the warm-start file) start
        here; the working directory for a config that came from no file."""
        return Path(self.path).parent if self.path and not self.path.startswith("<") else Path(".")

    def fail(self, section: str = "") -> Fail:
        """A ``fail(key, why)`` that names this config's file and ``section``."""
        return failer(self.path or "<config>", section)

    def check(self) -> None:
        """Raise ConfigError at the first value that cannot work (the types are already right)."""
        fail = self.fail()
        if not self.name:
            fail("name", "a study needs a name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            fail("name", f"use letters, digits, '_', '-' or '.' (it names files), got {self.name!r}")
        at_least(fail, "seed", self.seed, 0)
        for section in SECTIONS:
            getattr(self, section).check(self.fail(section))

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, as stored on the study (no internal fields)."""
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                del d[f.name]
        d["space"]["variants"] = [{"name": v.name, **v.overrides} for v in self.space.variants]
        return d


SECTIONS = ("budget", "sampler", "pruner", "training", "data", "space", "objective")
SECTIONS += ("workers", "artifacts", "warm_start", "screen", "final")
