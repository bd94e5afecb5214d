"""One worker's loop: claim a trial under the study lock, run it with a heartbeat, tell its outcome.

A worker repeats: under the study lock, reap dead workers' trials (failed and requeued in one step) and
claim a trial within the budget (bonas.study.budget); run it with a heartbeat; record the outcome, its note and
its artifacts; tell it. Trials that end on their own terms are recorded, never fatal (see
bonas.objective.Outcome). SIGTERM / Ctrl-C end the running trial as FAIL, requeue its params and stop the
worker; a trial failed by a peer while this worker was stalled is dropped.
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.core.errors import BonasError, StorageError
from bonas.data.splits import Splits, load_splits
from bonas.nas.keeper import Keeper
from bonas.nas.limits import auto_limits, max_flops
from bonas.nas.objective import Objective, Outcome
from bonas.nas.priors import priors
from bonas.results.notes import note_markdown, study_note, write_note
from bonas.study.budget import BudgetStatus, Verdict
from bonas.study.claims import Heartbeat, claim_trial, fail_and_requeue, failed_by_peer
from bonas.study.lock import StudyLock
from bonas.study.retry import CONNECT_RETRY_S, first_line
from bonas.study.storage import BonasStorage, open_storage, storage_of, trial_id
from bonas.study.studies import create_or_resume, stored_config
from bonas.study.urls import mask_url
from bonas.training import device
from bonas.training.callbacks import TrialDeadline
from bonas.training.module import quiet_lightning, set_threads

log = logging.getLogger("bonas")

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
WAIT_POLL_S = 2.0  # while running trials fill the budget: how often to look again (and reap the dead)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while a trial was running (BaseException: nothing swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Stop(enum.Enum):
    BUDGET = "budget"  # n_trials finished or the timeout spent: success
    DEADLINE = "deadline"  # this run's own time is up (bonas run's search share): success
    FAILURES = "failures"  # budget.max_failures trials failed in a row: the setup is broken
    INTERRUPTED = "interrupted"  # SIGTERM or SIGINT


@dataclass
class RunSummary:
    finished: int = 0  # trials this run finished (COMPLETE + PRUNED)
    failed: int = 0
    dropped: int = 0  # trials a peer failed while this worker was stalled
    reaped: int = 0  # dead workers' trials this worker failed and requeued
    stop: Stop = Stop.BUDGET
    signum: int | None = None  # the signal that stopped the run
    budget: BudgetStatus | None = None  # the budget's last verdict
    failures_in_a_row: int = 0
    log: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.stop == Stop.INTERRUPTED:
            return f"interrupted by {signal.Signals(self.signum).name}" if self.signum else "interrupted"
        if self.stop == Stop.FAILURES:
            return f"stopped: {self.failures_in_a_row} trials failed in a row (budget.max_failures); see their end_reason"
        if self.stop == Stop.DEADLINE:
            return "done: this run's search time is spent"
        return f"done: {self.budget.describe()}" if self.budget else "done"


def exit_code(summary: RunSummary) -> int:
    """The one place a run's ending becomes a process exit code."""
    if summary.stop == Stop.INTERRUPTED:
        return EXIT_INTERRUPTED.get(summary.signum, 1)
    return 1 if summary.stop == Stop.FAILURES else 0


# --- heartbeat and signals ---------------------------------------------------------------------------


class SignalGuard:
    """SIGTERM/SIGINT: raise Interrupted inside a trial; otherwise stop at the next step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_trial = False
        self.wake = threading.Event()
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        self.wake.set()
        if self.in_trial and first:
            self.in_trial = False
            raise Interrupted(signum)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# --- one worker ----------------------------------------------------------------------------------------


def release_memory() -> None:
    """After an OOM or a failure: free what the dead trial held. Not after every trial: a full
    collection costs ~0.25 s here (bench/overhead.py), more than all storage writes of a trial."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker_name(index: int) -> str:
    return f"{os.uname().nodename}:{os.getpid()}:w{index}"


