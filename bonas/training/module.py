"""Training: a thin LightningModule around a built network, the recipe it trains with, and the Trainer.

The recipe (bonas.config.TrainingConfig): label smoothing, a cosine or one-cycle schedule with linear
warm-up, optional EMA weight averaging (Lightning's EMAWeightAveraging callback), channels_last and bf16
autocast on CUDA. A module's checkpoint (Lightning's own format) carries everything a resumed trial needs
to go on exactly where it stopped: weights, optimizer, schedule, EMA weights, the batch order's generator,
torch's RNG and the per-epoch history.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from bonas.core.spec import TrainSpec
from bonas.data.augment import Preprocess
from bonas.training import device
from bonas.training.recipe import OPTIMIZERS, SCHEDULES, Recipe

VAL_ACC = "val_acc"  # the metric logged each epoch, watched by the pruning callback, the trial's value
VAL_LOSS = "val_loss"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial diverged."""


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
        self.channels_last = False  # set in setup(), once the device is known
        self._loss_sum = torch.zeros(())
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = 0
        self._val_loss = torch.zeros(())
        self.history: list[float] = []  # val_acc per epoch
        self.loss_history: list[float] = []  # val_loss per epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def setup(self, stage: str) -> None:
        self.channels_last = self.recipe.channels_last and device.current().channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        x = self.preprocess(x, augment=self.trainer.training and self.spec.augment)
        if self.channels_last:
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
        opt = OPTIMIZERS[s.optimizer](self.net.parameters(), s.lr, s.weight_decay)
        schedule = SCHEDULES[r.schedule]
        if schedule is None:
            return opt
        if self.progress is not None:  # the lr reaches its end exactly at the deadline, however many epochs that is
            warmup = 0.05 if r.warmup_epochs else 0.0
            multiplier = lambda _: schedule(self.progress(), warmup)  # noqa: E731
        else:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            warmup = min(1.0, r.warmup_epochs / max(1, self.max_epochs))
            multiplier = lambda step: schedule(step / total, warmup)  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(
    max_epochs: int, callbacks: list, precision: str = "auto", verbose: bool = False, recipe: Recipe | None = None, **kwargs
) -> pl.Trainer:
    """The Trainer of a trial: one device, no checkpoints or loggers (Optuna's storage is the log)."""
    here = device.current()
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=here.accelerator,
        devices=1,
        precision=here.precision(precision),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=verbose,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*(recipe or Recipe()).callbacks(), *callbacks],
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
