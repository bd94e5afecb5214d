"""One trial: space -> specs -> a fresh network -> Lightning training with pruning -> recorded results."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch
from lightning.pytorch.callbacks import Callback
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from bonas.config import StudyConfig
from bonas.data import Batches, Preprocess, Splits
from bonas.model import LayerRow, build_model, count_params, measure_latency, summarize
from bonas.space import suggest_arch, suggest_training
from bonas.spec import ArchSpec, TrainSpec
from bonas.train import VAL_ACC, Classifier, make_trainer

# User attrs every trial carries (shown by optuna-dashboard, read by `bonas trials` and reports).
ATTR_ARCH = "arch"  # the ArchSpec as a dict
ATTR_ARCH_LINE = "arch_line"  # the ArchSpec in one line
ATTR_TRAIN = "train"  # the TrainSpec as a dict
ATTR_PARAMS = "params"
ATTR_FLOPS = "flops"  # forward FLOPs per image
ATTR_LATENCY = "latency_ms"  # {"1": ms, "64": ms}: median inference latency per batch size, training device
ATTR_EPOCHS = "epochs"  # epochs actually trained (fewer when pruned, 0 when reused or infeasible)
ATTR_SECONDS = "train_seconds"  # wall time of Trainer.fit
ATTR_SEED = "seed"  # torch seed of the weights and batch order
ATTR_KEY = "spec_key"  # hash of ArchSpec + TrainSpec: identical proposals share it
ATTR_COST = "cost"  # the secondary objective's value (multi-objective studies)
ATTR_CURVE = "val_acc_curve"  # val_acc per epoch (multi-objective studies: Optuna keeps no intermediate values)
ATTR_REUSED = "reused_from"  # this trial repeated trial N's specs: N's result was reused, nothing trained
ATTR_REASON = "end_reason"  # why a trial ended: pruned at epoch k, diverged, out of memory, infeasible, ...
ATTR_INFEASIBLE = "infeasible"  # the constraints it broke, when it was skipped before training


def trial_seed(study_seed: int, trial_number: int) -> int:
    return (study_seed * 1_000_003 + trial_number) % (2**31)


def spec_key(arch: ArchSpec, train: TrainSpec) -> str:
    return hashlib.sha256((arch.to_json() + train.to_json()).encode()).hexdigest()[:16]


class Infeasible(Exception):
    """The architecture breaks a constraint known before training: it is never trained."""


class Reused(Exception):
    """An identical finished trial exists: its result stands for this one."""

    def __init__(self, source: optuna.trial.FrozenTrial):
        super().__init__(f"reused trial {source.number}")
        self.source = source


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


class PruningCallback(PyTorchLightningPruningCallback):
    """optuna-integration's callback, except that the last epoch only reports: pruning a trial that has
    trained every epoch saves nothing and would hide a finished result behind PRUNED."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or pl_module.current_epoch < trainer.max_epochs - 1:
            super().on_validation_end(trainer, pl_module)
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and trainer.is_global_zero:
            self._trial.report(score.item(), step=pl_module.current_epoch)


class CostAwarePruning(Callback):
    """Pruning for multi-objective studies, where Optuna refuses ``trial.report`` (its RFC #3450).

    At epoch k a trial is stopped when its validation accuracy is below the ``percentile`` of the epoch-k
    accuracies of finished trials that cost no more than it does (cost: the secondary objective, known
    before training). A trial that could still reach the Pareto front by being cheap is never compared
    with costlier ones, so it is never pruned for being less accurate than they are.
    """

    def __init__(self, trial: optuna.Trial, cost: float, percentile: float | None, n_startup_trials: int, n_warmup_steps: int):
        self.trial, self.cost, self.percentile = trial, cost, percentile
        self.n_startup, self.n_warmup = n_startup_trials, n_warmup_steps

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.history:
            return
        epoch, acc = len(pl_module.history) - 1, pl_module.history[-1]
        self.trial.set_user_attr(ATTR_CURVE, list(pl_module.history))
        if self.percentile is None or epoch < self.n_warmup or epoch >= trainer.max_epochs - 1:
            return  # the last epoch: pruning now would save nothing
        threshold = self.threshold(self.trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)), epoch)
        if threshold is not None and acc < threshold:
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: val_acc {acc:.4f} < {threshold:.4f}, the "
                                     f"{self.percentile:g}th percentile of trials costing <= {self.cost:g}")

    def threshold(self, finished: list[optuna.trial.FrozenTrial], epoch: int) -> float | None:
        peers = [
            t.user_attrs[ATTR_CURVE][epoch]
            for t in finished
            if t.user_attrs.get(ATTR_COST, float("inf")) <= self.cost
            and len(t.user_attrs.get(ATTR_CURVE, [])) > epoch
            and ATTR_REUSED not in t.user_attrs
        ]
        if len(peers) < max(1, self.n_startup):
            return None
        return float(np.percentile(peers, self.percentile))


@dataclass
class Prepared:
    arch: ArchSpec
    train: TrainSpec
    net: torch.nn.Module
    params: int
    flops: int
    seed: int
    rows: list[LayerRow]  # per layer: output shape, params, FLOPs (for notes and `bonas show`)
    latency_ms: dict[str, float]  # batch size -> median ms; empty when not measured
    key: str

    def cost(self, metric: str) -> float:
        return {"params": float(self.params), "flops": float(self.flops), "latency": self.latency_ms.get("1", float("nan"))}[metric]


