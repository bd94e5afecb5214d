"""Running trials: one worker's loop, and several local workers sharing one study.

A worker repeats: reap stale trials (failed and requeued with their params), claim a trial under a
study-wide lock so that all workers together finish exactly ``n_trials`` (COMPLETE + PRUNED), run
it with a heartbeat, tell the result. Trials that end on their own terms are recorded, never fatal:
pruned, diverged (NaN loss: PRUNED), out of memory (FAIL), failed by a peer while this worker was
stalled (dropped). SIGTERM / Ctrl-C end the running trial as FAIL, requeue its params and exit.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from bonas.artifacts import Keeper
from bonas.config import StudyConfig
from bonas.dashboard import note_markdown, study_note, write_note
from bonas.data import Splits, load_splits
from bonas.errors import BonasError, StorageError, StudyError
from bonas.objective import ATTR_CURVE, ATTR_EPOCHS, ATTR_REASON, ATTR_REUSED, Infeasible, Objective, Reused, TrialAbandoned
from bonas.storage import CONNECT_RETRY_S, RETRY_FOR_S, BonasStorage, retrying
from bonas.study import connect_args, create_or_resume, mask_url, sqlite_path, storage_for, stored_config
from bonas.train import NonFiniteLoss, quiet_lightning, set_threads

log = logging.getLogger("bonas")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ATTR_WORKER = "worker"  # user attr: which worker (host:pid) ran the trial
ATTR_RETRY_OF = "retry_of"  # user attr: the number of the killed trial this one repeats
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while a trial was running (BaseException: nothing swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class RunSummary:
    finished: int = 0  # trials this run finished (COMPLETE + PRUNED)
    failed: int = 0
    dropped: int = 0  # trials a peer failed while this worker was stalled
    reused: int = 0
    interrupted: int | None = None  # the signal that stopped the run
    stop_reason: str = ""
    states: dict[str, int] = field(default_factory=dict)


# --- budget: counting, locking, elapsed time --------------------------------------------------------


class StudyLock:
    """A lock all workers of one study take around creating it and around claiming a trial.

    SQLite: flock on a file beside the database (one machine). PostgreSQL: a session advisory lock.
    MySQL/MariaDB: GET_LOCK. The server or kernel releases it when the holder dies, so a killed worker
    never blocks the others. It has its own connection: it is taken before the study's storage exists.
    """

    def __init__(self, url: str, study_name: str, wait_s: float = 600.0):
        self.url, self.wait_s = url, wait_s
        self.key = int.from_bytes(hashlib.sha256(f"bonas:{study_name}".encode()).digest()[:8], "big", signed=True)
        self.path = sqlite_path(url)
        self.engine = None
        if self.path is None:
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            self.engine = sqlalchemy.create_engine(url, poolclass=NullPool, **connect_args(url))
            self.dialect = self.engine.dialect.name

    @contextlib.contextmanager
    def __call__(self, retry_for: float = RETRY_FOR_S) -> Iterator[None]:
        if self.path is not None:
            with open(f"{self.path}.lock", "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
            return
        with retrying(self._acquire, "study lock", retry_for)() as conn:
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    conn.execute(self._release_sql(), self._params())
                    conn.commit()
                with contextlib.suppress(Exception):
                    conn.close()

    def _params(self) -> dict[str, Any]:
        # MySQL: wait in 20 s slices, below the driver's read timeout
        return {"k": self.key} if self.dialect == "postgresql" else {"k": f"bonas:{self.key:x}", "t": 20}

    def _release_sql(self):
        import sqlalchemy

        return sqlalchemy.text("SELECT pg_advisory_unlock(:k)" if self.dialect == "postgresql" else "SELECT RELEASE_LOCK(:k)")

    def _acquire(self):
        import sqlalchemy

        conn = self.engine.connect()
        try:
            if self.dialect == "postgresql":
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), self._params())
            else:
                deadline = time.monotonic() + self.wait_s
                while conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, :t)"), self._params()).scalar() != 1:
                    if time.monotonic() > deadline:
                        raise StudyError(f"could not take the study lock within {self.wait_s:.0f}s")
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return contextlib.closing(conn)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def count_states(trials: list[optuna.trial.FrozenTrial]) -> dict[TrialState, int]:
    counts = {s: 0 for s in TrialState}
    for t in trials:
        counts[t.state] += 1
    return counts


def study_elapsed(trials: list[optuna.trial.FrozenTrial], now: datetime | None = None) -> float:
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


WAIT = "wait"  # budget_status: running trials fill the budget; one may still die and be retried


def budget_status(study: optuna.Study, n_trials: int, timeout: float) -> str | None:
    """Why no trial may start: 'done: ...', WAIT when running trials fill the budget, or None."""
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
    if finished >= n_trials:
        return f"done: {finished} of {n_trials} trials finished"
    if timeout and study_elapsed(trials) >= timeout:
        return f"done: the study's timeout of {timeout:g}s is spent"
    if counts[TrialState.WAITING] == 0 and finished + counts[TrialState.RUNNING] >= n_trials:
        return WAIT
    return None


def claim_trial(study: optuna.Study, storage: BonasStorage, lock: StudyLock, n_trials: int, timeout: float) -> optuna.Trial | str:
    """A new or requeued trial, WAIT when running trials fill the budget, or 'done: ...'."""
    with lock():
        status = budget_status(study, n_trials, timeout)
        if status is not None:
            return status
        trial = study.ask()
        storage.record_heartbeat(trial._trial_id)  # inside the lock: no silent RUNNING trial
        return trial


# --- heartbeat -------------------------------------------------------------------------------------


class Heartbeat:
    """Records a trial's heartbeat every interval; survives database outages (logs, keeps trying)."""

    def __init__(self, storage: BonasStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as err:  # the storage already retried for minutes: keep the thread alive
                log.warning("heartbeat of trial id %s failed: %s", self.trial_id, type(err).__name__)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


# --- signals ---------------------------------------------------------------------------------------


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


# --- one worker ------------------------------------------------------------------------------------


def release_memory() -> None:
    """After an OOM or a failure: free what the dead trial held. Not after every trial: a full
    collection costs ~0.25 s here (bench/overhead.py), more than all storage writes of a trial."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def worker_name(index: int) -> str:
    return f"{os.uname().nodename}:{os.getpid()}:w{index}"


def open_study(config: StudyConfig, url: str, data_info: dict[str, Any], seed: int | None = None) -> tuple[StudyLock, BonasStorage, optuna.Study]:
    """The study lock, storage and study; created under the lock, so N processes starting at once on an
    empty database (schema, study, warm start) never race: one creates, the others load."""
    from sqlalchemy.exc import SQLAlchemyError

    lock = StudyLock(url, config.name)
    try:
        with lock(retry_for=CONNECT_RETRY_S):
            storage = storage_for(config, url)
            study = create_or_resume(config, storage, url, data_info, seed=seed)
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot reach storage {mask_url(url)}: {mask_url(reason)}") from None
    return lock, storage, study


class Worker:
    def __init__(self, config: StudyConfig, url: str, splits: Splits, *, index: int = 0, seed: int | None = None, verbose: bool = False):
        self.config = config
        self.url = url
        self.index = index
        self.verbose = verbose
        self.lock, self.storage, self.study = open_study(config, url, splits.describe(), seed)
        if torch.cuda.is_available():  # the whole data set lives on the GPU: batches are slices there
            splits = splits.to("cuda")
        self.objective = Objective(config, splits, verbose=verbose)
        self.keeper = Keeper(config, url)
        self.name = worker_name(index)
        if not get_note(self.study):
            save_note(self.study, study_note(stored_config(self.study) or config.to_dict(), splits.describe(), f"bonas search {config.path}"))

    def run(self, n_trials: int, timeout: float, on_trial: Any = None, guard: SignalGuard | None = None) -> RunSummary:
        guard = guard or SignalGuard()
        summary = RunSummary()
        failures_in_a_row = 0
        interval = min(2.0, self.config.workers.heartbeat_interval)
        with guard:
            while guard.signum is None:
                optuna.storages.fail_stale_trials(self.study)
                claimed = claim_trial(self.study, self.storage, self.lock, n_trials, timeout)
                if claimed == WAIT:  # peers' running trials fill the budget: wait, reap if they die
                    guard.wake.wait(interval)
                    continue
                if isinstance(claimed, str):
                    summary.stop_reason = claimed
                    break
                state = self.run_trial(claimed, guard, summary)
                if on_trial is not None:
                    on_trial(self.study)
                if state == TrialState.FAIL:
                    failures_in_a_row += 1
                    if failures_in_a_row >= self.config.budget.max_failures:
                        summary.stop_reason = f"stopped: {failures_in_a_row} trials failed in a row (budget.max_failures); see their end_reason"
                        break
                elif state in FINISHED:
                    failures_in_a_row = 0
        if guard.signum is not None:
            summary.interrupted = guard.signum
            summary.stop_reason = summary.stop_reason or f"interrupted by {signal.Signals(guard.signum).name}"
        return summary

    def run_trial(self, trial: optuna.Trial, guard: SignalGuard, summary: RunSummary) -> TrialState | None:
        """Run and tell one claimed trial; returns its final state (None when dropped)."""
        trial.set_user_attr(ATTR_WORKER, self.name)
        retry_of = self.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
        if retry_of is not None:
            trial.set_user_attr(ATTR_RETRY_OF, retry_of)
        with Heartbeat(self.storage, trial._trial_id, self.config.workers.heartbeat_interval):
            outcome = self._execute(trial, guard)
        if outcome is None:
            summary.dropped += 1
            return None
        state, value, reason = outcome
        if state == TrialState.FAIL:
            release_memory()
        try:
            kept = self._record_outcome(trial, state, value, reason)
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except UpdateFinishedTrialError as err:
            log.warning("trial %d dropped: %s", trial.number, err)
            summary.dropped += 1
            return None
        if kept:
            self.keeper.prune(self.study)
        if state == TrialState.FAIL and reason.startswith("interrupted"):
            requeue(self.study, trial, self.config.workers.max_retry)
        if state in FINISHED:
            summary.finished += 1
        elif state == TrialState.FAIL:
            summary.failed += 1
        return state

    def _execute(self, trial: optuna.Trial, guard: SignalGuard) -> tuple[TrialState, float | None, str] | None:
        """The objective, with every way a trial can end mapped to (state, value, reason); None: dropped."""
        try:
            guard.in_trial = guard.signum is None
            if guard.signum is not None:
                raise Interrupted(guard.signum)
            return TrialState.COMPLETE, self.objective(trial), "completed"
        except Infeasible as err:  # never trained: the worst accuracy, its real cost
            trial.set_user_attr(ATTR_EPOCHS, 0)
            return TrialState.COMPLETE, self._values(0.0, self.objective.last), str(err)
        except Reused as err:
            return self._reuse(trial, err.source)
        except optuna.TrialPruned as err:
            reported = trial.storage.get_trial(trial._trial_id).intermediate_values
            if not reported:  # multi-objective: bonas' own pruner says why
                return TrialState.PRUNED, None, str(err) or "pruned"
            epoch = max(reported)
            return TrialState.PRUNED, None, f"pruned at epoch {epoch} (val_acc {reported[epoch]:.4f})"
        except NonFiniteLoss as err:
            return TrialState.PRUNED, None, f"diverged: {err}"
        except torch.cuda.OutOfMemoryError as err:
            return TrialState.FAIL, None, f"out of memory: {str(err).splitlines()[0] if str(err) else 'CUDA OOM'}"
        except (TrialAbandoned, UpdateFinishedTrialError) as err:
            log.warning("trial %d dropped: %s", trial.number, err)
            return None
        except (Interrupted, KeyboardInterrupt, SystemExit) as err:
            # SystemExit: Lightning turns SIGTERM into SIGTERMException and Ctrl-C into sys.exit(1).
            signum = getattr(err, "signum", None) or guard.signum or signal.SIGINT
            guard.signum = guard.signum or signum
            return TrialState.FAIL, None, f"interrupted by {signal.Signals(signum).name}"
        except BonasError as err:
            return TrialState.FAIL, None, f"error: {err}"
        except Exception as err:  # a bug or a broken environment: record it, keep the study going
            if self.verbose:
                traceback.print_exc()
            return TrialState.FAIL, None, f"error: {type(err).__name__}: {err}"
        finally:
            guard.in_trial = False

    def _values(self, acc: float, p) -> float | tuple[float, float]:
        return (acc, p.cost(self.config.objective.metrics[1])) if self.objective.multi else acc

    def _reuse(self, trial: optuna.Trial, source: optuna.trial.FrozenTrial) -> tuple[TrialState, Any, str]:
        """Stand in the identical finished trial's result: same state, values, learning curve."""
        trial.set_user_attr(ATTR_REUSED, source.number)
        trial.set_user_attr(ATTR_EPOCHS, 0)
        if ATTR_CURVE in source.user_attrs:
            trial.set_user_attr(ATTR_CURVE, source.user_attrs[ATTR_CURVE])
        if not self.objective.multi:
            for step, v in sorted(source.intermediate_values.items()):
                trial.report(v, step)
        values = tuple(source.values) if source.values else None
        if source.state == TrialState.COMPLETE:
            return TrialState.COMPLETE, values if self.objective.multi else values[0], f"reused trial {source.number}: identical specs"
        return TrialState.PRUNED, None, f"reused trial {source.number} (pruned): identical specs"

    def _record_outcome(self, trial: optuna.Trial, state: TrialState, value: Any, reason: str) -> bool:
        """Before tell: the reason, the dashboard note, and the artifacts of a top-k trial."""
        if reason != "completed":
            trial.set_user_attr(ATTR_REASON, reason)
        p, module = self.objective.last, self.objective.last_module
        kept = False
        if state == TrialState.COMPLETE and p is not None and module is not None:
            try:
                acc = value[0] if isinstance(value, tuple) else value
                kept = self.keeper.keep(self.study, trial, acc, p, module, self.objective.splits)
            except OSError as err:  # a full disk must not cost the trial its result
                log.warning("trial %d: artifacts not saved: %s", trial.number, err)
        attrs = trial.user_attrs
        body = note_markdown(
            trial.number, state.name, value[0] if isinstance(value, tuple) else value, p.arch.describe() if p else None, p.rows if p else None,
            attrs.get(ATTR_EPOCHS), self.config.training.max_epochs, reason, p.train.to_dict() if p else None,
            attrs.get("train_seconds"), kept,
        )
        write_note(trial, body)
        return kept

def requeue(study: optuna.Study, trial: optuna.Trial, max_retry: int) -> None:
    """Put an interrupted trial's params back in the queue, as a killed worker's would be."""
    frozen = study._storage.get_trial(trial._trial_id)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)


