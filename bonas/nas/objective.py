"""One trial: space -> specs -> a fresh network -> Lightning training with pruning -> an :class:`Outcome`.

Every ordinary way a trial ends is a value, not an exception: completed, pruned at an epoch, diverged
(NaN loss), out of memory, infeasible (over a limit, never trained), reused (an identical trial's result
stands), dropped (a peer failed it while this worker was stalled). Only interruptions (SIGTERM, Ctrl-C)
and bugs leave :meth:`Objective.run` as exceptions; the worker records those.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from lightning.pytorch.callbacks import Callback
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.data.sources import memory_limit
from bonas.data.splits import Splits
from bonas.model.build import LayerRow, build_model, count_params, measure_latency, summarize, widest_activation
from bonas.nas import screen
from bonas.nas.space import suggest_arch, suggest_training
from bonas.study import promotion
from bonas.study.samplers import PRUNERS
from bonas.study.storage import study_id, trial_id
from bonas.training import device
from bonas.training.callbacks import (
    CostAwarePruning,
    Deadline,
    Paused,
    PruningCallback,
    RungPause,
    StateSaver,
    TimeSpent,
    TrialAbandoned,
    TrialDeadline,
    TrialGuard,
)
from bonas.training.module import VAL_ACC, Classifier, NonFiniteLoss, Recipe, make_trainer
from bonas.training.session import stem_on_the_data
from bonas.training.states import ResumePoint, find_resume_point


def trial_seed(study_seed: int, trial_number: int) -> int:
    return (study_seed * 1_000_003 + trial_number) % (2**31)


def spec_key(arch: ArchSpec, train: TrainSpec) -> str:
    return hashlib.sha256((arch.to_json() + train.to_json()).encode()).hexdigest()[:16]


def root_number(trial: FrozenTrial) -> int:
    """The trial a retry repeats (itself when it is no retry): retries keep its seed."""
    return trial.system_attrs.get(R.SYS_FAILED_TRIAL, trial.number)


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
        return {"params": float(self.params), "flops": float(self.flops), "latency": self.latency_ms.get("1", float("nan"))}[
            metric
        ]


@dataclass
class Outcome:
    """What happened to a trial. ``state`` is COMPLETE, PRUNED or FAIL; ``dropped`` means a peer failed it
    while it ran (tell nothing). ``module`` is the trained network when it trained to the end."""

    state: TrialState
    value: float | tuple[float, float] | None
    reason: str
    prepared: Prepared | None = None
    module: Classifier | None = None
    dropped: bool = False
    requeue: bool = False  # end FAIL and queue the params again (interrupted, or stopped by the time budget)

    @property
    def accuracy(self) -> float | None:
        return self.value[0] if isinstance(self.value, tuple) else self.value


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(err)


class Objective:
    """Runs trials for one worker: holds the data (loaded once), the config and where states are kept."""

    def __init__(
        self,
        config: StudyConfig,
        splits: Splits,
        verbose: bool = False,
        states: tuple[FileSystemArtifactStore, Path] | None = None,
        max_flops: float = 0.0,
    ):
        """``max_flops``: the FLOPs limit trials are held to (bonas.nas.limits: the config's, or the study's auto
        limit; 0 = none)."""
        self.config = config
        self.splits = splits
        self.verbose = verbose
        self.states = states if config.workers.checkpoint else None  # (artifact store, its folder)
        self.max_flops = max_flops
        self.device = device.current().name
        o = config.objective
        self.multi = len(o.metrics) > 1
        self.latency_time = o.latency_time_s or (0.05 if ("latency" in o.metrics or o.max_latency_ms) else 0.0)
        pr = config.pruner
        self.rungs = (
            promotion.rungs(pr.min_resource, pr.reduction_factor, config.training.max_epochs) if PRUNERS[pr.name].pauses else []
        )

    def prepare(self, trial: optuna.trial.BaseTrial, seed: int) -> Prepared:
        s = self.splits
        arch = suggest_arch(trial, self.config.space, s.input_shape)
        train = suggest_training(trial, self.config.training, self.config.data)
        torch.manual_seed(seed)
        net = build_model(arch, s.input_shape, s.n_classes)
        rows = summarize(net, s.input_shape)
        latency = {}
        if self.latency_time > 0:
            net.to(self.device)
            latency = {str(b): round(measure_latency(net, s.input_shape, b, self.device, self.latency_time), 4) for b in (1, 64)}
            net.to("cpu")
        return Prepared(
            arch, train, net, count_params(net), sum(r.flops for r in rows), seed, rows, latency, spec_key(arch, train)
        )

    def record(self, trial: optuna.Trial, p: Prepared) -> None:
        attrs: dict[str, Any] = {
            R.ARCH: p.arch.to_dict(),
            R.ARCH_LINE: p.arch.describe(),
            R.TRAIN: p.train.to_dict(),
            R.PARAMS: p.params,
            R.FLOPS: p.flops,
            R.LAYERS: [r.to_list() for r in p.rows],
            R.SEED: p.seed,
            R.KEY: p.key,
        }
        if p.latency_ms:
            attrs[R.LATENCY] = p.latency_ms
        if self.multi:
            attrs[R.COST] = p.cost(self.config.objective.metrics[1])
        for key, value in attrs.items():
            trial.set_user_attr(key, value)

    def values(self, acc: float, p: Prepared) -> float | tuple[float, float]:
        return (acc, p.cost(self.config.objective.metrics[1])) if self.multi else acc

    def broken_limits(self, trial: optuna.Trial, p: Prepared) -> list[str]:
        """Every configured limit goes through Trial.set_constraint (value - limit; <= 0 is feasible), so
        the sampler learns where the feasible region is; the broken ones are returned."""
        o = self.config.objective
        limits = [
            ("params", o.max_params, p.params),
            ("flops", self.max_flops, p.flops),
            ("latency_ms", o.max_latency_ms, p.latency_ms.get("1")),
        ]
        broken = []
        for name, limit, value in limits:
            if limit and value is not None:
                trial.set_constraint(name, value - limit)
                if value > limit:
                    broken.append(f"{name} {value:,.4g} > {limit:,.4g}")
        return broken

    def find_duplicate(self, trial: optuna.Trial, p: Prepared) -> R.TrialRecord | None:
        """A finished, trained trial with the same ArchSpec and TrainSpec (the first one); a paused one is
        no result yet."""
        recs = R.records(trial.study.get_trials(deepcopy=False, states=R.FINISHED))
        return next((r for r in recs if r.key == p.key and r.trained and not r.paused_at), None)

    def reuse(self, trial: optuna.Trial, source: R.TrialRecord, p: Prepared) -> Outcome:
        """Stand in the identical finished trial's result: same state, values, learning curve."""
        trial.set_user_attr(R.REUSED, source.number)
        trial.set_user_attr(R.EPOCHS, 0)
        if source.curve:
            trial.set_user_attr(R.CURVE, list(source.curve))
        if not self.multi:
            for step, v in sorted(source.trial.intermediate_values.items()):
                trial.report(v, step)
        if source.state == TrialState.COMPLETE:
            value = tuple(source.values) if self.multi else source.values[0]
            return Outcome(TrialState.COMPLETE, value, f"reused trial {source.number}: identical specs", p)
        return Outcome(TrialState.PRUNED, None, f"reused trial {source.number} (pruned): identical specs", p)

    def screen(self, trial: optuna.Trial, p: Prepared) -> Outcome | None:
        """[screen]: score the untrained network; below the percentile of earlier trials, stop it here."""
        sc = self.config.screen
        x, y = screen.screen_batch(self.splits, sc.batch_size, self.config.seed)
        value = screen.score(p.net, x, y, sc.proxy)
        verdict = screen.judge(
            value, sc.proxy, R.records(trial.study.get_trials(deepcopy=False)), sc.percentile, sc.n_startup_trials
        )
        trial.set_user_attr(R.SCREEN, {**verdict.to_attr(), "rejected": verdict.rejected})
        if verdict.rejected:
            trial.set_user_attr(R.EPOCHS, 0)
            return Outcome(TrialState.PRUNED, None, verdict.reason(sc.percentile), p)
        return None

    def fit(
        self, trial: optuna.Trial | None, p: Prepared, callbacks: list | None = None, resume: ResumePoint | None = None
    ) -> Classifier:
        """Train ``p.net`` to max_epochs (from ``resume``'s state when given; pruned early through ``trial``)."""
        s, t = self.splits, self.config.training
        recipe = Recipe.of(t)
        module = Classifier(p.net, p.train, s.preprocess(self.config.data.cutout), t.max_epochs, recipe)
        callbacks = list(callbacks or [])
        trainer = make_trainer(t.max_epochs, callbacks, t.precision, self.verbose, recipe)
        start = time.perf_counter()
        try:
            with stem_on_the_data(p.net, s, p.train, self.config.data.cutout, memory_limit(self.config.data)) as data:
                train_batches = data.loader(data.train, p.train.batch_size, shuffle=True, seed=p.seed)
                widest = widest_activation(p.net, data.input_shape)
                val_batches = data.loader(data.val, data.eval_batch(t.eval_batch_size, widest), shuffle=False)
                ckpt = resume.path if resume else None
                trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches, ckpt_path=ckpt)
        finally:
            if trial is not None:
                trial.set_user_attr(R.EPOCHS, len(module.history) - (resume.epochs if resume else 0))
                trial.set_user_attr(R.SECONDS, round(time.perf_counter() - start, 3))
        return module

    def trial_callbacks(self, trial: optuna.Trial, p: Prepared, deadline: TrialDeadline | None) -> list[Callback]:
        """In order: save the state, notice a peer's verdict, report (and prune), pause at a rung, stop at the deadline."""
        callbacks: list[Callback] = []
        if self.states is not None:
            callbacks.append(StateSaver(trial, *self.states))
        callbacks += [TrialGuard(trial), self.pruning_callback(trial, p)]
        if self.rungs:
            callbacks.append(RungPause(trial, self.rungs, self.config.pruner.reduction_factor))
        if deadline is not None:
            callbacks.append(Deadline(deadline))
        return callbacks

    def pruning_callback(self, trial: optuna.Trial, p: Prepared) -> Callback:
        """Optuna's callback in single-objective studies (it only reports under asha, whose pruner is a
        NopPruner); bonas' cost-aware one in multi-objective ones (any pruner but "none" means it there)."""
        if not self.multi:
            return PruningCallback(trial, monitor=VAL_ACC)
        pr = self.config.pruner
        pruner = PRUNERS[pr.name]
        percentile = self.config.objective.prune_percentile if pruner.prunes else None
        warmup = pruner.first_check(pr)
        return CostAwarePruning(trial, p.cost(self.config.objective.metrics[1]), percentile, pr.n_startup_trials, warmup)

    def run(self, trial: optuna.Trial, deadline: TrialDeadline | None = None) -> Outcome:
        """Prepare, check limits, duplicates and the screen, train (or go on from a state); every ordinary
        ending is an Outcome. ``deadline``: when it must stop (callbacks.TrialDeadline)."""
        frozen = trial.storage.get_trial(trial_id(trial))
        with tempfile.TemporaryDirectory(prefix="bonas-resume-") as tmp:
            resume = find_resume_point(trial.study, frozen, self.states[0], Path(tmp)) if self.states else None
            seed = self.resumed_seed(trial, resume) if resume else trial_seed(self.config.seed, root_number(frozen))
            p = self.prepare(trial, seed)
            self.record(trial, p)
            if resume is None:
                early = self.before_training(trial, p)
                if early is not None:
                    return early
            else:
                self.report_history(trial, frozen, resume)
            try:
                module = self.fit(trial, p, self.trial_callbacks(trial, p, deadline), resume)
            except optuna.TrialPruned as err:
                reported = trial.storage.get_trial(trial_id(trial)).intermediate_values
                if not reported:  # multi-objective: bonas' own pruner says why
                    return Outcome(TrialState.PRUNED, None, str(err) or "pruned", p)
                epoch = max(reported)
                return Outcome(TrialState.PRUNED, None, f"pruned at epoch {epoch} (val_acc {reported[epoch]:.4f})", p)
            except Paused as err:
                trial.set_user_attr(R.PAUSED, err.epochs)
                return Outcome(TrialState.PRUNED, None, str(err), p)
            except TimeSpent as err:
                return Outcome(TrialState.FAIL, None, str(err), p, requeue=True)
            except NonFiniteLoss as err:
                return Outcome(TrialState.PRUNED, None, f"diverged: {err}", p)
            except TrialAbandoned as err:
                return Outcome(TrialState.FAIL, None, str(err), p, dropped=True)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
                if not is_out_of_memory(err):
                    raise
                return Outcome(
                    TrialState.FAIL,
                    None,
                    f"out of memory: {str(err).splitlines()[0][:300] if str(err) else type(err).__name__}",
                    p,
                )
        return Outcome(TrialState.COMPLETE, self.values(module.history[-1], p), R.COMPLETED, p, module)

    def before_training(self, trial: optuna.Trial, p: Prepared) -> Outcome | None:
        """A new configuration may end before its first epoch: over a limit, a repeat, screened out."""
        broken = self.broken_limits(trial, p)
        if broken:  # never trained: the worst accuracy, its real cost
            trial.set_user_attr(R.INFEASIBLE, broken)
            trial.set_user_attr(R.EPOCHS, 0)
            return Outcome(TrialState.COMPLETE, self.values(0.0, p), "infeasible: " + "; ".join(broken), p)
        if self.config.workers.reuse_duplicates:
            source = self.find_duplicate(trial, p)
            if source is not None:
                return self.reuse(trial, source, p)
        if self.config.screen.proxy != "none":
            return self.screen(trial, p)
        return None

    def resumed_seed(self, trial: optuna.Trial, resume: ResumePoint) -> int:
        """A trial that goes on from another's state keeps that trial's seed."""
        storage = trial.storage
        source = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id(trial.study), resume.source))
        trial.set_user_attr(R.RESUMED_AT, resume.epochs)
        seed = R.TrialRecord.of(source).seed
        return seed if seed is not None else trial_seed(self.config.seed, resume.source)

    def report_history(self, trial: optuna.Trial, frozen: FrozenTrial, resume: ResumePoint) -> None:
        """The epochs the state carries, reported as this trial's (a promotion already holds them)."""
        if self.multi:
            return
        history = torch.load(resume.path, map_location="cpu", weights_only=True).get("bonas", {}).get("history", [])
        for step, value in enumerate(history):
            if step not in frozen.intermediate_values:  # as Lightning logged it: a float32
                trial.report(torch.tensor(value, dtype=torch.float32).item(), step)