class Objective:
    """Callable on an Optuna trial; holds the data (loaded once per worker) and the config."""

    def __init__(self, config: StudyConfig, splits: Splits, verbose: bool = False):
        self.config = config
        self.splits = splits
        self.verbose = verbose
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.last: Prepared | None = None  # the last trial's specs and network, for notes and artifacts
        self.last_module: Classifier | None = None
        o = config.objective
        self.multi = len(o.metrics) > 1
        self.latency_time = o.latency_time_s or (0.05 if ("latency" in o.metrics or o.max_latency_ms) else 0.0)

    def prepare(self, trial: optuna.trial.BaseTrial, number: int) -> Prepared:
        s = self.splits
        arch = suggest_arch(trial, self.config.space, s.input_shape)
        train = suggest_training(trial, self.config.training, self.config.data)
        seed = trial_seed(self.config.seed, number)
        torch.manual_seed(seed)
        net = build_model(arch, s.input_shape, s.n_classes)
        rows = summarize(net, s.input_shape)
        latency = {}
        if self.latency_time > 0:
            net.to(self.device)
            latency = {str(b): round(measure_latency(net, s.input_shape, b, self.device, self.latency_time), 4) for b in (1, 64)}
            net.to("cpu")
        return Prepared(arch, train, net, count_params(net), sum(r.flops for r in rows), seed, rows, latency, spec_key(arch, train))

    def record(self, trial: optuna.Trial, p: Prepared) -> None:
        attrs: dict[str, Any] = {
            ATTR_ARCH: p.arch.to_dict(),
            ATTR_ARCH_LINE: p.arch.describe(),
            ATTR_TRAIN: p.train.to_dict(),
            ATTR_PARAMS: p.params,
            ATTR_FLOPS: p.flops,
            ATTR_SEED: p.seed,
            ATTR_KEY: p.key,
        }
        if p.latency_ms:
            attrs[ATTR_LATENCY] = p.latency_ms
        if self.multi:
            attrs[ATTR_COST] = p.cost(self.config.objective.metrics[1])
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def check_constraints(self, trial: optuna.Trial, p: Prepared) -> None:
        """Every configured limit goes through Trial.set_constraint (value - limit; <= 0 is feasible), so
        the sampler learns where the feasible region is; a broken one skips the training."""
        o = self.config.objective
        limits = [("params", o.max_params, p.params), ("flops", o.max_flops, p.flops), ("latency_ms", o.max_latency_ms, p.latency_ms.get("1"))]
        broken = []
        for name, limit, value in limits:
            if limit and value is not None:
                trial.set_constraint(name, value - limit)
                if value > limit:
                    broken.append(f"{name} {value:,.4g} > {limit:,.4g}")
        if broken:
            trial.set_user_attr(ATTR_INFEASIBLE, broken)
            raise Infeasible("infeasible: " + "; ".join(broken))

    def find_duplicate(self, trial: optuna.Trial, p: Prepared) -> optuna.trial.FrozenTrial | None:
        """A finished, trained trial with the same ArchSpec and TrainSpec (the first one)."""
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if t.user_attrs.get(ATTR_KEY) == p.key and ATTR_REUSED not in t.user_attrs and ATTR_INFEASIBLE not in t.user_attrs:
                return t
        return None

    def fit(self, trial: optuna.Trial | None, p: Prepared, callbacks: list | None = None) -> Classifier:
        """Train ``p.net`` for max_epochs (pruned early through ``trial`` when given)."""
        s, t = self.splits, self.config.training
        module = Classifier(p.net, p.train, Preprocess(s.mean, s.std, s.crop_pad, s.flip), t.max_epochs, t.schedule)
        callbacks = list(callbacks or [])
        if trial is not None:
            callbacks += [TrialGuard(trial), self.pruning_callback(trial, p)]
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

    def pruning_callback(self, trial: optuna.Trial, p: Prepared) -> Callback:
        """Optuna's callback in single-objective studies; bonas' cost-aware one in multi-objective ones
        (any pruner but "none" means it there, with n_startup_trials and the warm-up epochs)."""
        if not self.multi:
            return PruningCallback(trial, monitor=VAL_ACC)
        pr = self.config.pruner
        percentile = None if pr.name == "none" else self.config.objective.prune_percentile
        warmup = pr.n_warmup_steps if pr.name == "median" else pr.min_resource - 1
        return CostAwarePruning(trial, p.cost(self.config.objective.metrics[1]), percentile, pr.n_startup_trials, warmup)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.last = self.last_module = None
        p = self.last = self.prepare(trial, trial.number)
        self.record(trial, p)
        self.check_constraints(trial, p)
        if self.config.workers.reuse_duplicates:
            source = self.find_duplicate(trial, p)
            if source is not None:
                raise Reused(source)
        module = self.last_module = self.fit(trial, p)
        acc = module.history[-1]
        return (acc, p.cost(self.config.objective.metrics[1])) if self.multi else acc
