"""The [objective] section: what a trial is scored on, and the limits a network must stay within."""

from __future__ import annotations

from dataclasses import dataclass, field

from bonas.config.checks import Fail, at_least, between, one_of

COSTS = ("params", "flops", "latency")  # what may be a second objective beside val_acc
AUTO = -1.0  # max_flops = -1: bonas chooses the limit (bonas.nas.limits)


@dataclass
class ObjectiveConfig:
    metrics: list[str] = field(default_factory=lambda: ["val_acc"])  # val_acc, or val_acc + params|flops|latency
    max_params: int = 0  # architectures above this many parameters are infeasible, never trained; 0 = no limit
    # likewise for FLOPs per image; 0 = no limit; -1 = auto: what lets a first epoch take about a minute on the device
    # that searches, set once from the training split's size when the study is created (bonas.nas.limits)
    max_flops: float = AUTO
    max_latency_ms: float = 0.0  # likewise for batch-1 inference latency on the training device; 0 = no limit
    # Seconds of timing per batch size (1 and 64) per trial. 0 (the default): only when latency is an objective or
    # a limit (then 0.05 s). Timing every trial costs ~0.3-1 s of a trial's fixed cost (bench/overhead.py).
    latency_time_s: float = 0.0
    prune_percentile: float = 50.0  # multi-objective pruning: stop below this percentile of no-costlier trials

    def check(self, fail: Fail) -> None:
        if not self.metrics or self.metrics[0] != "val_acc":
            fail("metrics", f"the first metric must be 'val_acc', got {self.metrics}")
        for m in self.metrics[1:]:
            one_of(fail, "metrics", m, COSTS)
        if len(set(self.metrics)) != len(self.metrics) or len(self.metrics) > 2:
            fail("metrics", f"use 'val_acc' alone or with one of params|flops|latency, got {self.metrics}")
        for key in ("max_params", "max_latency_ms"):
            at_least(fail, key, getattr(self, key), 0, "(0 = no limit)")
        if self.max_flops < 0 and self.max_flops != AUTO:
            fail("max_flops", f"use a number of FLOPs, 0 (no limit) or -1 (auto), got {self.max_flops}")
        between(fail, "prune_percentile", self.prune_percentile, 0, 100)
        at_least(fail, "latency_time_s", self.latency_time_s, 0, "seconds")
