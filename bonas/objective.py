"""One trial: space -> specs -> a fresh network -> Lightning training with pruning -> recorded results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from lightning.pytorch.callbacks import Callback
from optuna_integration import PyTorchLightningPruningCallback

from bonas.config import StudyConfig
from bonas.data import Batches, Preprocess, Splits
from bonas.model import LayerRow, build_model, count_params, summarize
from bonas.space import suggest_arch, suggest_training
from bonas.spec import ArchSpec, TrainSpec
from bonas.train import VAL_ACC, Classifier, make_trainer

# User attrs every trial carries (shown by optuna-dashboard, read by `bonas trials` and reports).
ATTR_ARCH = "arch"  # the ArchSpec as a dict
ATTR_ARCH_LINE = "arch_line"  # the ArchSpec in one line
ATTR_TRAIN = "train"  # the TrainSpec as a dict
ATTR_PARAMS = "params"
ATTR_FLOPS = "flops"  # forward FLOPs per image
ATTR_EPOCHS = "epochs"  # epochs actually trained (fewer when pruned)
ATTR_SECONDS = "train_seconds"  # wall time of Trainer.fit
ATTR_SEED = "seed"  # torch seed of the weights and batch order
ATTR_REASON = "end_reason"  # why a trial did not complete: pruned at epoch k, nan loss, OOM, ...


def trial_seed(study_seed: int, trial_number: int) -> int:
    return (study_seed * 1_000_003 + trial_number) % (2**31)


class TrialGuard(Callback):
    """Stops training when the trial was failed behind our back (a stalled worker reaped by a peer)."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        state = self.trial.study._storage.get_trial(self.trial._trial_id).state
        if state != optuna.trial.TrialState.RUNNING:
            raise TrialAbandoned(f"trial {self.trial.number} is {state.name} in the storage (a peer failed it)")


class TrialAbandoned(RuntimeError):
    """The storage no longer lists this trial as RUNNING: drop it without telling anything."""


@dataclass
class Prepared:
    arch: ArchSpec
    train: TrainSpec
    net: torch.nn.Module
    params: int
    flops: int
    seed: int
    rows: list[LayerRow]  # per layer: output shape, params, FLOPs (for notes and `bonas show`)


class Objective:
    """Callable on an Optuna trial; holds the data (loaded once per worker) and the config."""

    def __init__(self, config: StudyConfig, splits: Splits, verbose: bool = False):
        self.config = config
        self.splits = splits
        self.verbose = verbose
        self.last: Prepared | None = None  # the last trial's specs and network, for notes and artifacts
        self.last_module: Classifier | None = None

    def prepare(self, trial: optuna.trial.BaseTrial, number: int) -> Prepared:
        s = self.splits
        arch = suggest_arch(trial, self.config.space, s.input_shape)
        train = suggest_training(trial, self.config.training, self.config.data)
        seed = trial_seed(self.config.seed, number)
        torch.manual_seed(seed)
        net = build_model(arch, s.input_shape, s.n_classes)
        rows = summarize(net, s.input_shape)
        return Prepared(arch, train, net, count_params(net), sum(r.flops for r in rows), seed, rows)

    def record(self, trial: optuna.Trial, p: Prepared) -> None:
        attrs: dict[str, Any] = {
            ATTR_ARCH: p.arch.to_dict(),
            ATTR_ARCH_LINE: p.arch.describe(),
            ATTR_TRAIN: p.train.to_dict(),
            ATTR_PARAMS: p.params,
            ATTR_FLOPS: p.flops,
            ATTR_SEED: p.seed,
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def fit(self, trial: optuna.Trial | None, p: Prepared, callbacks: list | None = None) -> Classifier:
        """Train ``p.net`` for max_epochs (pruned early through ``trial`` when given)."""
        s, t = self.splits, self.config.training
        module = Classifier(p.net, p.train, Preprocess(s.mean, s.std, s.crop_pad, s.flip), t.max_epochs, t.schedule)
        callbacks = list(callbacks or [])
        if trial is not None:
            callbacks += [TrialGuard(trial), PyTorchLightningPruningCallback(trial, monitor=VAL_ACC)]
        trainer = make_trainer(t.max_epochs, callbacks, t.precision, self.verbose)
        train_batches = Batches(s.train_x, s.train_y, p.train.batch_size, shuffle=True, seed=p.seed)
        val_batches = Batches(s.val_x, s.val_y, t.eval_batch_size, shuffle=False)
        start = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches)
        finally:
            if trial is not None:
                trial.set_user_attr(ATTR_EPOCHS, len(module.history))
                trial.set_user_attr(ATTR_SECONDS, round(time.perf_counter() - start, 3))
        return module

    def __call__(self, trial: optuna.Trial) -> float:
        self.last = self.last_module = None
        p = self.last = self.prepare(trial, trial.number)
        self.record(trial, p)
        module = self.last_module = self.fit(trial, p)
        return module.history[-1]
