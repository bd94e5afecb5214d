"""The limits a config leaves to bonas: ``[objective] max_flops = -1`` (the default) becomes a FLOPs limit that
lets the first trials of a study finish an epoch in about a minute on the device that searches, whatever the data.

Set once, when the study is created, from its training split's size and the machine, and stored on the study
(``bonas:limits``): every worker and every later run applies the same limit (a worker on a faster machine does
not move it). An explicit ``max_flops`` (or 0, no limit) is used as it is.
"""

from __future__ import annotations

import os
from typing import Any

from bonas.config import StudyConfig
from bonas.config.objective import AUTO
from bonas.training.device import Device

EPOCH_SECONDS = 60.0  # what the auto limit allows a first epoch of the training split
# Training throughput (forward + backward, ~3x a forward pass's FLOPs) of the small convolutions searched here:
# bench/overhead.py measured 83 GFLOP/s on 2 CPU cores for its reference network, a small one on one core is
# about half as efficient; small networks leave most of a GPU idle.
CPU_FLOPS_PER_CORE = 20e9
GPU_FLOPS = 2e12
TRAIN_FLOPS_PER_FORWARD = 3


def auto_limits(config: StudyConfig, n_train: int, device: Device) -> dict[str, Any]:
    """What ``bonas:limits`` holds for a new study: the FLOPs limit and how it was reached."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    throughput = GPU_FLOPS if device.name == "cuda" else CPU_FLOPS_PER_CORE * cores
    flops = throughput * EPOCH_SECONDS / (TRAIN_FLOPS_PER_FORWARD * max(1, n_train))
    why = (
        f"auto: an epoch of {n_train} images in about {EPOCH_SECONDS:.0f} s at {throughput / 1e9:.0f} GFLOP/s "
        f"({'one GPU' if device.name == 'cuda' else f'{cores} CPU cores'})"
    )
    return {"max_flops": float(f"{flops:.3g}"), "why": why}


def max_flops(config: StudyConfig, stored: dict[str, Any] | None) -> float:
    """The FLOPs limit trials are held to: the config's, or the study's auto limit (0: none)."""
    if config.objective.max_flops != AUTO:
        return config.objective.max_flops
    return float((stored or {}).get("max_flops", 0.0))
