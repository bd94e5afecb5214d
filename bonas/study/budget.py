"""The study's budget, held exactly by every worker together.

What counts: finished trials (COMPLETE + PRUNED) against ``n_trials``, and the study's own clock (the
union of the intervals during which its trials ran, across runs and workers) against ``timeout``.
Claiming a trial, reaping a dead worker's trial and requeueing an interrupted one all happen under the
study lock, each in one step, so no worker ever starts a trial past the budget — queued (WAITING)
trials included: those beyond the budget stay queued.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from bonas.core import records as R
from bonas.study import promotion
from bonas.study.lock import StudyLock
from bonas.study.storage import BonasStorage, storage_of, study_id, trial_id


class Verdict(enum.Enum):
    OPEN = "open"  # a trial may start
    WAIT = "wait"  # running trials fill the budget; one may still die and be retried
    DONE = "done"  # the budget is spent


class Spent(enum.Enum):
    TRIALS = "trials"
    TIME = "time"
    SPACE = "space"  # the sampler keeps proposing finished configurations: the space looks exhausted


EXHAUSTED_AFTER = 25  # proposals in a row that only repeated finished trials: the sampler has nothing new


@dataclass(frozen=True)
class BudgetStatus:
    verdict: Verdict
    finished: int
    running: int
    waiting: int
    elapsed: float  # seconds on the study's clock
    n_trials: int
    timeout: float
    spent: Spent | None = None

    def describe(self) -> str:
        if self.spent == Spent.SPACE:
            return (
                f"the space looks exhausted: the last {EXHAUSTED_AFTER} proposals repeated finished trials "
                f"({self.finished} trials trained)"
            )
        if self.spent == Spent.TIME:
            return f"the study's timeout of {self.timeout:g}s is spent ({self.finished} of {self.n_trials} trials finished)"
        if self.spent == Spent.TRIALS:
            queued = f"; {self.waiting} queued trials beyond the budget stay WAITING" if self.waiting else ""
            return f"{self.finished} of {self.n_trials} trials finished{queued}"
        if self.verdict == Verdict.WAIT:
            return f"{self.running} running trials fill the budget of {self.n_trials}"
        return f"{self.finished} of {self.n_trials} trials finished"


def count_states(trials: Iterable[FrozenTrial]) -> dict[TrialState, int]:
    counts = {s: 0 for s in TrialState}
    for t in trials:
        counts[t.state] += 1
    return counts


def study_elapsed(trials: Iterable[FrozenTrial], now: datetime | None = None) -> float:
    """Seconds during which at least one trial ran: the study's own clock, across runs and workers."""
    now = now or datetime.now()
    spans = sorted(
        (t.datetime_start, t.datetime_complete or now)
        for t in trials
        if t.datetime_start is not None and (t.datetime_complete is not None or t.state == TrialState.RUNNING)
    )
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def budget_status(trials: list[FrozenTrial], n_trials: int, timeout: float) -> BudgetStatus:
    """Whether a new configuration may start. Queued trials do not open the budget: they start only while
    finished + running configurations are fewer than ``n_trials`` (an ASHA promotion is no new one)."""
    c = promotion.count(trials)
    elapsed = study_elapsed(trials) if timeout else 0.0
    status = dict(
        finished=c.finished, running=c.running_all, waiting=c.waiting, elapsed=elapsed, n_trials=n_trials, timeout=timeout
    )
    if timeout and elapsed >= timeout:
        return BudgetStatus(Verdict.DONE, spent=Spent.TIME, **status)
    if c.finished >= n_trials and c.running_all == 0:
        return BudgetStatus(Verdict.DONE, spent=Spent.TRIALS, **status)
    if c.repeats_in_a_row >= EXHAUSTED_AFTER:
        return BudgetStatus(Verdict.DONE, spent=Spent.SPACE, **status)
    if c.finished + c.running >= n_trials:
        return BudgetStatus(Verdict.WAIT, **status)
    return BudgetStatus(Verdict.OPEN, **status)


@dataclass(frozen=True)
class Claim:
    status: BudgetStatus
    trial: optuna.Trial | None = None  # set when status.verdict is OPEN
    reaped: tuple[Failed, ...] = ()  # dead workers' trials failed (and requeued) on the way


