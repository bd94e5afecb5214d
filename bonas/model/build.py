"""Networks built from an :class:`~bonas.spec.ArchSpec`, and what they cost.

Plain PyTorch: no Optuna, no Lightning. ``build_model(spec, input_shape, n_classes)`` is the only way
a network is made, during the search, for ``bonas show`` and for retraining.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bonas.core.spec import ArchSpec
from bonas.model.blocks import BLOCK_TYPES, STEM_TYPES


def build_model(spec: ArchSpec, input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """A fresh, randomly initialised network; ``input_shape`` is (channels, height, width).

    One flat ``nn.Sequential``: the stem's layers when there is one (``stem_conv0``, ... or ``stem_patch``), then
    each block's layers as its type makes them (bonas.model.blocks: a plain block
    ``b0_conv0``, ``b0_bn0``, ``b0_relu0``, ...; a residual block one ``b0_res``; a separable block a
    ``b0_sep0`` per conv with its BN and ReLU), then its pooling and dropout; then the head.
    """
    channels, height, width = input_shape
    layers: list[tuple[str, nn.Module]] = []
    if spec.stem is not None:
        layers += STEM_TYPES[spec.stem.kind](channels, spec.stem)
        channels = spec.stem.width or channels
        height, width = spec.stem.out_size(height), spec.stem.out_size(width)
    for i, block in enumerate(spec.blocks):
        if block.kind not in BLOCK_TYPES:
            raise ValueError(f"block {i}: unknown block type {block.kind!r}; registered: {', '.join(BLOCK_TYPES)}")
        layers += BLOCK_TYPES[block.kind](channels, block, i)
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


def resolutions(spec: ArchSpec, input_shape: tuple[int, int, int]) -> list[tuple[str, int, int]]:
    """(stage, height, width) of the feature map the input, the stem and each block hand on: where a network
    spends its FLOPs (a conv's cost grows with the area it runs at)."""
    _, height, width = input_shape
    out = [("input", height, width)]
    if spec.stem is not None:
        height, width = spec.stem.out_size(height), spec.stem.out_size(width)
        out.append(("stem", height, width))
    for i, block in enumerate(spec.blocks):
        if block.pool != "none":
            height, width = height // 2, width // 2
        out.append((f"b{i}", height, width))
    return out


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one image's forward pass (a multiply-add counts 2), by torch.utils.flop_counter."""
    x = torch.zeros(1, *input_shape)
    was_training = net.training
    net.eval()
    try:
        with _one_thread(), torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        net.train(was_training)
    return int(counter.get_total_flops())


def widest_activation(net: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Elements per image of the largest tensor any layer hands on (or of the input): what one image of an
    evaluation batch holds at its peak."""
    sizes = [int(torch.Size(input_shape).numel())]

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output[0].numel())

    _one_image(net, input_shape, {m: record for m in net.modules()})
    return max(sizes)


def _one_image(net: nn.Module, input_shape: tuple[int, int, int], hooks: dict[nn.Module, Any], counter=None) -> None:
    """One image of zeros through ``net`` in eval mode, on one thread, without gradients (under ``counter`` when
    given), each module of ``hooks`` calling its forward hook; the mode and the hooks are restored after."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    was_training = net.training
    net.eval()
    try:
        with _one_thread(), torch.no_grad(), counter or nullcontext():
            net(torch.zeros(1, *input_shape, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()


def pool_stem(net: nn.Module) -> int:
    """The factor of ``net``'s pool stem (the image averaged down, nothing learnt), 1 when it has none."""
    stem = getattr(net, "stem_pool", None)
    return int(stem.kernel_size) if isinstance(stem, nn.AvgPool2d) else 1


@contextmanager
def without_pool_stem(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` with its pool stem taken out for the duration, for inputs pooled already (bonas.data.splits.Splits.
    pooled). The stem holds no state: what is trained or saved meanwhile is the whole network's."""
    stem = net.stem_pool
    net.stem_pool = nn.Identity()
    try:
        yield net
    finally:
        net.stem_pool = stem


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run a one-image forward pass on one intra-op thread. Its kernels are too small to split, and on a
    shared CPU every parallel region waits for a descheduled helper thread: measured on 2 busy cores, a
    batch-1 summary took 22-150 ms with 2 threads and 3-7 ms with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int

    def to_list(self) -> list[Any]:
        """Plain JSON: ``[name, kind, [c, h, w], params, flops]`` (what a trial stores for its note)."""
        return [self.name, self.kind, list(self.output_shape), self.params, self.flops]

    @classmethod
    def from_list(cls, row: list[Any]) -> LayerRow:
        name, kind, shape, params, flops = row
        return cls(str(name), str(kind), tuple(int(s) for s in shape), int(params), int(flops))


def summarize(net: nn.Sequential, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Each top-level layer's output shape (one image), parameters and forward FLOPs, in one forward pass.

    Output shapes come from forward hooks, FLOPs from one ``FlopCounterMode``'s per-module breakdown
    (keyed ``<root type>.<child name>``); the result is what running each child under its own counter
    gives, at a fraction of the cost.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            shapes[name] = tuple(output.shape[1:])

        return hook

    children = list(net.named_children())
    counter = FlopCounterMode(display=False)
    _one_image(net, input_shape, {layer: record(name) for name, layer in children}, counter)
    counts = counter.get_flop_counts()
    root = type(net).__name__
    flops = {name: int(sum(counts.get(f"{root}.{name}", {}).values())) for name, _ in children}
    if sum(flops.values()) != counter.get_total_flops():  # a torch whose breakdown names modules otherwise
        flops = {name: count_flops(layer, _input_of(net, name, input_shape)) for name, layer in children}
    return [LayerRow(name, type(layer).__name__, shapes[name], count_params(layer), flops[name]) for name, layer in children]


def _input_of(net: nn.Sequential, name: str, input_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The shape (one image, no batch) that reaches child ``name`` of ``net``."""
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for child_name, layer in net.named_children():
            if child_name == name:
                return tuple(x.shape[1:])
            x = layer(x)
    raise KeyError(name)


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


def measure_latency(
    net: nn.Module, input_shape: tuple[int, int, int], batch: int, device: torch.device | str = "cpu", min_time_s: float = 0.1
) -> float:
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
