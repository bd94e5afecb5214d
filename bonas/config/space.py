"""The [space] section: what the define-by-run search space (bonas.nas.space) may propose.

Block type names are a registry of bonas.model.blocks, checked there (bonas.nas.choices); pooling and heads
are what an ArchSpec can express (bonas.core.spec).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bonas.config.checks import Fail, bounds, choices
from bonas.core.spec import HEADS, POOLINGS

DEFAULT_WIDTHS = (16, 32, 64, 128)  # [space] widths when not given


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
    # Large images are down-sampled before the first block (a space's only other down-sampling is its blocks'
    # pooling): how (pool: averaged, as a resize would; conv: stride-2 3x3 convs; patch: one stride x stride conv;
    # none: no stem), how wide (conv, patch), by how much. stem_stride 0 = auto: 2 ** round(log2(side / 32)), about
    # 32 pixels a side for the blocks (1 below 46 px: no stem, and no stem params, for small images); 1 = never.
    stems: list[str] = field(default_factory=lambda: ["pool", "conv", "patch"])
    stem_widths: list[int] = field(default_factory=lambda: [16, 32])
    stem_stride: int = 0
    tie_blocks: bool = False  # one convs/width/kernel/pooling/bn/dropout for every block
    variants: list[VariantConfig] = field(default_factory=list)  # optional sub-spaces, see VariantConfig

    def check(self, fail: Fail) -> None:
        check_space(fail, self)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            fail("variants", f"variant names must be unique, got {names}")
        for i, variant in enumerate(self.variants):
            merged = dataclasses.replace(self, **variant.overrides, variants=[])
            check_space(lambda key, why, i=i, v=variant: fail(f"variants[{i}] ({v.name}).{key}", why), merged)

    def merged(self) -> list[tuple[str, SpaceConfig]]:
        """(key prefix, space): the space itself, and each variant's space with the prefix its keys are named by."""
        return [("", self)] + [
            (f"variants[{i}] ({v.name}).", dataclasses.replace(self, **v.overrides, variants=[]))
            for i, v in enumerate(self.variants)
        ]


def check_space(fail: Fail, s: SpaceConfig) -> None:
    bounds(fail, "n_blocks", s.n_blocks, integer=True, lower=1)
    bounds(fail, "convs_per_block", s.convs_per_block, integer=True, lower=1)
    if s.width_range:
        if s.widths != list(DEFAULT_WIDTHS) and s.widths:
            fail("width_range", "set either widths (choices) or width_range ([min, max]), not both")
        bounds(fail, "width_range", s.width_range, integer=True, lower=1)
    else:
        choices(fail, "widths", s.widths, positive=True)
    choices(fail, "width_multipliers", s.width_multipliers)
    for m in s.width_multipliers:
        if not m > 0:
            fail("width_multipliers", f"multipliers must be > 0 (a width becomes max(1, round(width * multiplier))), got {m}")
    choices(fail, "block_types", s.block_types)
    choices(fail, "kernel_sizes", s.kernel_sizes, positive=True)
    for k in s.kernel_sizes:
        if k % 2 == 0:
            fail("kernel_sizes", f"kernel sizes must be odd ('same' padding), got {k}")
    choices(fail, "pooling", s.pooling, allowed=POOLINGS)
    choices(fail, "batch_norm", s.batch_norm)
    bounds(fail, "dropout", s.dropout, lower=0.0, upper=0.95)
    choices(fail, "heads", s.heads, allowed=HEADS)
    bounds(fail, "dense_layers", s.dense_layers, integer=True, lower=0)
    bounds(fail, "dense_units", s.dense_units, integer=True, lower=1)
    bounds(fail, "dense_dropout", s.dense_dropout, lower=0.0, upper=0.95)
    choices(fail, "stems", s.stems)
    choices(fail, "stem_widths", s.stem_widths, positive=True)
    if s.stem_stride < 0 or (s.stem_stride and s.stem_stride & (s.stem_stride - 1)):
        fail("stem_stride", f"use 0 (auto) or a power of 2 (1 = no stem), got {s.stem_stride}")
