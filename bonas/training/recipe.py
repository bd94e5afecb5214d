"""How every network of a study trains: the optimizers and learning-rate schedules a config may name (one
registry each: the config check reads their keys, the training dispatches on them), and the study's recipe.

A schedule is a multiplier of the learning rate as a function of the training's progress (0 at the start, 1 at
its end): by steps for a trial of ``max_epochs``, by the clock for a training that runs until a deadline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bonas.config import StudyConfig, TrainingConfig
from bonas.config.checks import choices, one_of


def _sgd(params: Iterable, lr: float, weight_decay: float):
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)


def _torch_optimizer(name: str) -> Callable:
    def make(params: Iterable, lr: float, weight_decay: float):
        import torch

        return getattr(torch.optim, name)(params, lr=lr, weight_decay=weight_decay)

    return make


# name -> (parameters, lr, weight decay) -> a torch optimizer
OPTIMIZERS: dict[str, Callable] = {
    "sgd": _sgd,  # nesterov momentum 0.9
    "adam": _torch_optimizer("Adam"),
    "adamw": _torch_optimizer("AdamW"),
    "rmsprop": _torch_optimizer("RMSprop"),
}


def cosine(progress: float, warmup: float) -> float:
    """Linear warm-up from 0.1 to 1 over the first ``warmup`` share, then cosine to 0 at the end."""
    p = min(1.0, max(0.0, progress))
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    return 0.5 * (1 + math.cos(math.pi * (p - warmup) / max(1e-9, 1 - warmup)))


def onecycle(progress: float, warmup: float) -> float:
    """One-cycle's learning-rate shape (Smith; torch's OneCycleLR defaults): up from 1/25 over the first 30 %
    (cosine), then down to 1e-4 of the peak. Its own warm-up: ``warmup`` is ignored."""
    p = min(1.0, max(0.0, progress))
    if p < 0.3:
        return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * p / 0.3)) / 2
    return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (p - 0.3) / 0.7)) / 2


# name -> (progress, warm-up share) -> lr multiplier; None: the lr never changes
SCHEDULES: dict[str, Callable[[float, float], float] | None] = {"cosine": cosine, "onecycle": onecycle, "constant": None}


def check(config: StudyConfig) -> None:
    fail = config.fail("training")
    choices(fail, "optimizers", config.training.optimizers, allowed=OPTIMIZERS)
    one_of(fail, "schedule", config.training.schedule, SCHEDULES)


@dataclass(frozen=True)
class Recipe:
    """How every network of a study trains (the config's [training] recipe fields)."""

    schedule: str = "cosine"  # a SCHEDULES key
    warmup_epochs: float = 0.0  # linear warm-up from lr/10 (cosine; onecycle has its own)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: off; else EMA of the weights, used for validation and the final model
    channels_last: bool = True  # on CUDA only: faster convolutions with bf16

    @classmethod
    def of(cls, training: TrainingConfig) -> Recipe:
        return cls(
            training.schedule, training.warmup_epochs, training.label_smoothing, training.ema_decay, training.channels_last
        )

    def callbacks(self) -> list:
        """Lightning callbacks the recipe needs: EMA of the weights when asked."""
        if self.ema_decay <= 0:
            return []
        from lightning.pytorch.callbacks import EMAWeightAveraging

        return [EMAWeightAveraging(decay=self.ema_decay)]