def open_study(
    config: StudyConfig, url: str, data_info: dict[str, Any], seed: int | None = None
) -> tuple[StudyLock, BonasStorage, optuna.Study]:
    """The study lock, storage and study; created under the lock, so N processes starting at once on an
    empty database (schema, study, warm start) never race: one creates, the others load."""
    from sqlalchemy.exc import SQLAlchemyError

    lock = StudyLock(url, config.name)
    try:
        with lock(retry_for=CONNECT_RETRY_S):
            w = config.workers
            storage = open_storage(url, w.heartbeat_interval, w.grace_period)
            limits = auto_limits(config, data_info["n_train"], device.current())
            designs = priors(config, tuple(data_info["input_shape"]), max_flops(config, limits))
            study = create_or_resume(config, storage, url, data_info, seed=seed, limits=limits, priors=designs)
    except SQLAlchemyError as err:
        raise StorageError(f"cannot reach storage {mask_url(url)}: {first_line(err)}") from None
    return lock, storage, study


class Worker:
    def __init__(
        self, config: StudyConfig, url: str, splits: Splits, *, index: int = 0, seed: int | None = None, verbose: bool = False
    ):
        from optuna_dashboard import get_note, save_note

        self.config = config
        self.url = url
        self.index = index
        self.verbose = verbose
        self.lock, self.storage, self.study = open_study(config, url, splits.describe(), seed)
        here = device.current()
        if here.holds_data:  # the whole data set lives on the GPU: batches are slices there
            splits = splits.to(here.name)
        self.keeper = Keeper(config, url)
        self.objective = Objective(
            config,
            splits,
            verbose=verbose,
            states=(self.keeper.store, self.keeper.folder),
            max_flops=max_flops(config, self.study.user_attrs.get(R.STUDY_LIMITS)),
        )
        self.name = worker_name(index)
        if not get_note(self.study):
            save_note(
                self.study,
                study_note(stored_config(self.study) or config.to_dict(), splits.describe(), f"bonas search {config.path}"),
            )

    def claim(self, n_trials: int, timeout: float, summary: RunSummary):
        asha = (self.objective.rungs, self.config.pruner.reduction_factor) if self.objective.rungs else None
        claim = claim_trial(
            self.study, self.storage, self.lock, n_trials, timeout, self.name, self.config.workers.max_retry, asha
        )
        for failed in claim.reaped:
            summary.reaped += 1
            log.warning("trial %d failed: %s%s", failed.number, failed.reason, "; params requeued" if failed.requeued else "")
        summary.budget = claim.status
        return claim

    def run(
        self,
        n_trials: int,
        timeout: float,
        on_trial: Any = None,
        guard: SignalGuard | None = None,
        deadline: TrialDeadline | None = None,
    ) -> RunSummary:
        """Claim and run trials until the budget is spent (or ``deadline.at`` passes)."""
        guard = guard or SignalGuard()
        summary = RunSummary()
        with guard:
            while guard.signum is None:
                if deadline is not None and time.monotonic() >= deadline.at:
                    summary.stop = Stop.DEADLINE
                    break
                claim = self.claim(n_trials, timeout, summary)
                if claim.status.verdict == Verdict.WAIT:  # peers' running trials fill the budget: wait, reap if they die
                    guard.wake.wait(min(WAIT_POLL_S, self.config.workers.heartbeat_interval))
                    continue
                if claim.trial is None:
                    summary.stop = Stop.BUDGET
                    break
                state = self.run_trial(claim.trial, guard, summary, self.trial_deadline(claim.status, deadline))
                if on_trial is not None:
                    on_trial(self.study)
                if state == TrialState.FAIL:
                    summary.failures_in_a_row += 1
                    if summary.failures_in_a_row >= self.config.budget.max_failures:
                        summary.stop = Stop.FAILURES
                        break
                elif state in R.FINISHED:
                    summary.failures_in_a_row = 0
        if guard.signum is not None:
            summary.stop, summary.signum = Stop.INTERRUPTED, guard.signum
        return summary

    @staticmethod
    def trial_deadline(status: BudgetStatus, deadline: TrialDeadline | None) -> TrialDeadline | None:
        """When the running trial must stop: the study's timeout or this run's deadline, whichever comes first
        (at an epoch boundary), and the run's wall if it has one (mid-epoch)."""
        ends = [deadline] if deadline is not None else []
        if status.timeout:  # the study's clock runs at wall speed while this trial runs
            at = time.monotonic() + status.timeout - status.elapsed
            ends.append(TrialDeadline(at, f"the study's timeout of {status.timeout:g}s"))
        if not ends:
            return None
        return min(ends, key=lambda d: d.at)._replace(wall=deadline.wall if deadline is not None else None)

    def run_trial(
        self, trial: optuna.Trial, guard: SignalGuard, summary: RunSummary, deadline: TrialDeadline | None = None
    ) -> TrialState | None:
        """Run and tell one claimed trial; returns its final state (None when dropped, or failed only to be
        requeued: interrupted or out of time)."""
        trial.set_user_attr(R.WORKER, self.name)
        retry_of = (self.storage.get_trial(trial_id(trial)).system_attrs.get(R.SYS_RETRY_HISTORY) or [None])[-1]
        if retry_of is not None:
            trial.set_user_attr(R.RETRY_OF, retry_of)
        with Heartbeat(self.storage, trial_id(trial), self.config.workers.heartbeat_interval):
            outcome = self._execute(trial, guard, deadline)
        if outcome.dropped:
            log.warning("trial %d dropped: %s", trial.number, outcome.reason)
            summary.dropped += 1
            return None
        if outcome.state == TrialState.FAIL:  # drop the failed network before collecting, or its memory stays held
            outcome.prepared = outcome.module = None
            release_memory()
        if outcome.requeue:  # interrupted, or out of time: fail and requeue in one step; the retry goes on from its state
            fail_and_requeue(self.study, self.lock, trial, outcome.reason, self.config.workers.max_retry)
            self._write_note(trial, kept=False)
            summary.failed += 1
            return None  # not a broken setup: no failure in a row
        try:
            trial.set_user_attr(R.REASON, outcome.reason)
            kept = self._keep_artifacts(trial, outcome)
            self.study.tell(trial, outcome.value if outcome.state == TrialState.COMPLETE else None, state=outcome.state)
        except UpdateFinishedTrialError:
            log.warning("trial %d dropped: %s", trial.number, self._failed_by_peer(trial))
            summary.dropped += 1
            return None
        self._write_note(trial, kept)
        self.keeper.prune(self.study)
        if outcome.state in R.FINISHED:
            summary.finished += 1
        else:
            summary.failed += 1
        return outcome.state

    def _execute(self, trial: optuna.Trial, guard: SignalGuard, deadline: TrialDeadline | None) -> Outcome:
        """The objective, with interruptions and unexpected errors turned into outcomes too."""
        try:
            guard.in_trial = guard.signum is None
            if guard.signum is not None:
                raise Interrupted(guard.signum)
            return self.objective.run(trial, deadline)
        except (Interrupted, KeyboardInterrupt, SystemExit) as err:
            # SystemExit: Lightning turns SIGTERM into SIGTERMException and Ctrl-C into sys.exit(1).
            signum = getattr(err, "signum", None) or guard.signum or signal.SIGINT
            guard.signum = guard.signum or signum
            return Outcome(TrialState.FAIL, None, f"interrupted by {signal.Signals(signum).name}", requeue=True)
        except UpdateFinishedTrialError:
            return Outcome(TrialState.FAIL, None, self._failed_by_peer(trial), dropped=True)
        except BonasError as err:
            return Outcome(TrialState.FAIL, None, f"error: {err}")
        except Exception as err:  # a bug or a broken environment: record it, keep the study going
            if self.verbose:
                traceback.print_exc()
            return Outcome(TrialState.FAIL, None, f"error: {type(err).__name__}: {err}")
        finally:
            guard.in_trial = False

    def _failed_by_peer(self, trial: optuna.Trial) -> str:
        return failed_by_peer(self.storage.get_trial(trial_id(trial)))

    def _keep_artifacts(self, trial: optuna.Trial, outcome: Outcome) -> bool:
        """Before tell: the weights, ArchSpec and curve of a trial that enters the top k."""
        if outcome.state != TrialState.COMPLETE or outcome.module is None:
            return False
        try:
            return self.keeper.keep(self.study, trial, outcome.accuracy, outcome.prepared, outcome.module, self.objective.splits)
        except OSError as err:  # a full disk must not cost the trial its result
            log.warning("trial %d: artifacts not saved: %s", trial.number, err)
            return False

    def _write_note(self, trial: optuna.Trial, kept: bool) -> None:
        record = R.TrialRecord.of(storage_of(self.study).get_trial(trial_id(trial)))
        write_note(trial, note_markdown(record, self.config.training.max_epochs, kept))


def prepare_worker(config: StudyConfig, url: str, verbose: bool, n_workers: int = 1) -> Splits:
    set_threads(n_workers)
    quiet_lightning(verbose)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    return load_splits(config.dataset, config.data, config.seed, n_workers)