def prepare_worker(config: StudyConfig, url: str, verbose: bool, n_workers: int = 1) -> Splits:
    set_threads(n_workers)
    quiet_lightning(verbose)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    return load_splits(config.dataset, config.data, config.seed)


# --- several local workers -------------------------------------------------------------------------


def _worker_main(config: StudyConfig, url: str, index: int, n_workers: int, n_trials: int, timeout: float, verbose: bool, gpu: int | None) -> None:
    """Entry point of a spawned worker process."""
    if gpu is not None:  # before CUDA initialises in this process: one worker per GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=f"[w{index}] %(message)s")
    try:
        splits = prepare_worker(config, url, verbose, n_workers)
        worker = Worker(config, url, splits, index=index, seed=config.seed + 1000 * index, verbose=verbose)
        summary = worker.run(n_trials, timeout)
    except BonasError as err:
        print(f"bonas worker {index}: {err}", file=sys.stderr)
        sys.exit(2)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED.get(summary.interrupted, 1))
    sys.exit(1 if summary.stop_reason.startswith("stopped") else 0)


def spawn_workers(config: StudyConfig, url: str, n_workers: int, n_trials: int, timeout: float, verbose: bool) -> list[multiprocessing.Process]:
    """Start local worker processes: spawn (no database engine crosses a fork), one GPU each when there are several."""
    ctx = multiprocessing.get_context("spawn")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    procs = []
    for i in range(n_workers):
        gpu = i % n_gpus if n_gpus > 1 else None
        args = (config, url, i, n_workers if n_gpus == 0 else 1, n_trials, timeout, verbose, gpu)
        p = ctx.Process(target=_worker_main, args=args, name=f"bonas-worker-{i}")
        p.start()
        procs.append(p)
    return procs


def describe_url(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path is not None else mask_url(url)

