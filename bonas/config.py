"""Study configs: TOML files loaded into dataclasses, every field defaulted and explained.

A config is checked completely before anything is created: unknown keys (with the nearest valid one),
wrong types, empty choice lists, reversed ranges, unknown sampler/pruner/dataset names all raise
:class:`~bonas.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonas.errors import ConfigError
from bonas.spec import BLOCK_KINDS

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder")
SAMPLERS = ("tpe", "random", "gp", "nsga2")
PRUNERS = ("median", "successive-halving", "hyperband", "asha", "none")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
POOLINGS = ("max", "avg", "none")
HEADS = ("gap", "flatten")
BLOCK_TYPES = BLOCK_KINDS  # plain, residual, separable: how a block's convs are wired (bonas.model)
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


@dataclass
class BudgetConfig:
    n_trials: int = 30  # finished (COMPLETE + PRUNED) trials the study aims for, across all runs and workers
    timeout: float = 0.0  # seconds the study may spend running trials, across runs; 0 = no limit
    max_failures: int = 5  # a run stops after this many FAIL trials in a row: a broken setup must not loop


@dataclass
class SamplerConfig:
    name: str = "tpe"  # tpe | random (the article's strategy) | gp | nsga2
    n_startup_trials: int = 10  # random trials before the model is trusted (tpe, gp)
    multivariate: bool = True  # tpe: one joint density, so width x depth interactions are learnt
    group: bool = True  # tpe: model each set of co-occurring params apart: the space is conditional
    constant_liar: bool = True  # tpe: running trials count as bad, so parallel workers spread out
    population_size: int = 20  # nsga2: individuals per generation


@dataclass
class PrunerConfig:
    # successive-halving by default: 1.65x fewer epochs than no pruning with the same best on every seed,
    # against 1.23x for median and 1.37x for hyperband (bench/search_quality.py, part B; README "Results")
    name: str = "successive-halving"  # successive-halving | median | hyperband | asha (pause + promote) | none
    n_startup_trials: int = 5  # median: finished trials before anything is pruned
    n_warmup_steps: int = 1  # median: epochs every trial gets before it can be pruned
    min_resource: int = 1  # successive-halving, hyperband: first check at epoch index 1 (after 2 epochs), then 3, 9, ...;
    # asha: rungs after min_resource, min_resource * r, ... epochs
    reduction_factor: int = 3  # successive-halving, hyperband, asha: 1/r of the trials go on at each rung


@dataclass
class TrainingConfig:
    max_epochs: int = 5  # per trial; short on purpose: the search ranks architectures, retrain trains long
    batch_sizes: list[int] = field(default_factory=lambda: [64, 128])  # choices; one value = fixed
    optimizers: list[str] = field(default_factory=lambda: ["adamw", "sgd"])  # sgd has nesterov momentum 0.9
    lr: list[float] = field(default_factory=lambda: [1e-3, 1e-2])  # [min, max], sampled log-uniform
    weight_decay: list[float] = field(default_factory=lambda: [1e-5, 1e-2])  # [min, max], log-uniform
    schedule: str = "cosine"  # cosine: lr decays to 0 over max_epochs; onecycle: up then down (Smith); constant: no decay
    warmup_epochs: float = 0.0  # cosine: linear warm-up from lr/10 over this many epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    ema_decay: float = 0.0  # 0 = off; else an exponential moving average of the weights is validated and kept
    channels_last: bool = True  # on CUDA: channels_last memory format (faster bf16 convolutions); ignored on CPU
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true elsewhere; or any Lightning precision
    eval_batch_size: int = 1024  # validation batches: large, they hold no gradients


@dataclass
class DataConfig:
    dir: str = ""  # downloads and decoded caches; "" = $BONAS_DATA_DIR, else ~/.cache/bonas
    val_fraction: float = 0.15  # of the training split, held out (seeded, stratified) for validation
    train_subset: int = 0  # use only this many training images (class-balanced); 0 = all
    val_subset: int = 0  # likewise for validation; 0 = all
    augment: str = "none"  # none | auto (crop+flip where the data set allows) | search (a trial param)
    cutout: int = 0  # with augmentation: a random square of this many pixels a side blanked per image; 0 = off
    root: str = ""  # imagefolder: the root/<class>/*.png tree
    image_size: int = 32  # imagefolder: images are resized to image_size x image_size
    channels: int = 3  # imagefolder: 1 (grey) or 3 (RGB)


@dataclass
class VariantConfig:
    """A named sub-space: a categorical ``variant`` param picks one, its fields override [space]."""

    name: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpaceConfig:
    n_blocks: list[int] = field(default_factory=lambda: [1, 3])  # [min, max] conv blocks
    convs_per_block: list[int] = field(default_factory=lambda: [1, 2])  # [min, max] convs in a block
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])  # channel choices per block
    width_range: list[int] = field(default_factory=list)  # [min, max] log-int instead of widths
    width_multipliers: list[float] = field(default_factory=lambda: [1.0])  # scale every block width: max(1, round(w * m))
    block_types: list[str] = field(default_factory=lambda: ["plain"])  # plain | residual | separable, chosen per block
    kernel_sizes: list[int] = field(default_factory=lambda: [3, 5])  # odd, 'same' padding
    pooling: list[str] = field(default_factory=lambda: ["max", "avg", "none"])  # after a block
    batch_norm: list[bool] = field(default_factory=lambda: [True, False])  # after each conv
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.3])  # [min, max] after a block
    heads: list[str] = field(default_factory=lambda: ["gap", "flatten"])  # global avg pool or flatten
    dense_layers: list[int] = field(default_factory=lambda: [0, 2])  # [min, max] hidden dense layers
    dense_units: list[int] = field(default_factory=lambda: [32, 256])  # [min, max] log-int units
    dense_dropout: list[float] = field(default_factory=lambda: [0.0, 0.5])  # [min, max]
    tie_blocks: bool = False  # one convs/width/kernel/pooling/bn/dropout for every block
    variants: list[VariantConfig] = field(default_factory=list)  # optional sub-spaces, see VariantConfig


@dataclass
class ObjectiveConfig:
    metrics: list[str] = field(default_factory=lambda: ["val_acc"])  # val_acc, or val_acc + params|flops|latency
    max_params: int = 0  # architectures above this many parameters are infeasible, never trained; 0 = no limit
    max_flops: float = 0.0  # likewise for FLOPs per image; 0 = no limit
    max_latency_ms: float = 0.0  # likewise for batch-1 inference latency on the training device; 0 = no limit
    latency_time_s: float = 0.05  # timing per batch size (1 and 64), per trial; 0 = measure only when needed
    prune_percentile: float = 50.0  # multi-objective pruning: stop below this percentile of no-costlier trials


@dataclass
class FinalConfig:
    search_share: float = (
        0.5  # bonas run: the share of --budget spent searching, the rest trains the winner (README "Results per budget")
    )
    train_subset: int = 0  # images the final model trains on (class-balanced); 0 = the whole training split, train + validation
    epochs_multiple: int = 3  # bonas retrain without --epochs: this many times the search's epochs per trial


@dataclass
class ScreenConfig:
    proxy: str = "none"  # none | naswot | synflow | grad_norm | snip: score each network at initialisation
    percentile: float = 25.0  # stop a trial before training when it scores below this percentile of earlier ones
    n_startup_trials: int = 10  # trials scored before any is stopped
    batch_size: int = 128  # images in the one batch a network is scored on


@dataclass
class WarmStartConfig:
    file: str = ""  # a TOML file of [[trial]] tables (params), enqueued when the study is created
    from_study: str = ""  # a study name or config whose top_k trials are enqueued when this one is created
    top_k: int = 5  # how many of from_study's best completed trials


@dataclass
class ArtifactsConfig:
    dir: str = ""  # artifact store; "" = <name>.artifacts beside the SQLite file (or the config for servers)
    keep_top_k: int = 3  # weights, ArchSpec and learning curve of the best k completed trials; 0 = none
    curves: bool = True  # a learning-curve PNG with each kept trial


@dataclass
class WorkersConfig:
    heartbeat_interval: int = 10  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial silent this long is failed and retried
    max_retry: int = 2  # a killed trial is retried with the same params this many times
    reuse_duplicates: bool = True  # a proposal identical to a finished trial reuses its result
    checkpoint: bool = True  # save each trial's training state every epoch: a retried trial goes on from it


@dataclass
class StudyConfig:
    name: str = ""  # study name in the storage; also names the default database file
    dataset: str = "digits"  # one of DATASETS
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

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, as stored on the study (no internal fields)."""
        d = dataclasses.asdict(self)
        d.pop("path")
        d["space"]["variants"] = [{"name": v.name, **v.overrides} for v in self.space.variants]
        return d


