"""Networks built from an :class:`~bonas.spec.ArchSpec`, and what they cost.

Plain PyTorch: no Optuna, no Lightning. ``build_model(spec, input_shape, n_classes)`` is the only way
a network is made, during the search, for ``bonas show`` and for retraining.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bonas.spec import ArchSpec


def build_model(spec: ArchSpec, input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """A fresh, randomly initialised network; ``input_shape`` is (channels, height, width)."""
    channels, height, width = input_shape
    layers: list[tuple[str, nn.Module]] = []
    for i, block in enumerate(spec.blocks):
        for j in range(block.convs):
            pad = block.kernel // 2
            layers.append((f"b{i}_conv{j}", nn.Conv2d(channels, block.width, block.kernel, padding=pad, bias=not block.batch_norm)))
            if block.batch_norm:
                layers.append((f"b{i}_bn{j}", nn.BatchNorm2d(block.width)))
            layers.append((f"b{i}_relu{j}", nn.ReLU(inplace=True)))
            channels = block.width
        if block.pool != "none":
            if min(height, width) < 2:
                raise ValueError(f"block {i}: cannot pool a {height}x{width} feature map")
            pool = nn.MaxPool2d(2) if block.pool == "max" else nn.AvgPool2d(2)
            layers.append((f"b{i}_{block.pool}pool", pool))
            height, width = height // 2, width // 2
        if block.dropout > 0:
            layers.append((f"b{i}_dropout", nn.Dropout(block.dropout)))
    if spec.head == "gap":
        layers.append(("gap", nn.AdaptiveAvgPool2d(1)))
        features = channels
    else:
        features = channels * height * width
    layers.append(("flatten", nn.Flatten()))
    for k, units in enumerate(spec.dense):
        layers.append((f"fc{k}", nn.Linear(features, units)))
        layers.append((f"fc{k}_relu", nn.ReLU(inplace=True)))
        if spec.dense_dropout > 0:
            layers.append((f"fc{k}_dropout", nn.Dropout(spec.dense_dropout)))
        features = units
    layers.append(("classifier", nn.Linear(features, n_classes)))
    return nn.Sequential(OrderedDict(layers))


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one image's forward pass (a multiply-add counts 2), by torch.utils.flop_counter."""
    x = torch.zeros(1, *input_shape)
    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int


def summarize(net: nn.Sequential, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Each layer's output shape (one image), parameters and forward FLOPs."""
    rows = []
    x = torch.zeros(1, *input_shape)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for name, layer in net.named_children():
            with FlopCounterMode(display=False) as counter:
                x = layer(x)
            rows.append(LayerRow(name, type(layer).__name__, tuple(x.shape[1:]), count_params(layer), int(counter.get_total_flops())))
    net.train(was_training)
    return rows


def format_summary(rows: list[LayerRow]) -> str:
    header = f"{'layer':<16}{'type':<18}{'output':<16}{'params':>10}{'FLOPs':>14}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(str(s) for s in r.output_shape)
        lines.append(f"{r.name:<16}{r.kind:<18}{shape:<16}{r.params:>10,}{r.flops:>14,}")
    lines.append("-" * len(header))
    total_p = sum(r.params for r in rows)
    total_f = sum(r.flops for r in rows)
    lines.append(f"{'total':<50}{total_p:>10,}{total_f:>14,}")
    return "\n".join(lines)


def measure_latency(net: nn.Module, input_shape: tuple[int, int, int], batch: int, device: torch.device | str = "cpu",
                    min_time_s: float = 0.1) -> float:
    """Median milliseconds of one inference batch (eval mode, no grad), warmed up, on ``device``.

    ``torch.utils.benchmark`` runs the warm-up, synchronises CUDA and repeats in blocks for at least
    ``min_time_s``; the median of the blocks is reported.
    """
    from torch.utils import benchmark

    was_training = net.training
    net.eval()
    x = torch.zeros(batch, *input_shape, device=device)
    with torch.no_grad():
        timer = benchmark.Timer(stmt="net(x)", globals={"net": net, "x": x}, num_threads=torch.get_num_threads())
        result = timer.blocked_autorange(min_run_time=min_time_s)
    net.train(was_training)
    return result.median * 1000.0
