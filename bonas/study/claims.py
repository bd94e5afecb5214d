"""Claiming trials, and what happens to a trial whose worker is gone: the whole claim path, under the study
lock, each step in one transaction of the lock.

A worker claims a trial (a promotion of a paused ASHA trial first, else a new or queued one while the budget
has room), already RUNNING with its first heartbeat; a :class:`Heartbeat` thread keeps it alive; a trial
interrupted or out of time is failed and its params requeued in one step; a trial whose worker went silent
past the grace period is reaped (failed and requeued) by a peer. No worker ever starts a trial past the
budget, queued (WAITING) trials included: those beyond the budget stay queued. No torch here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bonas.core import records as R
from bonas.study import promotion
from bonas.study.budget import BudgetStatus, Spent, Verdict, budget_status
from bonas.study.lock import StudyLock
from bonas.study.storage import BonasStorage, storage_of, study_id, trial_id

log = logging.getLogger(__name__)


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


def failed_by_peer(frozen: FrozenTrial) -> str:
    """What a worker says of its trial when a peer failed it meanwhile (it was stalled, or cut off)."""
    why = R.TrialRecord.of(frozen).reason or "no reason recorded"
    return f"a peer failed trial {frozen.number} while this worker was away ({why}); its params were requeued"


class Heartbeat:
    """Records a trial's heartbeat every interval; survives database outages (logs, keeps trying)."""

    def __init__(self, storage: BonasStorage, tid: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, tid, interval
        self.beats = 0  # heartbeats written
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{tid}", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
                self.beats += 1
            except Exception as err:  # the storage already retried for minutes: keep the thread alive
                log.warning("heartbeat of trial id %s failed: %s", self.trial_id, type(err).__name__)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
