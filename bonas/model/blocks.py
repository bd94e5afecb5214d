"""The block types a space may choose (``[space] block_types``): one registry, read by the config check and by
:func:`bonas.model.build.build_model`, which asks each block's type for its layers.

A block type turns a :class:`~bonas.core.spec.BlockSpec` and the incoming channel count into named layers (the
names every checkpoint of that type has). Pooling and dropout follow every type of block (build_model adds them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from bonas.config import StudyConfig
from bonas.config.checks import choices
from bonas.core.spec import NO_STEM, BlockSpec, StemSpec

Layers = list[tuple[str, nn.Module]]


def conv(c_in: int, c_out: int, kernel: int, batch_norm: bool, stride: int = 1) -> nn.Conv2d:
    """A 'same'-padded conv; no bias when a batch norm follows (it would be cancelled)."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batch_norm)


class SeparableConv2d(nn.Sequential):
    """A depthwise kxk conv (one filter per input channel, no bias) then a pointwise 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool):
        super().__init__(
            OrderedDict(
                [
                    ("depthwise", nn.Conv2d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in, bias=False)),
                    ("pointwise", nn.Conv2d(c_in, c_out, 1, bias=bias)),
                ]
            )
        )


class ResidualBlock(nn.Module):
    """``convs`` x conv -> (BN) -> ReLU, the last ReLU after adding the shortcut: the input itself, or a
    1x1 conv (+ BN) projection when the width changes (He et al. 2016, option B)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, convs: int, batch_norm: bool):
        super().__init__()
        body: Layers = []
        for j in range(convs):
            body.append((f"conv{j}", conv(c_in if j == 0 else c_out, c_out, kernel, batch_norm)))
            if batch_norm:
                body.append((f"bn{j}", nn.BatchNorm2d(c_out)))
            if j < convs - 1:
                body.append((f"relu{j}", nn.ReLU(inplace=True)))
        self.body = nn.Sequential(OrderedDict(body))
        if c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            projection = [("conv", conv(c_in, c_out, 1, batch_norm))] + ([("bn", nn.BatchNorm2d(c_out))] if batch_norm else [])
            self.shortcut = nn.Sequential(OrderedDict(projection))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _stacked(make_conv: Callable[[int, BlockSpec], nn.Module], kind: str) -> Callable[[int, BlockSpec, int], Layers]:
    """A block of ``convs`` x (conv -> BN -> ReLU), each conv made by ``make_conv(c_in, block)``."""

    def layers(c_in: int, block: BlockSpec, i: int) -> Layers:
        out: Layers = []
        for j in range(block.convs):
            out.append((f"b{i}_{kind}{j}", make_conv(c_in, block)))
            if block.batch_norm:
                out.append((f"b{i}_bn{j}", nn.BatchNorm2d(block.width)))
            out.append((f"b{i}_relu{j}", nn.ReLU(inplace=True)))
            c_in = block.width
        return out

    return layers


def _residual(c_in: int, block: BlockSpec, i: int) -> Layers:
    return [(f"b{i}_res", ResidualBlock(c_in, block.width, block.kernel, block.convs, block.batch_norm))]


# name -> (incoming channels, the block, its index) -> the block's named layers, before its pooling and dropout
BLOCK_TYPES: dict[str, Callable[[int, BlockSpec, int], Layers]] = {
    # conv -> (BN) -> ReLU, repeated
    "plain": _stacked(lambda c, b: conv(c, b.width, b.kernel, b.batch_norm), "conv"),
    # the same convs with an identity (or 1x1 projection) shortcut added before the last ReLU
    "residual": _residual,
    # each conv a depthwise kxk then a pointwise 1x1
    "separable": _stacked(lambda c, b: SeparableConv2d(c, b.width, b.kernel, bias=not b.batch_norm), "sep"),
}


def _conv_stem(c_in: int, stem: StemSpec) -> Layers:
    """log2(stride) stride-2 3x3 convs, each with BN and ReLU: a small image at a quarter (or less) of the cost."""
    out: Layers = []
    for j in range(stem.stride.bit_length() - 1):
        out += [
            (f"stem_conv{j}", conv(c_in, stem.width, 3, True, stride=2)),
            (f"stem_bn{j}", nn.BatchNorm2d(stem.width)),
            (f"stem_relu{j}", nn.ReLU(inplace=True)),
        ]
        c_in = stem.width
    return out


def _pool_stem(c_in: int, stem: StemSpec) -> Layers:
    """Average pooling by the stride: the image resized (an area filter), nothing learnt, no FLOPs to speak of. The
    blocks see what a smaller copy of the image would have shown them: a large image loses nothing a resize keeps."""
    return [("stem_pool", nn.AvgPool2d(stem.stride, ceil_mode=True))]


def _patch_stem(c_in: int, stem: StemSpec) -> Layers:
    """One stride x stride conv of stride ``stride`` (patchify, as ViT and ConvNeXt begin), BN, ReLU."""
    patch = nn.Conv2d(c_in, stem.width, stem.stride, stride=stem.stride, bias=False)
    return [("stem_patch", patch), ("stem_bn", nn.BatchNorm2d(stem.width)), ("stem_relu", nn.ReLU(inplace=True))]


# name -> (incoming channels, the stem) -> its named layers (NO_STEM, "none", in a space's stems: no stem at all)
STEM_TYPES: dict[str, Callable[[int, StemSpec], Layers]] = {"pool": _pool_stem, "conv": _conv_stem, "patch": _patch_stem}


def check(config: StudyConfig) -> None:
    fail = config.fail("space")
    for prefix, space in config.space.merged():
        choices(fail, f"{prefix}block_types", space.block_types, allowed=BLOCK_TYPES)
        choices(fail, f"{prefix}stems", space.stems, allowed=(NO_STEM, *STEM_TYPES))
