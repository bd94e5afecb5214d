"""Training: a thin LightningModule around a built network, the recipe it trains with, and the Trainer.

The recipe (bonas.config.TrainingConfig): label smoothing, a cosine or one-cycle schedule with linear
warm-up, optional EMA weight averaging (Lightning's EMAWeightAveraging callback), channels_last and bf16
autocast on CUDA. A module's checkpoint (Lightning's own format) carries everything a resumed trial needs
to go on exactly where it stopped: weights, optimizer, schedule, EMA weights, the batch order's generator,
torch's RNG and the per-epoch history.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from bonas.core.spec import TrainSpec
from bonas.data.splits import Preprocess

VAL_ACC = "val_acc"  # the metric logged each epoch, watched by the pruning callback, the trial's value
VAL_LOSS = "val_loss"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial diverged."""


@dataclass(frozen=True)
class Recipe:
    """How every network of a study trains (the config's [training] recipe fields)."""

    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0  # linear warm-up from lr/10 (cosine; onecycle has its own)
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0: off; else EMA of the weights, used for validation and the final model
    channels_last: bool = True  # on CUDA only: faster convolutions with bf16

    @classmethod
    def of(cls, training) -> Recipe:
        return cls(
            training.schedule, training.warmup_epochs, training.label_smoothing, training.ema_decay, training.channels_last
        )


class Classifier(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        train: TrainSpec,
        preprocess: Preprocess,
        max_epochs: int,
        recipe: Recipe | None = None,
        progress: Callable[[], float] | None = None,
    ):
        """``progress``: when given, a training that runs until a deadline, not for a number of epochs: the
        schedule follows it (0 at the start, 1 at the deadline) instead of the steps."""
        super().__init__()
        self.progress = progress
        # plain values only: a checkpoint loads with torch.load(weights_only=True)
        self.save_hyperparameters(
            {"train": train.to_dict(), "max_epochs": max_epochs, "recipe": recipe.__dict__ if recipe else {}}
        )
        self.net = net
        self.preprocess = preprocess
        self.spec = train
        self.recipe = recipe or Recipe()
        self.max_epochs = max_epochs
        self._loss_sum = torch.zeros(())
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = 0
        self._val_loss = torch.zeros(())
        self.history: list[float] = []  # val_acc per epoch
        self.loss_history: list[float] = []  # val_loss per epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        if self.recipe.channels_last and torch.cuda.is_available():
            self.net.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        x = self.preprocess(x, augment=self.trainer.training and self.spec.augment)
        if self.recipe.channels_last and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, label_smoothing=self.recipe.label_smoothing)
        self._loss_sum += loss.detach().float()  # checked once per epoch: no host sync per step
        return loss

    def on_train_epoch_end(self) -> None:
        if not torch.isfinite(self._loss_sum):  # also without a validation loop (retraining)
            raise NonFiniteLoss(f"training loss is {self._loss_sum.item()} at epoch {self.current_epoch}")

    def on_validation_epoch_start(self) -> None:
        if self.trainer.training and not torch.isfinite(self._loss_sum):
            raise NonFiniteLoss(f"training loss is {self._loss_sum.item()} at epoch {self.current_epoch}")
        self._correct = torch.zeros((), dtype=torch.long, device=self.device)
        self._val_loss = torch.zeros((), device=self.device)
        self._seen = 0

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self._correct += (logits.argmax(dim=1) == y).sum()
        self._val_loss += F.cross_entropy(logits.float(), y, reduction="sum")
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        acc = self._correct.item() / max(1, self._seen)
        loss = self._val_loss.item() / max(1, self._seen)
        self.log(VAL_ACC, acc, prog_bar=True)
        self.log(VAL_LOSS, loss)
        self.history.append(acc)
        self.loss_history.append(loss)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bonas"] = {
            "history": list(self.history),
            "loss_history": list(self.loss_history),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("bonas", {})
        self.history, self.loss_history = list(state.get("history", [])), list(state.get("loss_history", []))
        if "rng" in state:
            torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def configure_optimizers(self):
        s, r = self.spec, self.recipe
        params = self.net.parameters()
        if s.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=s.lr, momentum=0.9, nesterov=True, weight_decay=s.weight_decay)
        elif s.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
        elif s.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        elif s.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=s.lr, weight_decay=s.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {s.optimizer!r}")
        if r.schedule == "constant":
            return opt
        if self.progress is not None:  # the lr reaches its end exactly at the deadline, however many epochs that is
            warmup = 0.05 if r.warmup_epochs else 0.0
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: timed_multiplier(r.schedule, self.progress(), warmup))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if r.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=total)
        else:
            warmup = min(total - 1, round(r.warmup_epochs * total / max(1, self.max_epochs)))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def timed_multiplier(schedule: str, progress: float, warmup: float) -> float:
    """The lr multiplier at ``progress`` (0..1) of a time-bounded training: cosine (after a linear warm-up from
    0.1 over the first ``warmup`` share), or one-cycle's shape (up from 1/25 over the first 30 %, then down)."""
    p = min(1.0, max(0.0, progress))
    if schedule == "onecycle":
        if p < 0.3:
            return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * p / 0.3)) / 2
        return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * (p - 0.3) / 0.7)) / 2
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    return 0.5 * (1 + math.cos(math.pi * (p - warmup) / max(1e-9, 1 - warmup)))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The lr multiplier: linear from 0.1 to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return 0.1 + 0.9 * step / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def recipe_callbacks(recipe: Recipe) -> list[pl.Callback]:
    if recipe.ema_decay <= 0:
        return []
    from lightning.pytorch.callbacks import EMAWeightAveraging

    return [EMAWeightAveraging(decay=recipe.ema_decay)]


def make_trainer(
    max_epochs: int, callbacks: list, precision: str = "auto", verbose: bool = False, recipe: Recipe | None = None, **kwargs
) -> pl.Trainer:
    """The Trainer of a trial: one device, no checkpoints or loggers (Optuna's storage is the log)."""
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator(),
        devices=1,
        precision=resolve_precision(precision),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=verbose,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*recipe_callbacks(recipe or Recipe()), *callbacks],
        deterministic=False,
        **kwargs,
    )


def quiet_lightning(verbose: bool) -> None:
    """Lightning's per-trial chatter (GPU available..., tips, warnings about workers) off unless -v."""
    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(level)
    # torch.utils.benchmark (latency) imports cpp_extension, which warns about a missing CUDA toolkit
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*number of training batches.*")
    os.environ.setdefault("POSSIBLE_USER_WARNINGS", "off")  # Lightning's own switch for its hints


def set_threads(n_workers: int = 1) -> int:
    """Split the machine's cores between local workers (or $BONAS_THREADS each, set by --threads);
    returns torch's intra-op thread count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = int(os.environ.get("BONAS_THREADS") or 0) or max(1, cores // max(1, n_workers))
    torch.set_num_threads(threads)
    return threads
