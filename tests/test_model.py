"""ArchSpec -> network: block kinds, compatibility with specs stored before them, the one-pass summary,
and every kind through channels_last and the three export formats."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bonas.core.spec import ArchSpec, BlockSpec
from bonas.model.blocks import ResidualBlock, SeparableConv2d
from bonas.model.build import LayerRow, build_model, count_flops, count_params, summarize, widest_activation
from bonas.model.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from bonas.model.export import export

# A spec as stored before block kinds existed, and the layers and state_dict its network had then
# (printed by the builder of commit 3ed2a3d): checkpoints and stored trials rely on both.
OLD_DICT = {
    "blocks": [
        {"convs": 2, "width": 8, "kernel": 3, "pool": "max", "batch_norm": True, "dropout": 0.1},
        {"convs": 1, "width": 16, "kernel": 5, "pool": "none", "batch_norm": False, "dropout": 0.0},
    ],
    "head": "flatten",
    "dense": [12],
    "dense_dropout": 0.2,
}
OLD_LAYERS = [
    "b0_conv0",
    "b0_bn0",
    "b0_relu0",
    "b0_conv1",
    "b0_bn1",
    "b0_relu1",
    "b0_maxpool",
    "b0_dropout",
    "b1_conv0",
    "b1_relu0",
    "flatten",
    "fc0",
    "fc0_relu",
    "fc0_dropout",
    "classifier",
]
BN8 = {"weight": (8,), "bias": (8,), "running_mean": (8,), "running_var": (8,), "num_batches_tracked": ()}
OLD_STATE = {
    "b0_conv0.weight": (8, 1, 3, 3),
    **{f"b0_bn0.{k}": v for k, v in BN8.items()},
    "b0_conv1.weight": (8, 8, 3, 3),
    **{f"b0_bn1.{k}": v for k, v in BN8.items()},
    "b1_conv0.weight": (16, 8, 5, 5),
    "b1_conv0.bias": (16,),
    "fc0.weight": (12, 256),
    "fc0.bias": (12,),
    "classifier.weight": (10, 12),
    "classifier.bias": (10,),
}


def arch(*blocks: tuple, head: str = "gap", dense: tuple[int, ...] = ()) -> ArchSpec:
    """Blocks as (kind, convs, width, kernel, pool, batch_norm[, dropout])."""
    specs = tuple(
        BlockSpec(convs=c, width=w, kernel=k, pool=p, batch_norm=bn, dropout=rest[0] if rest else 0.0, kind=kind)
        for kind, c, w, k, p, bn, *rest in blocks
    )
    return ArchSpec(blocks=specs, head=head, dense=dense, dense_dropout=0.0)


NETS = {  # name: (spec, input shape)
    "plain": (arch(("plain", 2, 16, 3, "max", True), ("plain", 1, 32, 5, "avg", False, 0.2)), (1, 16, 16)),
    "residual": (
        arch(("residual", 2, 16, 3, "max", True), ("residual", 2, 16, 3, "none", True), ("residual", 1, 24, 5, "avg", False)),
        (3, 16, 16),
    ),
    "separable": (
        arch(("separable", 2, 16, 3, "max", True), ("separable", 1, 32, 5, "none", False), head="flatten", dense=(20,)),
        (1, 12, 12),
    ),
    "mixed": (
        arch(
            ("plain", 1, 8, 3, "max", False),
            ("residual", 2, 16, 3, "max", True),
            ("separable", 2, 16, 5, "none", True, 0.1),
            head="flatten",
            dense=(16, 8),
        ),
        (1, 16, 16),
    ),
}


def test_a_spec_stored_before_block_kinds_rebuilds_the_same_network():
    spec = ArchSpec.from_dict(OLD_DICT)
    assert all(b.kind == "plain" for b in spec.blocks)
    assert spec.to_dict() == OLD_DICT, "a plain spec is stored exactly as before (same JSON, same trial keys)"
    assert spec.describe() == "c8k3x2+bn/max/d0.1 | c16k5 | flatten | fc12/d0.2"
    net = build_model(spec, (1, 8, 8), 10)
    assert [name for name, _ in net.named_children()] == OLD_LAYERS
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == OLD_STATE
    assert ArchSpec.from_json(ArchSpec.from_dict({**OLD_DICT}).to_json()) == spec


def test_block_kinds_are_described_and_stored():
    spec = arch(("residual", 2, 32, 3, "max", True), ("separable", 1, 64, 5, "avg", False), ("plain", 1, 8, 3, "none", False))
    assert spec.describe() == "r32k3x2+bn/max | s64k5/avg | c8k3 | gap"
    d = json.loads(spec.to_json())
    assert [b.get("kind") for b in d["blocks"]] == ["residual", "separable", None]
    assert ArchSpec.from_dict(d) == spec
    unknown = ArchSpec.from_dict({**OLD_DICT, "blocks": [{**OLD_DICT["blocks"][0], "kind": "dense"}]})
    with pytest.raises(ValueError, match="block 0: unknown block type 'dense'; registered: plain, residual, separable"):
        build_model(unknown, (1, 8, 8), 10)


def test_residual_block_adds_a_shortcut_before_its_last_relu():
    torch.manual_seed(0)
    same = ResidualBlock(8, 8, 3, convs=2, batch_norm=False)
    assert isinstance(same.shortcut, torch.nn.Identity)
    x = torch.randn(2, 8, 6, 6)
    body = same.body.conv1(torch.relu(same.body.conv0(x)))
    assert torch.allclose(same(x.clone()), torch.relu(body + x), atol=1e-6)
    wider = ResidualBlock(8, 16, 3, convs=1, batch_norm=True).eval()
    assert torch.allclose(wider(x), torch.relu(wider.body(x) + wider.shortcut.bn(wider.shortcut.conv(x))), atol=1e-6)
    # parameters by hand: 3x3 conv 8->16 (no bias, BN follows) + BN, 1x1 projection 8->16 + BN
    assert count_params(wider) == 16 * 8 * 9 + 2 * 16 + 16 * 8 + 2 * 16


def test_separable_conv_is_depthwise_then_pointwise():
    conv = SeparableConv2d(8, 16, 5, bias=True)
    assert conv.depthwise.groups == 8 and conv.depthwise.kernel_size == (5, 5) and conv.pointwise.kernel_size == (1, 1)
    assert count_params(conv) == 8 * 25 + 16 * 8 + 16
    net = build_model(arch(("separable", 2, 16, 3, "max", True)), (1, 8, 8), 10)
    names = [name for name, _ in net.named_children()]
    assert names[:6] == ["b0_sep0", "b0_bn0", "b0_relu0", "b0_sep1", "b0_bn1", "b0_relu1"]
    # FLOPs: depthwise 1x(3x3) then pointwise 1->16, then depthwise 16x(3x3), pointwise 16->16, all on 8x8
    convs = 2 * 64 * (1 * 9 + 1 * 16 + 16 * 9 + 16 * 16)
    assert count_flops(net, (1, 8, 8)) == convs + 2 * 16 * 10


def per_layer_summary(net: torch.nn.Sequential, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """The method summarize replaced: every child run under its own FlopCounterMode."""
    rows = []
    x = torch.zeros(1, *input_shape)
    net.eval()
    with torch.no_grad():
        for name, layer in net.named_children():
            with FlopCounterMode(display=False) as counter:
                x = layer(x)
            rows.append(
                LayerRow(name, type(layer).__name__, tuple(x.shape[1:]), count_params(layer), int(counter.get_total_flops()))
            )
    return rows


@pytest.mark.parametrize("name", list(NETS))
def test_summary_in_one_pass_equals_the_per_layer_method(name):
    spec, shape = NETS[name]
    net = build_model(spec, shape, 10)
    threads = torch.get_num_threads()
    rows = summarize(net, shape)
    assert net.training and torch.get_num_threads() == threads, "mode and thread count restored"
    assert rows == per_layer_summary(net, shape)
    assert sum(r.flops for r in rows) == count_flops(net, shape) > 0
    assert sum(r.params for r in rows) == count_params(net)
    assert all(r.flops > 0 for r in rows if r.kind in ("Conv2d", "SeparableConv2d", "ResidualBlock", "Linear"))


def test_evaluation_batches_shrink_with_the_widest_layer():
    """A 96-wide conv at full resolution on 32-px images: 98 304 floats per image, so a batch of 341 fills the
    evaluation's 32 M floats where 1024 would have held 400 MB per layer; a small net keeps the batch it asked."""
    from types import SimpleNamespace

    from bonas.data.splits import EVAL_BATCH_FLOATS, Splits

    wide = ArchSpec(blocks=(BlockSpec(1, 96, 3, "max", True, 0.0),), head="gap", dense=(), dense_dropout=0.0)
    net = build_model(wide, (3, 32, 32), 10)
    assert net.training
    assert widest_activation(net, (3, 32, 32)) == 96 * 32 * 32 and net.training, "mode restored"
    assert not any(m._forward_hooks for m in net.modules()), "no hook left behind"
    assert widest_activation(build_model(NETS["mixed"][0], NETS["mixed"][1], 10), NETS["mixed"][1]) > 0
    splits = SimpleNamespace()
    assert Splits.eval_batch(splits, 1024, 96 * 32 * 32) == EVAL_BATCH_FLOATS // (96 * 32 * 32) == 341
    assert Splits.eval_batch(splits, 1024, 16 * 8 * 8) == 1024
    assert Splits.eval_batch(splits, 1024, 10**9) == 1


