"""The conditional search space, define-by-run: a trial in, an :class:`ArchSpec` and :class:`TrainSpec` out.

Parameters exist only where they mean something: ``b2_width`` only when there are three blocks,
``d1_units`` only with two dense layers, a block's ``pool`` only while the feature map is at least 2x2
(so every sampled architecture is valid for the input size by construction). A setting with one
choice, or a range with min == max, is fixed and not a parameter at all.

Parameter names: ``stem``, ``stem_width`` (only for images large enough to need a stem); ``n_blocks``,
``width_mult``; per block ``b{i}_type``, ``b{i}_convs``, ``b{i}_width``,
``b{i}_kernel``, ``b{i}_pool``, ``b{i}_bn``, ``b{i}_dropout`` (without the ``b{i}_`` prefix when
``tie_blocks``); ``head``, ``n_dense``, ``d{k}_units``, ``dense_dropout``; ``optimizer``, ``lr``,
``weight_decay``, ``batch_size``, ``augment``. ``width_mult`` scales every block's width (the ArchSpec
holds the final widths), ``b{i}_type`` picks plain / residual / separable; neither exists unless its
config list has more than one value, so a config without them has exactly the params it always had.
With variants, ``variant`` picks one, and a field the variant overrides is named ``<variant>.<name>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import optuna

from bonas.config import DataConfig, SpaceConfig, StudyConfig, TrainingConfig
from bonas.config.checks import one_of
from bonas.core.spec import LEARNT_STEMS, NO_STEM, ArchSpec, BlockSpec, StemSpec, TrainSpec


class _Params:
    """Suggests through a trial, naming params and skipping fixed ones."""

    def __init__(self, trial: optuna.trial.BaseTrial, prefix: str = "", prefixed: frozenset[str] = frozenset()):
        self.trial = trial
        self.prefix = prefix
        self.prefixed = prefixed  # fields whose params carry the variant prefix

    def _name(self, field: str, name: str) -> str:
        return f"{self.prefix}{name}" if field in self.prefixed else name

    def choice(self, field: str, name: str, choices: list[Any]) -> Any:
        if len(choices) == 1:
            return choices[0]
        return self.trial.suggest_categorical(self._name(field, name), choices)

    def int(self, field: str, name: str, bounds: list[int], log: bool = False) -> int:
        lo, hi = int(bounds[0]), int(bounds[1])
        if lo == hi:
            return lo
        return self.trial.suggest_int(self._name(field, name), lo, hi, log=log)

    def float(self, field: str, name: str, bounds: list[float], log: bool = False) -> float:
        lo, hi = float(bounds[0]), float(bounds[1])
        if lo == hi:
            return lo
        return self.trial.suggest_float(self._name(field, name), lo, hi, log=log)


def suggest_arch(trial: optuna.trial.BaseTrial, space: SpaceConfig, input_shape: tuple[int, int, int]) -> ArchSpec:
    """Sample an architecture valid for ``input_shape`` (channels, height, width)."""
    p = _Params(trial)
    if space.variants:
        names = [v.name for v in space.variants]
        variant = space.variants[names.index(p.choice("variant", "variant", names))]
        space = dataclasses.replace(space, **variant.overrides, variants=[])
        p = _Params(trial, f"{variant.name}.", frozenset(variant.overrides))

    size = min(input_shape[1], input_shape[2])
    stem = suggest_stem(p, space, size)
    size = stem.out_size(size) if stem is not None else size
    blocks = []
    n_blocks = p.int("n_blocks", "n_blocks", space.n_blocks)
    mult = p.choice("width_multipliers", "width_mult", space.width_multipliers)
    for i in range(n_blocks):
        b = "" if space.tie_blocks else f"b{i}_"
        kind = p.choice("block_types", f"{b}type", space.block_types)
        convs = p.int("convs_per_block", f"{b}convs", space.convs_per_block)
        if space.width_range:
            width = p.int("width_range", f"{b}width", space.width_range, log=True)
        else:
            width = p.choice("widths", f"{b}width", space.widths)
        width = max(1, round(width * mult))  # the spec holds final widths; x1.0 leaves them as they are
        kernel = p.choice("kernel_sizes", f"{b}kernel", space.kernel_sizes)
        # Pooling below 1x1 is impossible: past that depth the pool param does not exist (tied: it
        # exists once, and deeper blocks just do not pool).
        pool = "none"
        if size >= 2 or space.tie_blocks:
            pool = p.choice("pooling", f"{b}pool", space.pooling)
            pool = pool if size >= 2 else "none"
        bn = p.choice("batch_norm", f"{b}bn", space.batch_norm)
        dropout = p.float("dropout", f"{b}dropout", space.dropout)
        blocks.append(BlockSpec(convs=convs, width=width, kernel=kernel, pool=pool, batch_norm=bn, dropout=dropout, kind=kind))
        if pool != "none":
            size //= 2

    head = p.choice("heads", "head", space.heads)
    n_dense = p.int("dense_layers", "n_dense", space.dense_layers)
    dense = tuple(p.int("dense_units", f"d{k}_units", space.dense_units, log=True) for k in range(n_dense))
    dense_dropout = p.float("dense_dropout", "dense_dropout", space.dense_dropout) if n_dense else 0.0
    return ArchSpec(blocks=tuple(blocks), head=head, dense=dense, dense_dropout=dense_dropout, stem=stem)


STEM_TARGET = 32  # pixels a side the auto stem stride leaves for the blocks


def stem_stride(space: SpaceConfig, size: int) -> int:
    """By how much a stem down-samples a side of ``size`` pixels: ``[space] stem_stride``, or with 0 (auto) the
    power of 2 that leaves about STEM_TARGET pixels (1: no stem)."""
    if space.stem_stride:
        return space.stem_stride
    return 2 ** max(0, round(math.log2(size / STEM_TARGET)))


def suggest_stem(p: _Params, space: SpaceConfig, size: int) -> StemSpec | None:
    """``stem`` (its kind, or "none") and ``stem_width``: params only where the input is large enough to need one."""
    stride = stem_stride(space, size)
    if stride <= 1:
        return None
    kind = p.choice("stems", "stem", space.stems)
    if kind == NO_STEM:
        return None
    width = p.choice("stem_widths", "stem_width", space.stem_widths) if kind in LEARNT_STEMS else 0
    return StemSpec(kind, width, stride)


# [data] augment: name -> whether a trial trains with augmentation (its param ``augment`` only under "search")
AUGMENT_POLICIES: dict[str, Callable[[_Params], bool]] = {
    "none": lambda p: False,
    "auto": lambda p: True,  # crop + flip where the data set allows (bonas.data.sources)
    "search": lambda p: p.choice("augment", "augment", [False, True]),
}


def check(config: StudyConfig) -> None:
    one_of(config.fail("data"), "augment", config.data.augment, AUGMENT_POLICIES)


def suggest_training(trial: optuna.trial.BaseTrial, training: TrainingConfig, data: DataConfig) -> TrainSpec:
    p = _Params(trial)
    return TrainSpec(
        optimizer=p.choice("optimizers", "optimizer", training.optimizers),
        lr=p.float("lr", "lr", training.lr, log=True),
        weight_decay=p.float("weight_decay", "weight_decay", training.weight_decay, log=True),
        batch_size=p.choice("batch_sizes", "batch_size", training.batch_sizes),
        augment=AUGMENT_POLICIES[data.augment](p),
    )


def specs_from_params(
    params: dict[str, Any],
    space: SpaceConfig,
    training: TrainingConfig,
    data: DataConfig,
    input_shape: tuple[int, int, int],
) -> tuple[ArchSpec, TrainSpec]:
    """Rebuild a trial's specs from its stored params alone (what ``bonas show`` and retrain use)."""
    trial = optuna.trial.FixedTrial(params)
    return suggest_arch(trial, space, input_shape), suggest_training(trial, training, data)


