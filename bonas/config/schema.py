"""Study configs: TOML files loaded into dataclasses, every field defaulted and explained.

A config is checked completely before anything is created: here unknown keys (with the nearest valid
one) and wrong types, in bonas.config.validate what the values mean (empty choice lists, reversed ranges,
unknown sampler/pruner/dataset names); each raises :class:`~bonas.errors.ConfigError` naming the file
and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonas.config.validate import DEFAULT_WIDTHS, PRUNER_KEYS, SAMPLER_KEYS, validate
from bonas.core.errors import ConfigError


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
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))  # channel choices per block
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
    # Seconds of timing per batch size (1 and 64) per trial. 0 (the default): only when latency is an objective or
    # a limit (then 0.05 s). Timing every trial costs ~0.3-1 s of a trial's fixed cost (bench/overhead.py).
    latency_time_s: float = 0.0
    prune_percentile: float = 50.0  # multi-objective pruning: stop below this percentile of no-costlier trials


@dataclass
class FinalConfig:
    # bonas run: the share of --budget spent searching; the rest trains the winner (README "Results per budget")
    search_share: float = 0.5
    train_subset: int = 0  # images the final model trains on (class-balanced); 0 = the whole training split, train + validation
    # true: the final model trains with crop + flip (where the data set allows), whatever its trial did; false: as its
    # trial did ([data] augment). Off by default: on Fashion-MNIST crop+flip lost 2.5 pt in 4-epoch trials and 1.5 pt
    # in 12 epochs on all 54 000 images (bench/results/recipe.json, README "Training recipe")
    augment: bool = False
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
    # A learning-curve PNG with each kept trial. Off by default: drawing it was most of a kept trial's fixed cost
    # (bench/overhead.py), and optuna-dashboard plots every trial's per-epoch accuracy itself.
    curves: bool = False


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
    validate(config, raw, source)
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<stored config>") -> StudyConfig:
    """Rebuild a config from :meth:`StudyConfig.to_dict` output (e.g. a study's user attrs)."""
    raw = {**raw}
    for table, keys in (("sampler", SAMPLER_KEYS), ("pruner", PRUNER_KEYS)):
        t = raw.get(table) or {}
        raw[table] = {k: v for k, v in t.items() if k == "name" or k in keys.get(t.get("name", ""), set())}
    config = _build(StudyConfig, raw, source, "")
    config.path = source
    validate(config, raw, source)
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
