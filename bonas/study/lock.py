"""The study lock: what every worker of a study holds while it creates the study, claims a trial or reaps.

One lock per study, on the database itself (or beside it, for SQLite), so it works across processes and
machines and is released by the server or the kernel when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy

from bonas.core.errors import StudyError
from bonas.study.retry import RETRY_FOR_S, retrying
from bonas.study.storage import connect_args
from bonas.study.urls import sqlite_path

log = logging.getLogger("bonas.study.lock")


class StudyLock:
    """A lock all workers of one study take around creating it, claiming a trial and reaping.

    SQLite: flock on a file beside the database (one machine). PostgreSQL: a transaction advisory lock
    (``pg_advisory_xact_lock`` in a transaction held open until the claim ends, so it also works behind a
    transaction-pooling PgBouncer). MySQL/MariaDB: GET_LOCK. The server or kernel releases it when the holder
    dies, so a killed worker never blocks the others. It has its own connection: it is taken before the study's storage exists.
    """

    def __init__(self, url: str, study_name: str, wait_s: float = 600.0):
        self.url, self.wait_s = url, wait_s
        self.key = int.from_bytes(hashlib.sha256(f"bonas:{study_name}".encode()).digest()[:8], "big", signed=True)
        self.path = sqlite_path(url)
        self.engine = None
        if self.path is None:
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
        with self._acquire_retrying(retry_for) as conn:
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    if self.dialect != "postgresql":  # PostgreSQL: the end of the transaction releases it
                        conn.execute(self._release_sql(), self._params())
                    conn.commit()
                with contextlib.suppress(Exception):
                    conn.close()

    def _acquire_retrying(self, retry_for: float) -> Any:
        return retrying("study lock", retry_for, self.url, self._acquire)

    def _params(self) -> dict[str, Any]:
        # MySQL: wait in 20 s slices, below the driver's read timeout
        return {"k": self.key} if self.dialect == "postgresql" else {"k": f"bonas:{self.key:x}", "t": 20}

    def _release_sql(self) -> Any:
        return sqlalchemy.text("SELECT RELEASE_LOCK(:k)")

    def _acquire(self) -> Any:
        conn = self.engine.connect()
        try:
            if self.dialect == "postgresql":  # held until this transaction ends (see __call__)
                conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), self._params())
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
