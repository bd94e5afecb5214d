"""Real database servers for tests: fresh databases on the machine's PostgreSQL and MariaDB, and private
PostgreSQL servers (own data directory, own port, own listen addresses) that a test may restart or cut off.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_URL = os.environ.get("BONAS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("BONAS_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    return _reachable("127.0.0.1", 5432)


def mysql_available() -> bool:
    return _reachable("127.0.0.1", 3306)


def _admin(url: str):
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def fresh_database(url: str) -> tuple[str, callable]:
    """Create an empty database next to ``url``'s; returns its URL and a function that drops it."""
    import sqlalchemy

    name = f"bonas_{uuid.uuid4().hex[:10]}"
    engine = _admin(url)
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    base, _, _ = url.rpartition("/")
    new_url = f"{base}/{name}"

    def drop() -> None:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sqlalchemy.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
            else:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()

    return new_url, drop


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A PostgreSQL server of the test's own: initdb into a temp dir, start on a free port, trust auth.

    Runs as the ``postgres`` system user when the test runs as root (PostgreSQL refuses root). Not
    ``durable`` (the tests' choice): fsync and synchronous commit off; durable keeps PostgreSQL's defaults,
    as a real server has them (what a benchmark measures).
    """

    def __init__(
        self, listen: str = "127.0.0.1", hba_net: str = "127.0.0.1/32", max_connections: int = 200, durable: bool = False
    ):
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)")
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="bonas-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.listen = listen
        self.host = listen.split(",")[0]
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        conf = self.data / "postgresql.conf"
        fast = "" if durable else "fsync = off\nsynchronous_commit = off\n"
        conf.write_text(
            conf.read_text() + f"\nlisten_addresses = '{listen}'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\n{fast}max_connections = {max_connections}\n"
        )
        hba = self.data / "pg_hba.conf"
        hba.write_text(hba.read_text() + f"\nhost all all {hba_net} trust\n")
        self.start()
        self._run_sql("CREATE DATABASE bonas")

    def url(self, host: str | None = None, password: str | None = None) -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@{host or self.host}:{self.port}/bonas"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def _run_sql(self, sql: str) -> None:
        cmd = [
            str(self.bin.parent / "bin" / "psql"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ]
        if not Path(cmd[0]).exists():
            cmd[0] = "psql"
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop hard (every connection dies), stay down ``down_s`` seconds, start again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
