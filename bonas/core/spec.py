"""Architecture and training specs: the frozen, JSON-serialisable values between space and model.

The search space turns a trial into an :class:`ArchSpec`; :func:`bonas.model.build.build_model` turns an
``ArchSpec`` into a network. Neither spec knows about Optuna.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

POOLINGS = ("max", "avg", "none")  # after a block: 2x2, stride 2
HEADS = ("gap", "flatten")  # global average pool, or keep the spatial layout
NO_STEM = "none"  # in a space's stems: no stem (the stem types themselves: bonas.model.blocks.STEM_TYPES)
LEARNT_STEMS = ("conv", "patch")  # stem types with a width (a stem_width param); "pool" keeps the image's channels
# describe()'s letter for the built-in block types (bonas.model.blocks); any other type is spelt out: toy32k3
KIND_PREFIX = {"plain": "c", "residual": "r", "separable": "s"}


@dataclass(frozen=True)
class BlockSpec:
    convs: int  # conv -> (batch norm) -> ReLU, repeated
    width: int  # output channels of every conv in the block
    kernel: int  # odd, 'same' padding
    pool: str  # "max" | "avg" | "none": 2x2, stride 2, after the convs
    batch_norm: bool
    dropout: float  # after the pooling; 0 = none
    kind: str = "plain"  # a block type of bonas.model.blocks; specs stored before block types existed have none: plain

    def to_dict(self) -> dict[str, Any]:
        """The block as stored; a plain block has no 'kind' key, so its JSON (and every stored key and
        hash made from it) is exactly what it was before block kinds existed."""
        d = asdict(self)
        if self.kind == "plain":
            del d["kind"]
        return d


@dataclass(frozen=True)
class StemSpec:
    """What down-samples a large image before the first block (bonas.model.blocks.STEM_TYPES)."""

    kind: str  # "pool": average pooling (the image resized, nothing learnt); "conv": stride-2 3x3 convs (+ BN + ReLU)
    # until the stride is reached; "patch": one stride x stride conv
    width: int  # output channels; 0 for "pool", which keeps the image's channels
    stride: int  # how much smaller each side comes out: a power of 2

    def describe(self) -> str:
        return f"{self.kind}{self.width or ''}/{self.stride}"

    def out_size(self, size: int) -> int:
        """A side of ``size`` pixels after the stem: halved (rounding up) per stride-2 conv, or cut into whole patches."""
        if self.kind in ("conv", "pool"):
            for _ in range(self.stride.bit_length() - 1):
                size = (size + 1) // 2
            return size
        return size // self.stride


@dataclass(frozen=True)
class ArchSpec:
    blocks: tuple[BlockSpec, ...]
    head: str  # "gap": global average pool; "flatten": keep the spatial layout
    dense: tuple[int, ...]  # hidden dense layers' units, before the classifier
    dense_dropout: float  # after each hidden dense layer
    stem: StemSpec | None = None  # None: the first block sees the image as it is

    def to_dict(self) -> dict[str, Any]:
        """As stored; without a stem there is no 'stem' key, so a spec (and every key and hash made from it) is
        what it was before stems existed."""
        d = {
            "blocks": [b.to_dict() for b in self.blocks],
            "head": self.head,
            "dense": list(self.dense),
            "dense_dropout": self.dense_dropout,
        }
        if self.stem is not None:
            d["stem"] = asdict(self.stem)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        return cls(
            blocks=tuple(BlockSpec(**b) for b in d["blocks"]),
            head=d["head"],
            dense=tuple(d["dense"]),
            dense_dropout=d["dense_dropout"],
            stem=StemSpec(**d["stem"]) if d.get("stem") else None,
        )

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """One line, e.g. ``c32k3x2+bn/max | r64k5+bn/avg/d0.2 | s64k3 | gap | fc128`` (c plain, r residual,
        s separable blocks), after the stem when there is one: ``patch32/4 | ...``."""
        parts = [self.stem.describe()] if self.stem is not None else []
        for b in self.blocks:
            s = f"{KIND_PREFIX.get(b.kind, b.kind)}{b.width}k{b.kernel}" + (f"x{b.convs}" if b.convs > 1 else "")
            s += "+bn" if b.batch_norm else ""
            s += f"/{b.pool}" if b.pool != "none" else ""
            s += f"/d{b.dropout:.2g}" if b.dropout > 0 else ""
            parts.append(s)
        parts.append(self.head)
        parts += [f"fc{u}" for u in self.dense]
        if self.dense and self.dense_dropout > 0:
            parts[-1] += f"/d{self.dense_dropout:.2g}"
        return " | ".join(parts)


@dataclass(frozen=True)
class TrainSpec:
    optimizer: str  # "sgd" | "adam" | "adamw" | "rmsprop"
    lr: float
    weight_decay: float
    batch_size: int
    augment: bool  # batched random crop (+ flip where the data set allows) on the device

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSpec:
        return cls(**d)
