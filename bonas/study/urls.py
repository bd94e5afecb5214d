"""Storage URLs: which database a study lives in, checked before anything is created, and never shown
with its secrets.

``resolve_storage`` picks the URL (--storage, else $BONAS_STORAGE, else the config's, else SQLite beside
the config), ``check_storage_url`` rejects what cannot work, ``mask_url`` hides passwords and tokens for
logs, errors and study attrs, and ``shell_url`` gives a form of it that a user can paste into a shell
without the secret being printed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import string
import tempfile
from pathlib import Path

from bonas.config import StudyConfig
from bonas.core.errors import StorageError

ENV_STORAGE = "BONAS_STORAGE"

# A bare postgresql:// or mysql:// URL means SQLAlchemy's default driver; fall back to one that is installed.
DRIVERS = {
    "postgresql": [("psycopg", "psycopg"), ("psycopg2", "psycopg2")],
    "mysql": [("mysqldb", "MySQLdb"), ("pymysql", "pymysql")],
}
DRIVER_MODULES = {name: module for options in DRIVERS.values() for name, module in options}
# Query-string keys whose values are secrets (libpq's password/sslpassword, tokens of cloud drivers).
SECRET_KEY = re.compile(r"pass|pwd|token|secret|credential|auth", re.IGNORECASE)


def expand_env(url: str, where: str) -> str:
    """``$VAR`` / ``${VAR}`` in a storage URL come from the environment (keeps passwords out of files)."""
    try:
        return string.Template(url).substitute(os.environ)
    except KeyError as err:
        raise StorageError(f"{where}: storage URL uses ${{{err.args[0]}}} but that environment variable is not set") from None
    except ValueError as err:
        raise StorageError(f"{where}: storage URL has a bad '$' placeholder ({err}); write $$ for a literal $") from None


def _source(config: StudyConfig, override: str | None) -> tuple[str, str]:
    """(the URL as written, where it was written): --storage, $BONAS_STORAGE, the config, or ''."""
    if override:
        return override, "--storage"
    if os.environ.get(ENV_STORAGE):
        return f"${{{ENV_STORAGE}}}", f"${ENV_STORAGE}"
    return config.storage, config.path


def resolve_storage(config: StudyConfig, override: str | None = None) -> str:
    """The study's storage URL: --storage, else $BONAS_STORAGE, else the config's, else SQLite beside it."""
    written, where = _source(config, override)
    if not written:
        return f"sqlite:///{config.directory / (config.name + '.db')}"
    url = normalize_url(expand_env(written, where))
    check_storage_url(url, where)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and where == config.path:
        # A relative SQLite path in a config is relative to the config file, not the shell's cwd.
        return f"sqlite:///{config.directory / url[len('sqlite:///') :]}"
    return url


def shell_url(config: StudyConfig, override: str | None = None) -> str:
    """The URL for a command a user may copy: as is when it holds no secret, else as written with its
    environment variables (``"${BONAS_STORAGE}"``), which the user's shell expands; a secret typed
    literally is masked (that command then needs the URL retyped)."""
    url = resolve_storage(config, override)
    if mask_url(url) == url:
        return url
    written, _ = _source(config, override)
    return f'"{written}"' if "$" in written else mask_url(url)


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (likewise MySQL)."""
    for backend, options in DRIVERS.items():
        if url.startswith(f"{backend}://"):
            for driver, module in options:
                if importlib.util.find_spec(module) is not None:
                    return f"{backend}+{driver}://" + url[len(backend) + 3 :]
    return url


def check_storage_url(url: str, where: str = "storage") -> None:
    """Reject what cannot work before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise StorageError(
            f"{where}: malformed storage URL {mask_url(url)!r} ({err}); e.g. sqlite:///studies/x.db or postgresql://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS and backend != "sqlite":
        raise StorageError(f"{where}: unsupported storage {backend!r} in {mask_url(url)!r}; use sqlite, postgresql or mysql URLs")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(f"{where}: SQLite storage needs a file path, e.g. sqlite:///studies/x.db")
        return
    driver = parsed.get_driver_name()
    if importlib.util.find_spec(DRIVER_MODULES.get(driver, driver)) is None:
        extra = "postgres" if backend == "postgresql" else "mysql"
        raise StorageError(
            f"{where}: the {backend} driver {driver!r} is not installed; pip install 'bonas[{extra}]' or name an installed driver"
        )
    if not parsed.host and not parsed.query.get("unix_socket") and not parsed.query.get("host"):
        raise StorageError(f"{where}: {mask_url(url)!r} names no host, e.g. postgresql://user@127.0.0.1:5432/db")
    if not parsed.database:
        raise StorageError(f"{where}: {mask_url(url)!r} names no database, e.g. postgresql://user@127.0.0.1:5432/db")


def mask_url(text: str) -> str:
    """``text`` (a URL, or an error message quoting one) with every password and token replaced by ***:
    ``user:password@`` and secret query values (``?password=``, ``sslpassword=``, ``token=``, ...)."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"([?&;])([^=&\s]+)=([^&\s'\"]*)", lambda m: f"{m[1]}{m[2]}={'***' if SECRET_KEY.search(m[2]) else m[3]}", text)


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def describe_url(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path is not None else mask_url(url)


def check_writable(url: str, create: bool = False) -> None:
    """A SQLite study database can be written (its file, or a new one in its folder); with ``create``, its
    folder is made. Without, nothing is left behind: the check runs before the data is loaded."""
    path = sqlite_path(url)
    if path is None:
        return
    if path.exists():
        if path.is_dir() or not os.access(path, os.W_OK):
            raise StorageError(f"{path}: study database is not a writable file; fix its permissions or choose another --storage")
        return
    parent = path.parent
    if create:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(
                f"cannot create {parent} for the study database: {err.strerror}; choose a writable --storage"
            ) from None
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # the real test (permission bits do not stop root, read-only file systems do)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise StorageError(
            f"{parent}: directory is not writable ({err.strerror}), cannot create {path}; choose another --storage"
        ) from None