def enumerate_params(space: SpaceConfig, input_shape: tuple[int, int, int], limit: int = 100_000) -> list[dict[str, Any]]:
    """Every parameter assignment of an all-categorical space (e.g. the article's 27), in a stable order.

    Walks the define-by-run tree: a parameter that only exists on some branches is only enumerated
    there. Raises ValueError on a continuous parameter or past ``limit`` leaves.
    """
    leaves: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = [{}]
    while pending:
        fixed = pending.pop(0)
        try:
            suggest_arch(_ProbeTrial(fixed), space, input_shape)
        except _Branch as branch:
            pending.extend({**fixed, branch.name: v} for v in branch.values)
            continue
        leaves.append(fixed)
        if len(leaves) > limit:
            raise ValueError(f"more than {limit} architectures")
    return leaves


class _Branch(Exception):
    def __init__(self, name: str, values: list[Any]):
        self.name, self.values = name, values


class _ProbeTrial:
    """A stand-in trial that answers known params and raises _Branch at the first unknown one."""

    def __init__(self, fixed: dict[str, Any]):
        self.fixed = fixed

    def _get(self, name: str, values: Any) -> Any:
        if name in self.fixed:
            return self.fixed[name]
        raise _Branch(name, list(values))

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._get(name, choices)

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        if high - low > 4096:
            raise ValueError(f"{name}: range too wide to enumerate")
        return self._get(name, range(low, high + 1))

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        raise ValueError(f"{name}: a continuous parameter cannot be enumerated")
