"""Retrying what reaches the database: the one loop the storage and the study lock share.

A transient error (a restart, a dropped connection, a locked SQLite file) is retried with a doubling backoff
for a while; a permanent one (wrong password, unknown database, missing table) fails at once with one line;
anything else (a bug, a constraint) is raised as it is.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from bonas.core.errors import StorageError
from bonas.study.urls import mask_url

log = logging.getLogger(__name__)

RETRY_FOR_S = 300.0  # give a restarting database this long before a worker gives up
CONNECT_RETRY_S = 10.0  # but a database that is not there at start is a setup error: say so soon
BACKOFF_START_S, BACKOFF_MAX_S = 0.25, 8.0


class Fault(enum.Enum):
    TRANSIENT = "transient"  # the database is away for a while: retry
    PERMANENT = "permanent"  # retrying cannot help: say what is wrong
    OTHER = "other"  # not a database problem (a bug, a constraint): raise as is


# Server answers that no retry fixes: PostgreSQL SQLSTATEs, MySQL error numbers, SQLite messages.
_PG_PERMANENT = {"28P01", "28000", "3D000", "42P01", "42501", "3F000"}  # auth, unknown db/table/schema, privilege
_MYSQL_PERMANENT = {1044, 1045, 1049, 1142, 1146, 1698}  # access denied, unknown database, missing table
_PERMANENT_TEXT = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry|role \S+ does not exist|"
    r"database \S+ does not exist|no such table|access denied|unknown database|doesn't exist|"
    r"file is not a database|permission denied|attempt to write a readonly database",
    re.IGNORECASE,
)


def classify(err: BaseException) -> Fault:
    """Whether a storage error is worth retrying."""
    if isinstance(err, StorageInternalError):
        cause = err.__cause__ or err.__context__
        return Fault.TRANSIENT if cause is None else classify(cause)
    if not isinstance(err, DBAPIError):
        return Fault.OTHER
    orig = err.orig
    code = getattr(orig, "sqlstate", None) or (
        orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    )
    if code in _PG_PERMANENT or code in _MYSQL_PERMANENT or _PERMANENT_TEXT.search(str(orig or err)):
        return Fault.PERMANENT
    if isinstance(err, OperationalError) or err.connection_invalidated:
        return Fault.TRANSIENT
    if isinstance(err, ProgrammingError):
        return Fault.PERMANENT
    return Fault.OTHER


def permanent_error(url: str, err: BaseException) -> StorageError:
    return StorageError(
        f"storage {mask_url(url)}: {first_line(err)} (retrying cannot fix this: check the URL's user, password, "
        "database and the tables' permissions)"
    )


def first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or getattr(err, "__cause__", None) or err
    text = str(orig).strip().splitlines()
    return mask_url(text[0] if text else type(orig).__name__)


def retrying(
    what: str, retry_for: float, url: str, call: Callable[[], Any], on_transient: Callable[[], None] | None = None
) -> Any:
    """``call()``, retried with backoff for ``retry_for`` seconds while it fails transiently (``on_transient`` is
    told each time); a permanent fault becomes one StorageError line naming ``url`` (masked)."""
    deadline = time.monotonic() + retry_for
    delay = BACKOFF_START_S
    while True:
        try:
            return call()
        except Exception as err:
            fault = classify(err)
            if fault == Fault.PERMANENT:
                raise permanent_error(url, err) from None
            if fault != Fault.TRANSIENT or time.monotonic() + delay > deadline:
                raise
            if on_transient is not None:
                on_transient()
            log.warning("storage unavailable during %s (%s); retrying in %.1fs", what, type(err).__name__, delay)
            time.sleep(delay)
            delay = min(BACKOFF_MAX_S, delay * 2)
