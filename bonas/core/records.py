"""The trial record: every attribute a bonas study or trial carries, a typed view of a trial, and the rules
over them (feasible, rankable, best trial, Pareto front), defined once.

The bottom layer: only Optuna's trial types. The leaderboard, reports, notes, artifact keeping and
retraining all read trials through :class:`TrialRecord`, so they never disagree about which trial is
best, and none of them needs the training stack. Studies written by earlier versions read too: every
attribute a trial may lack has a default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

# --- trial user attrs (shown by optuna-dashboard; read here and nowhere else) ------------------------
ARCH = "arch"  # the ArchSpec as a dict
ARCH_LINE = "arch_line"  # the ArchSpec in one line
TRAIN = "train"  # the TrainSpec as a dict
PARAMS = "params"  # parameter count
FLOPS = "flops"  # forward FLOPs per image
LATENCY = "latency_ms"  # {"1": ms, "64": ms}: median inference latency per batch size, training device
LAYERS = "layers"  # per layer [name, type, output shape, params, FLOPs]: the note's table
EPOCHS = "epochs"  # epochs trained in this trial (fewer when pruned, 0 when reused or infeasible)
RESUMED_AT = "resumed_at_epoch"  # epochs a checkpoint carried in: this trial went on from there
SECONDS = "train_seconds"  # wall time of the training
SEED = "seed"  # torch seed of the weights and batch order (a retry keeps the original's)
KEY = "spec_key"  # hash of ArchSpec + TrainSpec: identical proposals share it
COST = "cost"  # the secondary objective's value (multi-objective studies)
CURVE = "val_acc_curve"  # val_acc per epoch (multi-objective studies keep no intermediate values)
REUSED = "reused_from"  # this trial repeated trial N's specs: N's result stands, nothing trained
REASON = "end_reason"  # why the trial ended: completed, pruned at epoch k, diverged, infeasible, ...
INFEASIBLE = "infeasible"  # the constraints it broke, when it was skipped before training
SCREEN = "screen"  # {"proxy": name, "score": s, "threshold": t}: its zero-cost score, when [screen] is on
PAUSED = "paused_at_epoch"  # ASHA: the trial stopped at this rung, its state kept, and may be promoted later
WORKER = "worker"  # which worker (host:pid:wN) ran it
RETRY_OF = "retry_of"  # the number of the failed trial this one repeats
PRIOR = "prior"  # the standard design (bonas.nas.priors) this trial was enqueued as

# Set by Optuna's RetryHeartbeatStaleTrialCallback (and bonas' reaper) on a requeued trial.
SYS_FAILED_TRIAL = "failed_trial"
SYS_RETRY_HISTORY = "retry_history"
SYS_PROMOTED_FROM = "bonas:promoted_from"  # ASHA: this trial goes on from that paused trial's state

# Attributes that describe one run of a trial, not its params: a retry starts without them.
RUN_ATTRS = (EPOCHS, RESUMED_AT, SECONDS, REASON, CURVE, REUSED, INFEASIBLE, SCREEN, PAUSED, WORKER)

# --- study user attrs --------------------------------------------------------------------------------
STUDY_CONFIG = "bonas:config"  # the resolved config (storage URL masked)
STUDY_ENV = "bonas:environment"  # package versions and hardware
STUDY_DATA = "bonas:data"  # the data set's shape, classes, split sizes, normalisation
STUDY_LIMITS = "bonas:limits"  # limits bonas chose for the config (the auto FLOPs limit), set at creation
RETRAIN_PREFIX = "bonas:retrain:"  # + trial number: the retrained model's test results
RUN_PREFIX = "bonas:run:"  # + run number: what a `bonas run` did with its budget

COMPLETED = "completed"  # the reason of a trial that trained to its last epoch
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts against n_trials


@dataclass(frozen=True)
class TrialRecord:
    """What one trial left behind, typed. ``trial`` keeps the FrozenTrial for params and curves."""

    trial: FrozenTrial
    arch: dict[str, Any] | None  # the ArchSpec as stored (ArchSpec.from_dict rebuilds it)
    arch_line: str
    key: str | None  # identical ArchSpec + TrainSpec share it
    train: dict[str, Any]
    params: int | None
    flops: int | None
    latency_ms: dict[str, float]
    layers: tuple[tuple[str, str, tuple[int, ...], int, int], ...]
    epochs: int | None
    resumed_at: int
    seconds: float | None
    seed: int | None
    reason: str
    reused_from: int | None
    infeasible: tuple[str, ...]
    cost: float | None
    curve: tuple[float, ...]
    worker: str
    retry_of: int | None
    paused_at: int  # ASHA: the rung (epochs) it paused at; 0 when it did not pause
    promoted_from: int | None  # ASHA: the paused trial this one goes on from
    screen: dict[str, Any]
    prior: str = ""  # the standard design it was enqueued as, if any

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        return cls(
            trial=t,
            arch=a.get(ARCH),
            arch_line=a.get(ARCH_LINE, ""),
            key=a.get(KEY),
            train=dict(a.get(TRAIN) or {}),
            params=a.get(PARAMS),
            flops=a.get(FLOPS),
            latency_ms=dict(a.get(LATENCY) or {}),
            layers=tuple((str(n), str(k), tuple(s), int(p), int(f)) for n, k, s, p, f in a.get(LAYERS) or ()),
            epochs=a.get(EPOCHS),
            resumed_at=int(a.get(RESUMED_AT) or 0),
            seconds=a.get(SECONDS),
            seed=a.get(SEED),
            reason=a.get(REASON) or (COMPLETED if t.state == TrialState.COMPLETE else ""),
            reused_from=a.get(REUSED),
            infeasible=tuple(a.get(INFEASIBLE) or ()),
            cost=a.get(COST),
            curve=tuple(a.get(CURVE) or ()),
            worker=a.get(WORKER, ""),
            retry_of=a.get(RETRY_OF, t.system_attrs.get(SYS_FAILED_TRIAL)),
            paused_at=int(a.get(PAUSED) or 0),
            promoted_from=t.system_attrs.get(SYS_PROMOTED_FROM),
            screen=dict(a.get(SCREEN) or {}),
            prior=a.get(PRIOR, ""),
        )

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def state(self) -> TrialState:
        return self.trial.state

    @property
    def values(self) -> list[float] | None:
        return self.trial.values

    @property
    def val_acc(self) -> float | None:
        """The validation accuracy: the trial's value, else its last reported or recorded epoch (pruned trials)."""
        t = self.trial
        if t.values:
            return t.values[0]
        if t.intermediate_values:
            return t.intermediate_values[max(t.intermediate_values)]
        return self.curve[-1] if self.curve else None

    @property
    def feasible(self) -> bool:
        """Within every limit of [objective] (Optuna's constraints: <= 0 is feasible)."""
        return not self.infeasible and all(v <= 0 for v in self.trial.constraints.values())

    @property
    def trained(self) -> bool:
        """It measured something of its own: not a reused result, not skipped as infeasible or screened out."""
        return self.reused_from is None and not self.infeasible and not self.screen.get("rejected")

    @property
    def rankable(self) -> bool:
        """A result that may be called best: COMPLETE, feasible and trained."""
        return self.state == TrialState.COMPLETE and self.feasible and self.trained

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def records(trials: Iterable[FrozenTrial]) -> list[TrialRecord]:
    return [TrialRecord.of(t) for t in trials]


