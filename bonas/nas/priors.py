"""Standard designs as priors: the first trials of every new study are the networks a practitioner would try first,
shaped to the input and to the config's space, and TPE searches from there.

A design is written once, as blocks; it becomes a study's params by walking the study's own define-by-run space
(bonas.nas.space.suggest_arch) with a trial that answers every question from the design: what the design fixes
and the space does not offer (a block type, a head, three blocks where the space allows two) rules it out, said in
one line; what the space offers only approximately (a width of 48 where the design has 32, a learning-rate range)
is the nearest value the space has. A large image gets the space's stem first (a pool stem when the space has one:
the design then sees the image as a resize would show it). ``[warm_start] priors = false`` turns them off.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bonas.config import StudyConfig
from bonas.nas.space import suggest_arch, suggest_training

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Design:
    blocks: tuple[tuple[str, int, int, str], ...]  # per block: type, convs, width, pooling (3x3 convs with batch norm)
    head: str
    dense: tuple[int, ...] = ()
    dense_dropout: float = 0.0

    def narrowed(self, factor: float) -> Design:
        """The same design with every block's width times ``factor`` (at least 8)."""
        blocks = tuple((kind, convs, max(8, round(width * factor)), pool) for kind, convs, width, pool in self.blocks)
        return Design(blocks, self.head, self.dense, self.dense_dropout)


DESIGNS: dict[str, Design] = {
    # Fashion-MNIST's benchmark table: "2 Conv+pooling+BN", 0.934 (zalandoresearch/fashion-mnist)
    "2 conv + pool + BN": Design((("plain", 1, 32, "max"), ("plain", 1, 64, "max")), "flatten", (128,), 0.3),
    # Simonyan & Zisserman 2015, at the scale of a small image: pairs of 3x3 convs, the width doubling per pooling
    "VGG-style": Design((("plain", 2, 32, "max"), ("plain", 2, 64, "max"), ("plain", 2, 128, "max")), "gap"),
    # He et al. 2016's basic blocks, three stages of widths 32-64-128, global average pooling
    "small ResNet": Design((("residual", 2, 32, "none"), ("residual", 2, 64, "max"), ("residual", 2, 128, "max")), "gap"),
}
# The knobs every design trains with first: AdamW at 2e-3, weight decay 5e-4, batch 128 (a good hand default).
KNOBS: dict[str, Any] = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-4, "batch_size": 128, "augment": False}
OPTIMIZER_ORDER = ("adamw", "adam", "sgd", "rmsprop")  # what stands in for AdamW in a space without it
STEM_ORDER = ("pool", "conv", "patch", "none")  # the stem a design gets in front of it, by preference


class OutsideSpace(Exception):
    """The design fixes something the space does not offer."""


class _DesignTrial:
    """Answers the space's questions from a design (strictly where the design's shape is at stake, to the nearest
    available value elsewhere) and records the params, as a trial would hold them."""

    def __init__(self, design: Design):
        self.design, self.params = design, {}

    def want(self, name: str) -> Any:
        d, found = self.design, re.fullmatch(r"(b|d)(\d+)_(\w+)", name)
        if found:
            i, field = int(found[2]), found[3]
            if found[1] == "d":
                return d.dense[i]
            kind, convs, width, pool = d.blocks[i]
            return {"type": kind, "convs": convs, "width": width, "kernel": 3, "pool": pool, "bn": True, "dropout": 0.0}[field]
        fixed = {"n_blocks": len(d.blocks), "head": d.head, "n_dense": len(d.dense), "dense_dropout": d.dense_dropout}
        fixed |= {"width_mult": 1.0, "stem_width": 32, **KNOBS}
        if name in fixed:
            return fixed[name]
        raise OutsideSpace(f"it has no value for the space's param {name!r}")

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        choices = list(choices)
        if name == "stem":
            value = next(c for c in STEM_ORDER if c in choices)
        elif name == "optimizer":
            value = next((c for c in OPTIMIZER_ORDER if c in choices), choices[0])
        else:
            want = self.want(name)
            if want in choices:
                value = want
            elif name.endswith(("_width", "_kernel", "width_mult", "batch_size")) or name == "stem_width":
                value = min(choices, key=lambda c: abs(math.log(c / want)))
            else:
                raise OutsideSpace(f"{name} = {want!r} is not among {choices}")
        self.params[name] = value
        return value

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        want = self.want(name)
        if not low <= want <= high and not name.endswith("_units") and not name.endswith("_width"):
            raise OutsideSpace(f"{name} = {want} is outside [{low}, {high}]")
        self.params[name] = value = min(high, max(low, int(want)))
        return value

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.params[name] = value = min(high, max(low, float(self.want(name))))
        return value


