"""An RDB storage that survives what ordinary runs meet: database restarts and workers killed early.

Optuna's :class:`~optuna.storages.RDBStorage` fails a call when the database is briefly away, and its
heartbeat never reaps a trial whose worker died before the first heartbeat. :class:`BonasStorage`
retries storage calls with backoff, and treats a RUNNING trial that has shown no heartbeat for a
whole grace period (by this process's clock) as stale too.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger("bonas.storage")

RETRY_FOR_S = 300.0  # give a restarting database this long before a worker gives up
CONNECT_RETRY_S = 10.0  # but a database that is not there at start is a setup error: say so soon
BACKOFF_START_S, BACKOFF_MAX_S = 0.25, 8.0

# Methods that only read, or write idempotently, retried as they are. create_new_trial is retried
# too: a lost reply after a commit leaves at worst an orphan RUNNING trial, reaped as stale below.
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
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "check_trial_is_updatable",
)


def is_transient(err: BaseException) -> bool:
    """A connection-level failure worth retrying (not a constraint violation or a bug)."""
    if isinstance(err, StorageInternalError):
        cause = err.__cause__ or err.__context__
        return cause is None or is_transient(cause)
    if isinstance(err, OperationalError):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def retrying(fn: Callable, what: str, retry_for: float = RETRY_FOR_S) -> Callable:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + retry_for
        delay = BACKOFF_START_S
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err) or time.monotonic() + delay > deadline:
                    raise
                log.warning("storage unavailable during %s (%s); retrying in %.1fs", what, type(err).__name__, delay)
                time.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)

    return call


class BonasStorage(RDBStorage):
    """RDBStorage with retried calls, a tell that is safe to retry, and no-heartbeat reaping."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._first_seen_silent: dict[int, float] = {}
        self._lock = threading.Lock()
        retrying(super().__init__, "connect", CONNECT_RETRY_S)(*args, **kwargs)
        for name in _RETRIED:
            setattr(self, name, retrying(getattr(self, name), name))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Retried; when an earlier attempt committed before the connection dropped, that counts."""
        attempt = [0]

        def once() -> bool:
            attempt[0] += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Only a final state may be "already done"; WAITING -> RUNNING must never be assumed
                # (another worker may have popped the trial in between).
                if attempt[0] > 1 and state.is_finished() and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return retrying(once, "set_trial_state_values")()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(RDBStorage._get_stale_trial_ids(self, study_id))
        grace = self.grace_period or 2 * (self.heartbeat_interval or 1)
        now = time.monotonic()
        with self.engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(models.TrialModel.trial_id)
                .outerjoin(models.TrialHeartbeatModel, models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
                .where(models.TrialModel.study_id == study_id)
                .where(models.TrialModel.state == TrialState.RUNNING)
                .where(models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
            ).all()
        silent = {r[0] for r in rows}
        with self._lock:
            for tid in list(self._first_seen_silent):
                if tid not in silent:
                    del self._first_seen_silent[tid]
            for tid in silent:
                first = self._first_seen_silent.setdefault(tid, now)
                if now - first > grace:
                    stale.add(tid)
        return sorted(stale)
