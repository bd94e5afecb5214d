"""Zero-cost proxies: pure, deterministic, finite for every block kind, and what their definitions say."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bonas.core.spec import ArchSpec, BlockSpec
from bonas.model.build import build_model
from bonas.nas.proxies import PROXIES, naswot, snip, synflow

SHAPE = (1, 12, 12)


def net_of(*blocks: tuple, head: str = "gap", dense: tuple[int, ...] = (), seed: int = 0) -> nn.Sequential:
    """Blocks as (kind, convs, width, pool, batch_norm[, dropout]); kernel 3."""
    specs = tuple(
        BlockSpec(convs=c, width=w, kernel=3, pool=p, batch_norm=bn, dropout=rest[0] if rest else 0.0, kind=kind)
        for kind, c, w, p, bn, *rest in blocks
    )
    torch.manual_seed(seed)
    return build_model(ArchSpec(blocks=specs, head=head, dense=dense, dense_dropout=0.0), SHAPE, 10)


NETS = {
    "plain": lambda: net_of(("plain", 2, 16, "max", True, 0.3), ("plain", 1, 16, "avg", False), head="flatten", dense=(16,)),
    "residual": lambda: net_of(
        ("residual", 2, 8, "max", True), ("residual", 1, 16, "none", False), ("residual", 2, 16, "max", True)
    ),
    "separable": lambda: net_of(("separable", 2, 16, "max", True), ("separable", 1, 8, "none", False, 0.2), dense=(12,)),
}


def batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("kind, mode", [("plain", "eval"), ("residual", "train"), ("separable", "eval"), ("separable", "train")])
def test_every_proxy_is_pure_finite_and_deterministic(kind, mode):
    net = NETS[kind]()
    net.train(mode == "train")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = batch()
    for name, proxy in PROXIES.items():
        score = proxy(net, x, y)
        assert isinstance(score, float) and math.isfinite(score), (name, score)
        assert proxy(net, x, y) == score, f"{name}: same net, same batch, same score"
        assert proxy(NETS[kind](), x, y) == score, f"{name}: same seed, same score"
    state = net.state_dict()
    assert all(torch.equal(before[k], state[k]) for k in before), "weights and BatchNorm statistics untouched"
    assert net.training == (mode == "train") and all(m.training == net.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_naswot_is_the_reference_kernel_and_prefers_a_wider_net():
    net = NETS["residual"]()
    x, y = batch()
    # BayesWatch/nas-without-training: K + K2 from every ReLU's input, numpy slogdet
    ref = copy.deepcopy(net).train()
    k = np.zeros((len(x), len(x)))

    def hook(module, inputs, output):
        c = (inputs[0].detach().flatten(1) > 0).double().numpy()
        k[:] += c @ c.T + (1.0 - c) @ (1.0 - c).T

    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(hook)
    with torch.no_grad():
        ref(x)
    assert naswot(net, x, y) == pytest.approx(np.linalg.slogdet(k)[1], rel=1e-12)

    wide = net_of(("plain", 2, 32, "max", True), ("plain", 2, 32, "none", True))
    degenerate = net_of(("plain", 1, 1, "max", False))
    assert naswot(wide, x, y) > naswot(degenerate, x, y) + 10


def test_synflow_is_the_sum_over_layers_of_a_homogeneous_flow():
    """Without biases, R (the output sum of the |theta| network on ones) is linear in each layer's weights,
    so each layer's sum of |theta dR/dtheta| is R itself: synflow = layers x R. BatchNorm is bypassed."""
    net = net_of(("plain", 2, 8, "max", True), ("separable", 1, 8, "none", True))  # no conv biases under BN
    nn.init.zeros_(net.classifier.bias)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # bypassed: changing BN must not change the score
            nn.init.uniform_(m.weight, 3, 4)
            m.running_var.fill_(100.0)
    flow = copy.deepcopy(net).double()
    for name, m in list(flow.named_children()):
        if isinstance(m, nn.BatchNorm2d):
            setattr(flow, name, nn.Identity())
    with torch.no_grad():
        for p in flow.parameters():
            p.abs_()
        r = flow(torch.ones(1, *SHAPE, dtype=torch.float64)).sum().item()
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    assert layers == 5  # two convs, a depthwise and a pointwise, the classifier
    x, y = batch(4)
    assert synflow(net, x, y) == pytest.approx(layers * r, rel=1e-9)
    assert synflow(net, x * 7, y) == synflow(net, x, y), "data-free: only x's shape matters"


def test_snip_is_the_gradient_of_a_weight_mask():
    """The reference's definition, by torch.func: |dL/dm| for weights W * m at m = 1."""
    net = NETS["separable"]()
    x, y = batch()
    model = copy.deepcopy(net).train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    masks = {n: torch.ones_like(p, requires_grad=True) for n, p in weights.items()}
    params = {**dict(model.named_parameters()), **{n: weights[n].detach() * masks[n] for n in weights}}
    F.cross_entropy(torch.func.functional_call(model, params, (x,)), y).backward()
    assert snip(net, x, y) == pytest.approx(sum(m.grad.abs().sum().item() for m in masks.values()), rel=1e-5)
