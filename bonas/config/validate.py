"""What a study config's values may be: the choices, ranges and combinations that can work.

The types are checked as the config is read (bonas.config); here the values, each failure one
:class:`~bonas.errors.ConfigError` line naming the file, the key, the value and what would work.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import TYPE_CHECKING, Any

from bonas.core.errors import ConfigError
from bonas.core.spec import BLOCK_KINDS

if TYPE_CHECKING:
    from bonas.config.schema import SpaceConfig, StudyConfig

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder")
SAMPLERS = ("tpe", "random", "gp", "nsga2")
PRUNERS = ("median", "successive-halving", "hyperband", "asha", "none")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
POOLINGS = ("max", "avg", "none")
HEADS = ("gap", "flatten")
BLOCK_TYPES = BLOCK_KINDS  # plain, residual, separable: how a block's convs are wired (bonas.model.build)
AUGMENTS = ("none", "auto", "search")
OBJECTIVES = ("val_acc", "params", "flops", "latency")
SCREEN_PROXIES = ("none", "naswot", "synflow", "grad_norm", "snip")  # bonas.proxies.PROXIES

# Which keys of [sampler] / [pruner] each choice takes; a key set for another choice is an error,
# not silently ignored.
SAMPLER_KEYS = {
    "tpe": {"n_startup_trials", "multivariate", "group", "constant_liar"},
    "random": set(),
    "gp": {"n_startup_trials"},
    "nsga2": {"population_size"},
}
PRUNER_KEYS = {
    "median": {"n_startup_trials", "n_warmup_steps"},
    "successive-halving": {"min_resource", "reduction_factor"},
    "hyperband": {"min_resource", "reduction_factor"},
    "asha": {"min_resource", "reduction_factor"},
    "none": set(),
}
DEFAULT_WIDTHS = (16, 32, 64, 128)  # [space] widths when not given


def validate(c: StudyConfig, raw: dict[str, Any], source: str) -> None:
    """Raise ConfigError at the first value that cannot work (the types are already right)."""

    def fail(key: str, msg: str) -> typing.NoReturn:
        raise ConfigError(f"{source}: {key}: {msg}")

    if not c.name:
        fail("name", "a study needs a name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", c.name):
        fail("name", f"use letters, digits, '_', '-' or '.' (it names files), got {c.name!r}")
    _one_of(fail, "dataset", c.dataset, DATASETS)
    if c.seed < 0:
        fail("seed", f"must be >= 0, got {c.seed}")

    if c.budget.n_trials < 1:
        fail("budget.n_trials", f"must be >= 1, got {c.budget.n_trials}")
    if c.budget.timeout < 0:
        fail("budget.timeout", f"must be >= 0 seconds (0 = no limit), got {c.budget.timeout}")
    if c.budget.max_failures < 1:
        fail("budget.max_failures", f"must be >= 1, got {c.budget.max_failures}")

    _one_of(fail, "sampler.name", c.sampler.name, SAMPLERS)
    _applies(fail, "sampler", raw.get("sampler", {}), c.sampler.name, SAMPLER_KEYS)
    if c.sampler.n_startup_trials < 0:
        fail("sampler.n_startup_trials", f"must be >= 0, got {c.sampler.n_startup_trials}")
    if c.sampler.group and not c.sampler.multivariate:
        fail("sampler.group", "group = true needs multivariate = true (Optuna's TPE requires it)")
    if c.sampler.population_size < 2:
        fail("sampler.population_size", f"must be >= 2, got {c.sampler.population_size}")

    _one_of(fail, "pruner.name", c.pruner.name, PRUNERS)
    _applies(fail, "pruner", raw.get("pruner", {}), c.pruner.name, PRUNER_KEYS)
    for key in ("n_startup_trials", "n_warmup_steps"):
        if getattr(c.pruner, key) < 0:
            fail(f"pruner.{key}", f"must be >= 0, got {getattr(c.pruner, key)}")
    if c.pruner.min_resource < 1:
        fail("pruner.min_resource", f"must be >= 1 epoch, got {c.pruner.min_resource}")
    if c.pruner.reduction_factor < 2:
        fail("pruner.reduction_factor", f"must be >= 2, got {c.pruner.reduction_factor}")

    t = c.training
    if t.max_epochs < 1:
        fail("training.max_epochs", f"must be >= 1, got {t.max_epochs}")
    _choices(fail, "training.batch_sizes", t.batch_sizes, positive=True)
    _choices(fail, "training.optimizers", t.optimizers, allowed=OPTIMIZERS)
    _range(fail, "training.lr", t.lr, positive=True, lower=1e-12)
    _range(fail, "training.weight_decay", t.weight_decay, positive=True, lower=0.0)
    _one_of(fail, "training.schedule", t.schedule, ("cosine", "onecycle", "constant"))
    if t.warmup_epochs < 0 or t.warmup_epochs >= t.max_epochs:
        fail("training.warmup_epochs", f"must be >= 0 and below max_epochs ({t.max_epochs}), got {t.warmup_epochs}")
    if not 0.0 <= t.label_smoothing < 1.0:
        fail("training.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    if not (t.ema_decay == 0.0 or 0.5 <= t.ema_decay < 1.0):
        fail("training.ema_decay", f"use 0 (off) or a decay in [0.5, 1), e.g. 0.999, got {t.ema_decay}")
    if t.eval_batch_size < 1:
        fail("training.eval_batch_size", f"must be >= 1, got {t.eval_batch_size}")

    d = c.data
    if not 0.0 < d.val_fraction < 1.0:
        fail("data.val_fraction", f"must be between 0 and 1 (exclusive), got {d.val_fraction}")
    for key in ("train_subset", "val_subset"):
        if getattr(d, key) < 0:
            fail(f"data.{key}", f"must be >= 0 (0 = all), got {getattr(d, key)}")
    _one_of(fail, "data.augment", d.augment, AUGMENTS)
    if d.cutout < 0:
        fail("data.cutout", f"must be >= 0 pixels (0 = off), got {d.cutout}")
    if d.channels not in (1, 3):
        fail("data.channels", f"must be 1 or 3, got {d.channels}")
    if d.image_size < 4:
        fail("data.image_size", f"must be >= 4 pixels, got {d.image_size}")
    if c.dataset == "imagefolder" and not d.root:
        fail("data.root", "dataset = 'imagefolder' needs data.root, the folder holding root/<class>/*.png")

    _validate_space(fail, "space", c.space)
    names = [v.name for v in c.space.variants]
    if len(set(names)) != len(names):
        fail("space.variants", f"variant names must be unique, got {names}")
    for i, variant in enumerate(c.space.variants):
        merged = dataclasses.replace(c.space, **variant.overrides, variants=[])
        _validate_space(fail, f"space.variants[{i}] ({variant.name})", merged)

    o = c.objective
    if not o.metrics or o.metrics[0] != "val_acc":
        fail("objective.metrics", f"the first metric must be 'val_acc', got {o.metrics}")
    for m in o.metrics[1:]:
        _one_of(fail, "objective.metrics", m, OBJECTIVES[1:])
    if len(set(o.metrics)) != len(o.metrics) or len(o.metrics) > 2:
        fail("objective.metrics", f"use 'val_acc' alone or with one of params|flops|latency, got {o.metrics}")
    for key in ("max_params", "max_flops", "max_latency_ms"):
        if getattr(o, key) < 0:
            fail(f"objective.{key}", f"must be >= 0 (0 = no limit), got {getattr(o, key)}")
    if not 0.0 < o.prune_percentile < 100.0:
        fail("objective.prune_percentile", f"must be between 0 and 100, got {o.prune_percentile}")
    if o.latency_time_s < 0:
        fail("objective.latency_time_s", f"must be >= 0 seconds, got {o.latency_time_s}")
    if not 0.0 < c.final.search_share < 1.0:
        fail(
            "final.search_share",
            f"must be between 0 and 1 (the rest of the budget trains the winner), got {c.final.search_share}",
        )
    if c.final.train_subset < 0:
        fail("final.train_subset", f"must be >= 0 (0 = the whole training split), got {c.final.train_subset}")
    if c.final.epochs_multiple < 1:
        fail("final.epochs_multiple", f"must be >= 1, got {c.final.epochs_multiple}")
    _one_of(fail, "screen.proxy", c.screen.proxy, SCREEN_PROXIES)
    if not 0.0 < c.screen.percentile < 100.0:
        fail("screen.percentile", f"must be between 0 and 100, got {c.screen.percentile}")
    if c.screen.n_startup_trials < 1:
        fail("screen.n_startup_trials", f"must be >= 1, got {c.screen.n_startup_trials}")
    if c.screen.batch_size < 2:
        fail("screen.batch_size", f"must be >= 2 images, got {c.screen.batch_size}")
    if c.warm_start.top_k < 1:
        fail("warm_start.top_k", f"must be >= 1, got {c.warm_start.top_k}")

    if c.artifacts.keep_top_k < 0:
        fail("artifacts.keep_top_k", f"must be >= 0 (0 = keep no weights), got {c.artifacts.keep_top_k}")

    w = c.workers
    if w.heartbeat_interval < 1:
        fail("workers.heartbeat_interval", f"must be >= 1 second, got {w.heartbeat_interval}")
    if w.grace_period <= w.heartbeat_interval:
        fail("workers.grace_period", f"must exceed heartbeat_interval ({w.heartbeat_interval}), got {w.grace_period}")
    if w.max_retry < 0:
        fail("workers.max_retry", f"must be >= 0, got {w.max_retry}")


def _validate_space(fail: Any, where: str, s: SpaceConfig) -> None:
    _range(fail, f"{where}.n_blocks", s.n_blocks, integer=True, lower=1)
    _range(fail, f"{where}.convs_per_block", s.convs_per_block, integer=True, lower=1)
    if s.width_range:
        if s.widths != list(DEFAULT_WIDTHS) and s.widths:
            fail(f"{where}.width_range", "set either widths (choices) or width_range ([min, max]), not both")
        _range(fail, f"{where}.width_range", s.width_range, integer=True, lower=1)
    else:
        _choices(fail, f"{where}.widths", s.widths, positive=True)
    _choices(fail, f"{where}.width_multipliers", s.width_multipliers)
    for m in s.width_multipliers:
        if not m > 0:
            fail(
                f"{where}.width_multipliers",
                f"multipliers must be > 0 (a width becomes max(1, round(width * multiplier))), got {m}",
            )
    _choices(fail, f"{where}.block_types", s.block_types, allowed=BLOCK_TYPES)
    _choices(fail, f"{where}.kernel_sizes", s.kernel_sizes, positive=True)
    for k in s.kernel_sizes:
        if k % 2 == 0:
            fail(f"{where}.kernel_sizes", f"kernel sizes must be odd ('same' padding), got {k}")
    _choices(fail, f"{where}.pooling", s.pooling, allowed=POOLINGS)
    _choices(fail, f"{where}.batch_norm", s.batch_norm)
    _range(fail, f"{where}.dropout", s.dropout, lower=0.0, upper=0.95)
    _choices(fail, f"{where}.heads", s.heads, allowed=HEADS)
    _range(fail, f"{where}.dense_layers", s.dense_layers, integer=True, lower=0)
    _range(fail, f"{where}.dense_units", s.dense_units, integer=True, lower=1)
    _range(fail, f"{where}.dense_dropout", s.dense_dropout, lower=0.0, upper=0.95)


def _one_of(fail: Any, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        match = difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        fail(key, f"unknown value {value!r}{hint}; choose one of: {', '.join(allowed)}")


def _applies(fail: Any, table: str, raw: Any, name: str, keys: dict[str, set[str]]) -> None:
    if not isinstance(raw, dict):
        return
    takes = keys[name]
    for key in raw:
        if key != "name" and key not in takes:
            fail(f"{table}.{key}", f"does not apply to {table} '{name}' (it takes: {', '.join(sorted(takes)) or 'nothing'})")


def _choices(fail: Any, key: str, values: list[Any], allowed: tuple[str, ...] = (), positive: bool = False) -> None:
    if not values:
        fail(key, "the choice list is empty; give at least one value")
    if len(set(values)) != len(values):
        fail(key, f"choices must be unique, got {values}")
    for v in values:
        if allowed:
            _one_of(fail, key, v, allowed)
        if positive and v < 1:
            fail(key, f"choices must be >= 1, got {v}")


def _range(
    fail: Any,
    key: str,
    values: list[Any],
    integer: bool = False,
    positive: bool = False,
    lower: float | None = None,
    upper: float | None = None,
) -> None:
    if len(values) != 2:
        fail(key, f"expected [min, max], got {values}")
    lo, hi = values
    if integer and (not float(lo).is_integer() or not float(hi).is_integer()):
        fail(key, f"expected whole numbers, got {values}")
    if lo > hi:
        fail(key, f"min > max: min={lo}, max={hi}; write [min, max]")
    if positive and lo <= 0 and lo != hi:
        fail(key, f"min must be > 0 (sampled on a log scale), got {lo}; use [0, 0] to fix it at 0")
    if lower is not None and lo < lower:
        fail(key, f"min must be >= {lower}, got {lo}")
    if upper is not None and hi > upper:
        fail(key, f"max must be <= {upper}, got {hi}")
