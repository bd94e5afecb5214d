"""The search's own sections: its budget, sampler and pruner, zero-cost screening and warm start.

The names a section may choose (samplers, pruners, proxies) are registries of the layers that use them; those
layers check the names (bonas.nas.choices). Here: the values every choice shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from bonas.config.checks import Fail, at_least, between


@dataclass
class BudgetConfig:
    n_trials: int = 30  # finished (COMPLETE + PRUNED) trials the study aims for, across all runs and workers
    timeout: float = 0.0  # seconds the study may spend running trials, across runs; 0 = no limit
    max_failures: int = 5  # a run stops after this many FAIL trials in a row: a broken setup must not loop

    def check(self, fail: Fail) -> None:
        at_least(fail, "n_trials", self.n_trials, 1)
        at_least(fail, "timeout", self.timeout, 0, "seconds (0 = no limit)")
        at_least(fail, "max_failures", self.max_failures, 1)


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe | random (the article's strategy) | gp | nsga2 (bonas.study.samplers.SAMPLERS)
    n_startup_trials: int = 10  # random trials before the model is trusted (tpe, gp)
    multivariate: bool = True  # tpe: one joint density, so width x depth interactions are learnt
    group: bool = True  # tpe: model each set of co-occurring params apart: the space is conditional
    constant_liar: bool = True  # tpe: running trials count as bad, so parallel workers spread out
    population_size: int = 20  # nsga2: individuals per generation

    def check(self, fail: Fail) -> None:
        at_least(fail, "n_startup_trials", self.n_startup_trials, 0)
        if self.group and not self.multivariate:
            fail("group", "group = true needs multivariate = true (Optuna's TPE requires it)")
        at_least(fail, "population_size", self.population_size, 2)


@dataclass
class PrunerConfig:
    # successive-halving by default: 1.65x fewer epochs than no pruning with the same best on every seed,
    # against 1.23x for median and 1.37x for hyperband (bench/search_quality.py, part B; docs/results.md)
    name: str = "successive-halving"  # successive-halving | median | hyperband | asha (pause + promote) | none
    n_startup_trials: int = 5  # median: finished trials before anything is pruned
    n_warmup_steps: int = 1  # median: epochs every trial gets before it can be pruned
    min_resource: int = 1  # successive-halving, hyperband: first check at epoch index 1 (after 2 epochs), then 3, 9, ...;
    # asha: rungs after min_resource, min_resource * r, ... epochs
    reduction_factor: int = 3  # successive-halving, hyperband, asha: 1/r of the trials go on at each rung

    def check(self, fail: Fail) -> None:
        at_least(fail, "n_startup_trials", self.n_startup_trials, 0)
        at_least(fail, "n_warmup_steps", self.n_warmup_steps, 0)
        at_least(fail, "min_resource", self.min_resource, 1, "epoch")
        at_least(fail, "reduction_factor", self.reduction_factor, 2)


@dataclass
class ScreenConfig:
    proxy: str = "none"  # none | naswot | synflow | grad_norm | snip: score each network at initialisation
    percentile: float = 25.0  # stop a trial before training when it scores below this percentile of earlier ones
    n_startup_trials: int = 10  # trials scored before any is stopped
    batch_size: int = 128  # images in the one batch a network is scored on

    def check(self, fail: Fail) -> None:
        between(fail, "percentile", self.percentile, 0, 100)
        at_least(fail, "n_startup_trials", self.n_startup_trials, 1)
        at_least(fail, "batch_size", self.batch_size, 2, "images")


@dataclass
class WarmStartConfig:
    file: str = ""  # a TOML file of [[trial]] tables (params), enqueued when the study is created
    from_study: str = ""  # a study name or config whose top_k trials are enqueued when this one is created
    top_k: int = 5  # how many of from_study's best completed trials
    # The standard designs (2 conv + pool + BN, VGG-style, a small ResNet; bonas.nas.priors), shaped to the input and
    # the space, as the first trials of a new study after the file's: TPE searches from what a practitioner tries first
    priors: bool = True

    def check(self, fail: Fail) -> None:
        at_least(fail, "top_k", self.top_k, 1)