def test_layer_rows_are_plain_json():
    spec, shape = NETS["mixed"]
    rows = summarize(build_model(spec, shape, 10), shape)
    stored = json.loads(json.dumps([r.to_list() for r in rows]))
    assert stored[0] == ["b0_conv0", "Conv2d", [8, 16, 16], 80, 2 * 8 * 9 * 16 * 16]  # bias adds not counted
    assert [LayerRow.from_list(r) for r in stored] == rows


@pytest.mark.parametrize("name", list(NETS))
def test_every_kind_trains_in_channels_last(name):
    spec, shape = NETS[name]
    torch.manual_seed(0)
    net = build_model(spec, shape, 10).eval()
    x = torch.randn(4, *shape)
    expected = net(x)
    net = net.to(memory_format=torch.channels_last)
    got = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, got, atol=1e-5)
    net.train()
    torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), torch.arange(4)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_residual_and_separable_checkpoints_export(tmp_path, fmt):
    spec = arch(
        ("residual", 2, 8, 3, "max", True),
        ("separable", 1, 16, 3, "max", True),
        ("residual", 1, 12, 3, "none", False),
        head="flatten",
        dense=(8,),
    )
    shape = (1, 8, 8)
    torch.manual_seed(0)
    net = build_model(spec, shape, 4)
    net(torch.randn(16, *shape))  # train-mode batch: BN running statistics that are not the identity
    ckpt = save_checkpoint(make_checkpoint(net, spec, shape, ["a", "b", "c", "d"], (0.5,), (0.25,)), tmp_path / "net.pt")
    assert load_checkpoint(ckpt)[1]["arch"] == spec.to_dict()
    path, diff = export(ckpt, fmt, tmp_path / f"net.{fmt}")  # reloads it and checks on a batch of 5 (the export saw 2)
    assert path.stat().st_size > 1000 and diff <= 1e-4