NARROWING = (1.0, 0.5, 0.25)  # a design over the FLOPs limit tries these fractions of its widths before it is left out


def design_params(design: Design, config: StudyConfig, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The params of ``design`` in the config's space (raises OutsideSpace when it has no place there)."""
    if config.space.variants:
        raise OutsideSpace("the space has variants, which no standard design names")
    trial = _DesignTrial(design)
    arch = suggest_arch(trial, config.space, input_shape)
    suggest_training(trial, config.training, config.data)
    got = [(b.kind, b.convs, b.pool) for b in arch.blocks]
    want = [(kind, convs, pool) for kind, convs, _, pool in design.blocks]
    if len(got) != len(want):  # the space's block counts leave out the design's
        raise OutsideSpace(f"the space makes {len(got)} blocks, the design {len(want)}")
    for i, (g, w) in enumerate(zip(got, want, strict=True)):  # what the space fixes is asked nothing: compare the result
        if g[:2] != w[:2] or (g[2] != w[2] and g[2] != "none"):  # a pool past 2x2 is "none" by construction
            raise OutsideSpace(f"the space makes block {i} {g[0]} x{g[1]}, the design {w[0]} x{w[1]}")
    if arch.head != design.head or len(arch.dense) != len(design.dense) or not all(b.batch_norm for b in arch.blocks):
        raise OutsideSpace(f"the space makes its head {arch.describe().split(' | ', len(arch.blocks))[-1]!r}")
    return trial.params


def priors(config: StudyConfig, input_shape: tuple[int, int, int], max_flops: float = 0.0) -> list[tuple[str, dict]]:
    """(design name, params) of every standard design the space can hold within the FLOPs limit, in DESIGNS' order:
    a design over the limit is narrowed (NARROWING) until it fits, and named with its widths; each one left out is
    said in one line."""
    if not config.warm_start.priors:
        return []
    found = []
    for name, design in DESIGNS.items():
        try:
            found.append(_fitted(name, design, config, input_shape, max_flops))
        except OutsideSpace as err:
            log.warning("priors: %s left out: %s", name, err)
    return found


def _fitted(name: str, design: Design, config: StudyConfig, input_shape, max_flops: float) -> tuple[str, dict]:
    from bonas.model.build import build_model, count_flops

    tried = []
    for factor in NARROWING:
        params = design_params(design.narrowed(factor), config, input_shape)
        if params in tried:  # the space has nothing narrower
            break
        tried.append(params)
        arch = suggest_arch(_Replay(params), config.space, input_shape)
        flops = count_flops(build_model(arch, input_shape, 2), input_shape)
        if not max_flops or flops <= max_flops:
            if factor == 1.0:
                return name, params
            widths = "-".join(str(b.width) for b in arch.blocks)
            log.info("priors: %s narrowed to widths %s for the FLOPs limit of %.3g", name, widths, max_flops)
            return f"{name} ({widths})", params
    raise OutsideSpace(f"{flops:.3g} FLOPs per image at its narrowest in this space, over the limit of {max_flops:.3g}")


class _Replay:
    """A trial that answers from recorded params (optuna's FixedTrial, without its warnings for unused ones)."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.params[name]

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.params[name]
