"""Checkpoints: a trained network with everything needed to use it, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings and lists: the ArchSpec, the input shape, the
class names, the normalisation statistics, the weights, and where it came from. No pickled classes, so
``torch.load(path, weights_only=True)`` reads it without trusting the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bonas.core.errors import BonasError
from bonas.core.spec import ArchSpec
from bonas.model.build import build_model

FORMAT = "bonas-checkpoint/1"


def make_checkpoint(
    net: nn.Module,
    arch: ArchSpec,
    input_shape: tuple[int, int, int],
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    **info: Any,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "arch": arch.to_dict(),
        "input_shape": list(input_shape),
        "classes": list(classes),
        "mean": list(mean),
        "std": list(std),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "info": info,  # study, trial, params, val/test accuracy, epochs...
    }


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network (eval mode, CPU) and the checkpoint dict; a clear error for anything else."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BonasError(f"{path}: no such checkpoint file") from None
    except Exception as err:
        raise BonasError(f"{path}: not a bonas checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise BonasError(
            f"{path}: not a bonas checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r})"
        )
    arch = ArchSpec.from_dict(ckpt["arch"])
    net = build_model(arch, tuple(ckpt["input_shape"]), len(ckpt["classes"]))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net, ckpt
