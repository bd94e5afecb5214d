"""Where networks train, and the fast paths of that device, decided in one place.

On CUDA: bf16 autocast (where the GPU supports it), channels_last convolutions, and the whole data set held on the
GPU so that batches are index slices there. On a CPU: none of them by default. Every trial and final training asks
:func:`current`; the tests swap in :data:`GPU_PATHS_ON_CPU` to run the GPU's code paths on a CPU (Lightning's
bf16-mixed autocast and channels_last tensors both work there), so a break on the path users train on shows in CI.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Device:
    name: str  # the torch device: "cuda" or "cpu"
    accelerator: str  # Lightning's name for it: "gpu" or "cpu"
    auto_precision: str  # what [training] precision = "auto" means here
    channels_last: bool  # [training] channels_last applies here
    holds_data: bool  # the data set moves here whole: batches are index slices on the device

    def precision(self, asked: str) -> str:
        return self.auto_precision if asked == "auto" else asked


GPU_PATHS_ON_CPU = Device("cpu", "cpu", "bf16-mixed", True, True)


def current() -> Device:
    if torch.cuda.is_available():
        return Device("cuda", "gpu", "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true", True, True)
    return Device("cpu", "cpu", "32-true", False, False)
