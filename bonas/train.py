"""Training: a thin LightningModule around a built network, and the Trainer every trial uses."""

from __future__ import annotations

import logging
import os
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from bonas.data import Preprocess
from bonas.spec import TrainSpec

VAL_ACC = "val_acc"  # the metric logged each epoch, watched by the pruning callback, the trial's value
VAL_LOSS = "val_loss"


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial diverged."""


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, train: TrainSpec, preprocess: Preprocess, max_epochs: int, schedule: str = "cosine"):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "preprocess"])
        self.net = net
        self.preprocess = preprocess
        self.spec = train
        self.schedule = schedule
        self._loss_sum = torch.zeros(())
        self._correct = torch.zeros((), dtype=torch.long)
        self._seen = 0
        self._val_loss = torch.zeros(())
        self.history: list[float] = []  # val_acc per epoch
        self.loss_history: list[float] = []  # val_loss per epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.preprocess(x, augment=self.trainer.training and self.spec.augment), y

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
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

    def configure_optimizers(self):
        s = self.spec
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
        if self.schedule == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(precision: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def make_trainer(max_epochs: int, callbacks: list, precision: str = "auto", verbose: bool = False, **kwargs) -> pl.Trainer:
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
        callbacks=callbacks,
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
