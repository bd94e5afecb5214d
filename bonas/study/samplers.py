"""The samplers and pruners a study may name: one registry each, read by the config check and by the code that
makes them (Optuna's own classes, set from the config's [sampler] and [pruner] tables).

A key of [sampler] or [pruner] that the chosen one does not take is an error, not silently ignored: each entry
says which keys it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna

from bonas.config import PrunerConfig, SamplerConfig, StudyConfig
from bonas.config.checks import applies, one_of


@dataclass(frozen=True)
class Sampler:
    make: Callable[[SamplerConfig, int], optuna.samplers.BaseSampler]  # (settings, seed)
    keys: frozenset[str]  # the [sampler] keys it takes


@dataclass(frozen=True)
class Pruner:
    make: Callable[[PrunerConfig, int], optuna.pruners.BasePruner]  # (settings, epochs per trial)
    keys: frozenset[str]  # the [pruner] keys it takes
    first_check: Callable[[PrunerConfig], int] = lambda p: p.min_resource - 1  # epoch index of the first prune
    pauses: bool = False  # pause at rungs and promote (ASHA, bonas.study.promotion) instead of pruning for good
    prunes: bool = True  # False: nothing is stopped early (multi-objective studies too)


SAMPLERS: dict[str, Sampler] = {
    "tpe": Sampler(
        lambda s, seed: optuna.samplers.TPESampler(
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            group=s.group,
            constant_liar=s.constant_liar,
            seed=seed,
        ),
        frozenset({"n_startup_trials", "multivariate", "group", "constant_liar"}),
    ),
    "random": Sampler(lambda s, seed: optuna.samplers.RandomSampler(seed=seed), frozenset()),
    "gp": Sampler(
        lambda s, seed: optuna.samplers.GPSampler(n_startup_trials=s.n_startup_trials, seed=seed), frozenset({"n_startup_trials"})
    ),
    "nsga2": Sampler(
        lambda s, seed: optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed),
        frozenset({"population_size"}),
    ),
}

RUNGS = frozenset({"min_resource", "reduction_factor"})
PRUNERS: dict[str, Pruner] = {
    "median": Pruner(
        lambda p, epochs: optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps),
        frozenset({"n_startup_trials", "n_warmup_steps"}),
        first_check=lambda p: p.n_warmup_steps,
    ),
    "successive-halving": Pruner(
        lambda p, epochs: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        ),
        RUNGS,
    ),
    "hyperband": Pruner(
        lambda p, epochs: optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=epochs, reduction_factor=p.reduction_factor
        ),
        RUNGS,
    ),
    # ASHA's pausing and promotion run in bonas (callbacks.RungPause, promotion); Optuna's pruner does nothing
    "asha": Pruner(lambda p, epochs: optuna.pruners.NopPruner(), RUNGS, pauses=True),
    "none": Pruner(lambda p, epochs: optuna.pruners.NopPruner(), frozenset(), prunes=False),
}


def check(config: StudyConfig) -> None:
    """The [sampler] and [pruner] names are registered, and every key written in their tables applies."""
    for table, registry in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        fail, name = config.fail(table), getattr(config, table).name
        one_of(fail, "name", name, registry)
        written = config.written.get(table)
        if isinstance(written, dict):
            applies(fail, written, name, set(registry[name].keys), table)


def make_sampler(config: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    return SAMPLERS[config.sampler.name].make(config.sampler, config.seed if seed is None else seed)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    return PRUNERS[config.pruner.name].make(config.pruner, config.training.max_epochs)


def directions(config: StudyConfig) -> list[str]:
    return ["maximize"] + ["minimize"] * (len(config.objective.metrics) - 1)
