"""How workers share a study ([workers]) and what a study keeps of its trials ([artifacts])."""

from __future__ import annotations

from dataclasses import dataclass

from bonas.config.checks import Fail, at_least


@dataclass
class WorkersConfig:
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial silent this long is failed and retried
    max_retry: int = 2  # a killed trial is retried with the same params this many times
    reuse_duplicates: bool = True  # a proposal identical to a finished trial reuses its result
    checkpoint: bool = True  # save each trial's training state every epoch: a retried trial goes on from it

    def check(self, fail: Fail) -> None:
        at_least(fail, "heartbeat_interval", self.heartbeat_interval, 1, "second")
        if self.grace_period <= self.heartbeat_interval:
            fail("grace_period", f"must exceed heartbeat_interval ({self.heartbeat_interval}), got {self.grace_period}")
        at_least(fail, "max_retry", self.max_retry, 0)


@dataclass
class ArtifactsConfig:
    dir: str = ""  # artifact store; "" = <name>.artifacts beside the SQLite file (or the config for servers)
    keep_top_k: int = 3  # weights, ArchSpec and learning curve of the best k completed trials; 0 = none
    # A learning-curve PNG with each kept trial. Off by default: drawing it was most of a kept trial's fixed cost
    # (bench/overhead.py), and optuna-dashboard plots every trial's per-epoch accuracy itself.
    curves: bool = False

    def check(self, fail: Fail) -> None:
        at_least(fail, "keep_top_k", self.keep_top_k, 0, "(0 = keep no weights)")
