"""The study database: an RDB storage that survives what real runs meet, and the lock all workers share.

Optuna's :class:`~optuna.storages.RDBStorage` fails a call when the database is briefly away, never reaps
a trial whose worker died before its first heartbeat, and reaps healthy trials after an outage longer
than the grace period. :class:`BonasStorage` keeps RDBStorage's contract (it pickles, copies and returns
what RDBStorage returns) and changes three things:

- every call that reaches the database is retried with backoff on a transient error (a restart, a
  dropped connection, a locked SQLite file), including the private ones Optuna's ``_CachedStorage`` calls
  on its hot paths; a permanent error (wrong password, unknown database, missing table) fails at once
  with one line;
- a RUNNING trial that never showed a heartbeat is stale after a whole grace period too;
- a worker that was itself cut off from the database reaps nothing until its peers have had a grace
  period (plus a backoff) to write heartbeats again: staleness it shared proves nothing.

Optuna internals are touched here and nowhere else: ``storages._rdb.models`` (the heartbeat query needs
the heartbeat's age), ``Study._storage`` / ``Study._study_id`` and ``Trial._trial_id`` (Optuna has no
public way from a study or trial to its storage ids; :func:`storage_of`, :func:`study_id` and
:func:`trial_id` name them once).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState

from bonas.core.errors import StorageError
from bonas.study.retry import BACKOFF_MAX_S, CONNECT_RETRY_S, RETRY_FOR_S, first_line, retrying
from bonas.study.urls import check_writable, mask_url, sqlite_path

log = logging.getLogger("bonas.study.storage")

SQLITE_BUSY_TIMEOUT_S = 60  # wait this long on a locked SQLite database before failing (see README)


class BonasStorage(RDBStorage):
    """RDBStorage with retried calls, a tell that is safe to retry, and outage-aware reaping."""

    def __init__(self, url: str, *args: Any, retry_for: float = RETRY_FOR_S, **kwargs: Any):
        self._init_local_state()
        self.retry_for = retry_for
        # self.url is not set until RDBStorage.__init__ succeeds: a refusal names the URL it was given (masked)
        retrying("connect", CONNECT_RETRY_S, url, lambda: RDBStorage.__init__(self, url, *args, **kwargs), self._failed)

    def _init_local_state(self) -> None:
        """What belongs to this process: locks, clocks and the silent trials seen (rebuilt on unpickling)."""
        self._lock = threading.Lock()
        self._first_seen_silent: dict[int, float] = {}
        self._last_failure = float("-inf")  # time.monotonic() of the last transient failure of any call

    def __getstate__(self) -> dict[str, Any]:
        state = RDBStorage.__getstate__(self)
        for key in ("_lock", "_first_seen_silent", "_last_failure"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._init_local_state()
        self._retry("connect", CONNECT_RETRY_S, RDBStorage.__setstate__, self, state)

    # --- retrying ---------------------------------------------------------------------------------

    def _retry(self, what: str, retry_for: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return retrying(what, retry_for, getattr(self, "url", ""), lambda: fn(*args, **kwargs), self._failed)

    def _failed(self) -> None:
        self._last_failure = time.monotonic()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Retried; when an earlier attempt committed before the connection dropped, that counts."""
        attempt = [0]

        def once() -> bool:
            attempt[0] += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # Only a final state may be "already done"; WAITING -> RUNNING must never be assumed
                # (another worker may have popped the trial in between).
                if attempt[0] > 1 and state.is_finished() and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return self._retry("set_trial_state_values", self.retry_for, once)

    # --- heartbeats and staleness -------------------------------------------------------------------

    def recently_cut_off(self) -> bool:
        """This process failed to reach the database so recently that its peers may not have written
        their heartbeats since: their silence is not evidence that they died."""
        window = (self.grace_period or 0) + BACKOFF_MAX_S + (self.heartbeat_interval or 0)
        return time.monotonic() - self._last_failure < window

    def stale_trials(self, study_id: int) -> list[Stale]:
        """RUNNING trials whose worker is presumed dead, with how long each has been silent."""
        if self.heartbeat_interval is None or self.recently_cut_off():
            return []
        return self._retry("stale_trials", self.retry_for, self._stale_trials, study_id)

    def _stale_trials(self, study_id: int) -> list[Stale]:
        grace = self.grace_period or 2 * self.heartbeat_interval
        hb = models.TrialHeartbeatModel
        with self.engine.connect() as conn:
            now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
            rows = conn.execute(
                sqlalchemy.select(models.TrialModel.trial_id, hb.heartbeat)
                .outerjoin(hb, hb.trial_id == models.TrialModel.trial_id)
                .where(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
            ).all()
        stale, mono = [], time.monotonic()
        with self._lock:
            silent = {tid for tid, beat in rows if beat is None}
            self._first_seen_silent = {tid: t for tid, t in self._first_seen_silent.items() if tid in silent}
            for tid, beat in rows:
                if beat is not None:
                    age = (now - beat.replace(tzinfo=None)).total_seconds()
                    if age > grace:
                        stale.append(Stale(tid, age, had_heartbeat=True))
                else:  # died before its first heartbeat: silent for as long as this process has seen it
                    age = mono - self._first_seen_silent.setdefault(tid, mono)
                    if age > grace:
                        stale.append(Stale(tid, age, had_heartbeat=False))
        return sorted(stale, key=lambda s: s.trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return [s.trial_id for s in self.stale_trials(study_id)]


@dataclass(frozen=True)
class Stale:
    trial_id: int
    silent_for: float  # seconds since its last heartbeat (or since this process first saw it silent)
    had_heartbeat: bool


# Every RDBStorage method that opens a session, retried on the class. Public methods that only call
# these (create_new_trial, set_trial_param, get_all_trials, get_best_trial) are covered through them;
# _CachedStorage calls the private ones directly. Retrying is safe: reads are idempotent, attribute and
# intermediate-value writes are upserts, a param written twice is an ignored IntegrityError, and a
# trial created twice leaves an orphan RUNNING trial with no heartbeat, which is reaped as stale.
_RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "_create_new_trial",
    "_set_trial_param",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "_get_trials",
    "_get_best_trial_id",
    "record_heartbeat",
)


def _retried(name: str) -> Any:
    base = getattr(RDBStorage, name)

    @functools.wraps(base)
    def method(self: BonasStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retry(name, self.retry_for, base, self, *args, **kwargs)

    return method


for _name in _RETRIED:
    setattr(BonasStorage, _name, _retried(_name))


# --- Optuna's private handles, named once ------------------------------------------------------------


def storage_of(study: optuna.Study) -> Any:
    """The study's storage as Optuna holds it (RDB storages come wrapped in its _CachedStorage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial) -> int:
    return trial._trial_id


# --- opening ------------------------------------------------------------------------------------------


def set_sqlite_wal(url: str) -> None:
    """Put a SQLite study database in WAL mode (a property of the file: set once, kept).

    In the default rollback-journal mode a writer holds the lock while it waits for readers, so a worker
    stalled at that moment (SIGSTOP, a swapped-out laptop) blocks every other worker; in WAL mode writers
    never wait for readers and readers never block. See bench/storage.py for the measurements.
    """
    import sqlite3

    path = sqlite_path(url)
    if path is None:
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as err:
        raise StorageError(f"{path}: cannot open the SQLite database: {err}") from None


def connect_args(url: str) -> dict[str, Any]:
    """Driver settings: SQLite waits for locks; network databases notice a dead link in ~30 s, not hours."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if url.startswith("postgresql"):
        return {
            "connect_args": {
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 30_000,
            }
        }
    if url.startswith("mysql"):
        return {"connect_args": {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}}
    return {}


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return connect_args(url)
    # pool_pre_ping: a connection dropped by a database restart is replaced instead of failing the call.
    # A worker needs two connections at most (its loop and its heartbeat thread): many workers, few connections.
    return {"pool_pre_ping": True, "pool_recycle": 3600, "pool_size": 1, "max_overflow": 1, **connect_args(url)}


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> BonasStorage:
    """An RDB storage; with a heartbeat interval, bonas' reaper (bonas.study.budget) fails stale trials."""
    from sqlalchemy.exc import SQLAlchemyError

    check_writable(url, create=True)
    set_sqlite_wal(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    try:
        return BonasStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
    except (SQLAlchemyError, OSError) as err:
        raise StorageError(f"cannot open storage {mask_url(url)}: {first_line(err)}") from None
    except RuntimeError as err:  # optuna: schema version mismatch
        raise StorageError(f"storage {mask_url(url)}: {err}") from None