def claim_trial(
    study: optuna.Study,
    storage: BonasStorage,
    lock: StudyLock,
    n_trials: int,
    timeout: float,
    reaper: str = "",
    max_retry: int = 0,
    asha: tuple[list[int], int] | None = None,
) -> Claim:
    """Under the study lock, in one step: reap dead workers' trials, take the budget's verdict and claim a
    trial, already RUNNING with its first heartbeat (never seen silent): with ``asha`` = (rungs, eta), a
    promotion of a paused trial first (bonas.study.promotion), else a new or queued trial if the budget is open."""
    with lock():
        reaped = tuple(_reap(study, storage, reaper, max_retry))
        trials = study.get_trials(deepcopy=False)
        status = budget_status(trials, n_trials, timeout)
        trial = None
        if asha is not None and status.spent != Spent.TIME:
            source = promotion.next_promotion(R.records(trials), *asha)
            if source is not None:
                trial = promotion.promote(study, source)
                status = dataclasses.replace(status, verdict=Verdict.OPEN, spent=None)
        if trial is None and status.verdict == Verdict.OPEN:
            trial = study.ask()
        if trial is None:
            return Claim(status, None, reaped)
        storage.record_heartbeat(trial_id(trial))
        return Claim(status, trial, reaped)


# --- failing and requeueing, in one step ------------------------------------------------------------------


def requeue(study: optuna.Study, failed: FrozenTrial, max_retry: int) -> bool:
    """Queue ``failed``'s params again as a WAITING trial that records what it retries (Optuna's
    ``failed_trial`` / ``retry_history`` system attrs), unless it was retried ``max_retry`` times or is
    already queued (a reaper that died half-way). Returns whether a retry is queued."""
    history = [*failed.system_attrs.get(R.SYS_RETRY_HISTORY, []), failed.number]
    if len(history) > max_retry:
        return False
    for t in study.get_trials(deepcopy=False):
        if failed.number in t.system_attrs.get(R.SYS_RETRY_HISTORY, []):
            return True
    system_attrs = {**failed.system_attrs, R.SYS_FAILED_TRIAL: history[0], R.SYS_RETRY_HISTORY: history}
    user_attrs = {k: v for k, v in failed.user_attrs.items() if k not in R.RUN_ATTRS}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
    return True


@dataclass(frozen=True)
class Failed:
    number: int
    reason: str
    requeued: bool  # False when it was retried max_retry times already


def fail_and_requeue(
    study: optuna.Study, lock: StudyLock, trial: optuna.Trial | FrozenTrial, reason: str, max_retry: int
) -> Failed | None:
    """End a RUNNING trial as FAIL with ``reason`` and queue its params again, under the study lock;
    None when it had already ended (a peer failed it first)."""
    with lock():
        return _fail_and_requeue(study, trial_id(trial), reason, max_retry)


def _fail_and_requeue(study: optuna.Study, tid: int, reason: str, max_retry: int) -> Failed | None:
    """The retry is queued before the trial fails: a worker killed in between leaves a RUNNING trial that
    is reaped again (and not queued twice), never a failed trial whose params are lost."""
    storage = storage_of(study)
    if storage.get_trial(tid).state != TrialState.RUNNING:
        return None
    storage.set_trial_user_attr(tid, R.REASON, reason)
    frozen = storage.get_trial(tid)
    requeued = requeue(study, frozen, max_retry)
    storage.set_trial_state_values(tid, TrialState.FAIL)
    return Failed(frozen.number, reason, requeued)


def _reap(study: optuna.Study, storage: BonasStorage, reaper: str, max_retry: int) -> list[Failed]:
    """Fail the trials of dead workers and requeue their params (the caller holds the study lock)."""
    grace = storage.grace_period or 2 * (storage.heartbeat_interval or 1)
    reaped = []
    for stale in storage.stale_trials(study_id(study)):
        silence = (
            f"no heartbeat for {stale.silent_for:.0f}s"
            if stale.had_heartbeat
            else f"no heartbeat at all in {stale.silent_for:.0f}s"
        )
        failed = _fail_and_requeue(
            study, stale.trial_id, f"worker lost: {silence} (grace period {grace}s); reaped by {reaper}", max_retry
        )
        if failed is not None:
            reaped.append(failed)
    return reaped
