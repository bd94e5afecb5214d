"""Zero-cost proxies: scores of an untrained network from one batch, to rank architectures before training.

Every proxy is a pure function ``(net, x, y) -> float`` of a network at initialisation, a preprocessed
batch ``x`` (normalised floats, N x C x H x W, on the network's device) and its labels ``y``. It scores a
deep copy, so the network's weights, buffers (BatchNorm running statistics), gradients and train/eval mode
are exactly as they were. Like the reference code, the copy is in training mode (BatchNorm normalises with
the batch's statistics); unlike it, dropout is switched off in the copy, since its noise belongs to no
architecture and would make the score random (the references' networks have no dropout).

- ``naswot``: Mellor et al. 2021, "Neural Architecture Search without Training" (ICML).
- ``synflow``: Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving
  synaptic flow" (NeurIPS), as a NAS proxy in Abdelfattah et al. 2021, "Zero-Cost Proxies for Lightweight
  NAS" (ICLR).
- ``grad_norm``, ``snip``: Abdelfattah et al. 2021 (snip: Lee et al. 2019).

``PROXIES`` maps each name to its function; ``bench/zero_cost.py`` measures how well each ranks trained
accuracy on a study's space.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bonas.config import StudyConfig
from bonas.config.checks import one_of

Proxy = Callable[[nn.Module, torch.Tensor, torch.Tensor], float]


def _scoring_copy(net: nn.Module, keep_batch_norm: bool = True) -> nn.Module:
    """A deep copy in training mode with dropout off and no gradients; with ``keep_batch_norm=False``
    every BatchNorm is replaced by the identity (zero-cost-nas, foresight/pruners/predictive.py: copynet
    with bn=False makes BatchNorm's forward a no-op)."""
    model = copy.deepcopy(net).train()
    model.zero_grad(set_to_none=True)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Dropout):
            module.eval()
        elif not keep_batch_norm and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.Identity())
    return model


def _weighted(model: nn.Module) -> Iterator[nn.Module]:
    """The layers the references score: every Conv2d and Linear (p_utils.get_layer_metric_array)."""
    return (m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def naswot(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """log |det K| of the batch's activation-pattern kernel (higher is better).

    Each ReLU's input, flattened per image, gives a binary code c (unit active or not);
    K[i, j] = sum over ReLUs of the units where images i and j agree, c_i.c_j + (1 - c_i).(1 - c_j)
    (= units - Hamming distance). A network that separates the images of a batch well at initialisation
    has a K close to diagonal and a large log-determinant. -inf when K is singular (two images with the
    same code everywhere).

    Reference: BayesWatch/nas-without-training, score_networks.py (counting_forward_hook on every ReLU,
    K + K2) and scores.py (hooklogdet: numpy slogdet, the log of |det|).
    """
    model = _scoring_copy(net)
    kernel = torch.zeros(len(x), len(x), dtype=torch.float64, device=x.device)

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        codes = (inputs[0].flatten(1) > 0).float()  # an in-place ReLU's input is its output: same signs
        active = codes.sum(1)
        # c_i.c_j + (1 - c_i).(1 - c_j) = units - |c_i| - |c_j| + 2 c_i.c_j: one matmul instead of two;
        # every partial sum is an integer below 2^24, exact in float32.
        agree = codes.shape[1] - active[:, None] - active[None, :] + 2 * (codes @ codes.T)
        kernel.add_(agree.double())

    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.register_forward_hook(count)
    with torch.no_grad():
        model(x)
    return torch.linalg.slogdet(kernel).logabsdet.item()


def synflow(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over conv and linear weights of |theta * dR/dtheta| (higher is better), data-free.

    Every parameter is replaced by its absolute value, BatchNorm is bypassed, the network runs in float64
    on one all-ones image of ``x``'s shape, and R is the sum of its outputs. ``y`` and ``x``'s values are
    not used.

    Reference: SamsungLabs/zero-cost-nas, foresight/pruners/measures/synflow.py (measure 'synflow',
    bn=False: linearize, net.double(), torch.ones input, torch.sum(output).backward(), abs(w * grad)),
    summed over layers as in foresight/pruners/predictive.py (find_measures, sum_arr).
    """
    model = _scoring_copy(net, keep_batch_norm=False).double()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.abs_()
    model(torch.ones(1, *x.shape[1:], dtype=torch.float64, device=x.device)).sum().backward()
    return float(sum((m.weight * m.weight.grad).abs().sum().item() for m in _weighted(model) if m.weight.grad is not None))


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over conv and linear layers of the L2 norm of the cross-entropy's gradient by their weights.

    Reference: SamsungLabs/zero-cost-nas, foresight/pruners/measures/grad_norm.py (bn=True).
    """
    model = _scoring_copy(net)
    F.cross_entropy(model(x), y).backward()
    return float(sum(m.weight.grad.norm().item() for m in _weighted(model) if m.weight.grad is not None))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of |dL/dm| for a mask m = 1 multiplying every conv and linear weight, i.e. sum |W * dL/dW|.

    Reference: SamsungLabs/zero-cost-nas, foresight/pruners/measures/snip.py (weight_mask parameters
    and patched forwards; at m = 1 the mask's gradient is W * dL/dW, computed here without patching).
    """
    model = _scoring_copy(net)
    F.cross_entropy(model(x), y).backward()
    return float(sum((m.weight * m.weight.grad).abs().sum().item() for m in _weighted(model) if m.weight.grad is not None))


PROXIES: dict[str, Proxy] = {"naswot": naswot, "synflow": synflow, "grad_norm": grad_norm, "snip": snip}
NO_SCREEN = "none"  # [screen] proxy: score nothing


def check(config: StudyConfig) -> None:
    one_of(config.fail("screen"), "proxy", config.screen.proxy, (NO_SCREEN, *PROXIES))