def best(recs: Iterable[TrialRecord]) -> TrialRecord | None:
    """The most accurate rankable trial (the first of equals)."""
    candidates = [r for r in recs if r.rankable]
    return max(candidates, key=lambda r: (r.values[0], -r.number)) if candidates else None


def top_k(recs: Iterable[TrialRecord], k: int) -> list[TrialRecord]:
    """The k most accurate rankable trials, best first (ties: the earlier trial first)."""
    return sorted((r for r in recs if r.rankable), key=lambda r: (-r.values[0], r.number))[:k]


def pareto_front(recs: Iterable[TrialRecord], cost: Callable[[TrialRecord], float | None] | None = None) -> list[TrialRecord]:
    """Rankable trials no other beats on both accuracy (up) and cost (down), cheapest first.

    ``cost`` defaults to the second objective of a multi-objective study; reports pass params or FLOPs.
    """
    cost = cost or (lambda r: r.values[1])
    points = [(c, r) for r in recs if r.rankable and (c := cost(r)) is not None]
    front, best_acc = [], float("-inf")
    for _, r in sorted(points, key=lambda p: (p[0], -p[1].values[0], p[1].number)):
        if r.values[0] > best_acc:
            front.append(r)
            best_acc = r.values[0]
    return front


STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3, TrialState.FAIL: 4}


def ranked(recs: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Leaderboard order: rankable trials by accuracy, then reused and infeasible COMPLETE ones, then
    PRUNED by their last accuracy, then running, waiting and failed ones by number."""

    def key(r: TrialRecord):
        order = STATE_ORDER.get(r.state, 5) + (0.5 if r.state == TrialState.COMPLETE and not r.rankable else 0)
        return (order, -(r.val_acc or 0.0), r.number)

    return sorted(recs, key=key)


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