# Sections whose change makes old trials incomparable; budget, sampler, pruner and workers may change
# between runs of one study.
COMPARABLE_SECTIONS = ("dataset", "seed", "training", "data", "space", "objective")


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a .toml study config") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> StudyConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: TOML syntax error: {err}") from None
    config = _build(StudyConfig, raw, source, "")
    config.path = source
    if not config.name:
        config.name = Path(source).stem if source != "<config>" else ""
    _validate(config, raw, source)
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<stored config>") -> StudyConfig:
    """Rebuild a config from :meth:`StudyConfig.to_dict` output (e.g. a study's user attrs)."""
    raw = {**raw}
    for table, keys in (("sampler", SAMPLER_KEYS), ("pruner", PRUNER_KEYS)):
        t = raw.get(table) or {}
        raw[table] = {k: v for k, v in t.items() if k == "name" or k in keys.get(t.get("name", ""), set())}
    config = _build(StudyConfig, raw, source, "")
    config.path = source
    _validate(config, raw, source)
    return config


# --- generic dataclass building ------------------------------------------------------------------


def _build(cls: type, raw: Any, source: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where or 'config'}: expected a table, got {_show(raw)}")
    if cls is VariantConfig:
        return _build_variant(raw, source, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        key_path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{key_path}'{_nearest(key, fields)}")
        kwargs[key] = _coerce(hints[key], value, source, key_path)
    return cls(**kwargs)


def _build_variant(raw: dict[str, Any], source: str, where: str) -> VariantConfig:
    space_hints = typing.get_type_hints(SpaceConfig)
    overridable = set(space_hints) - {"variants", "tie_blocks"}
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {where}.name: every variant needs a non-empty name string")
    overrides = {}
    for key, value in raw.items():
        if key == "name":
            continue
        if key not in overridable:
            raise ConfigError(f"{source}: unknown key '{where}.{key}'{_nearest(key, overridable)}")
        overrides[key] = _coerce(space_hints[key], value, source, f"{where}.{key}")
    return VariantConfig(name=name, overrides=overrides)


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, source, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            _type_error(source, key, f"a list of {_type_name(item)}", value)
        return [_coerce(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _type_error(source, key, "a table", value)
        return value
    if hint is bool:
        if not isinstance(value, bool):
            _type_error(source, key, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _type_error(source, key, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _type_error(source, key, "a number", value)
        if not math.isfinite(value):
            _type_error(source, key, "a finite number", value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _type_error(source, key, "a string", value)
        return value
    raise AssertionError(f"unhandled config type {hint!r} for {key}")


def _type_name(hint: Any) -> str:
    if dataclasses.is_dataclass(hint):
        return "tables"
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, str(hint))


def _type_error(source: str, key: str, expected: str, value: Any) -> typing.NoReturn:
    raise ConfigError(f"{source}: {key}: expected {expected}, got {_show(value)}")


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"


def _nearest(key: str, valid: Any) -> str:
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid keys: {', '.join(sorted(valid))})"


# --- semantic checks ---------------------------------------------------------------------------


def _validate(c: StudyConfig, raw: dict[str, Any], source: str) -> None:
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
        if s.widths != SpaceConfig().widths and s.widths:
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
