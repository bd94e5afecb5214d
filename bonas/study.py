"""Studies: storage URLs, samplers, pruners, and creating or resuming a study with its records.

Every study stores, as user attrs, the resolved config, package versions, hardware and the data
set's shape, so any trial can be rebuilt later from the database alone.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from bonas.config import COMPARABLE_SECTIONS, StudyConfig, config_from_dict, load_config
from bonas.errors import ConfigError, StorageError, StudyError
from bonas.storage import BonasStorage

STUDIES_DIR = Path("studies")
SQLITE_BUSY_TIMEOUT_S = 60  # wait this long on a locked SQLite database before failing (see README)
ATTR_CONFIG, ATTR_ENV, ATTR_DATA = "bonas:config", "bonas:environment", "bonas:data"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# bonas runs its own heartbeat around ask/tell (see workers.py), which this warning does not know.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# --- finding configs and storages ----------------------------------------------------------------


def find_config(study_or_config: str) -> Path:
    """A path to a .toml file, or the name of ``studies/<name>.toml``."""
    p = Path(study_or_config)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a .toml study config or a study name")
    if p.suffix == ".toml" or p.is_file() or "/" in study_or_config:
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        return p
    candidate = STUDIES_DIR / f"{study_or_config}.toml"
    if candidate.is_file():
        return candidate
    known = sorted(f.stem for f in STUDIES_DIR.glob("*.toml")) if STUDIES_DIR.is_dir() else []
    hint = f"; known studies: {', '.join(known)}" if known else ""
    raise ConfigError(f"no study config named {study_or_config!r} (looked for {candidate}){hint}")


def expand_env(url: str, where: str) -> str:
    """``$VAR`` / ``${VAR}`` in a storage URL come from the environment (keeps passwords out of files)."""
    try:
        return string.Template(url).substitute(os.environ)
    except KeyError as err:
        raise StorageError(f"{where}: storage URL uses ${{{err.args[0]}}} but that environment variable is not set") from None
    except ValueError as err:
        raise StorageError(f"{where}: storage URL has a bad '$' placeholder ({err}); write $$ for a literal $") from None


def resolve_storage(config: StudyConfig, override: str | None = None) -> str:
    """The study's storage URL: --storage, else $BONAS_STORAGE, else the config's, else SQLite beside it."""
    where = "--storage" if override else config.path
    url = override or os.environ.get("BONAS_STORAGE") or config.storage
    if override is None and os.environ.get("BONAS_STORAGE"):
        where = "$BONAS_STORAGE"
    config_dir = Path(config.path).parent if config.path and not config.path.startswith("<") else Path(".")
    if not url:
        return f"sqlite:///{config_dir / (config.name + '.db')}"
    url = normalize_url(expand_env(url, where))
    check_storage_url(url, where)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and where == config.path:
        # A relative SQLite path in a config is relative to the config file, not the shell's cwd.
        return f"sqlite:///{config_dir / url[len('sqlite:///'):]}"
    return url


# A bare postgresql:// or mysql:// URL means SQLAlchemy's default driver; fall back to one that is installed.
DRIVERS = {"postgresql": [("psycopg", "psycopg"), ("psycopg2", "psycopg2")], "mysql": [("mysqldb", "MySQLdb"), ("pymysql", "pymysql")]}
DRIVER_MODULES = {name: module for options in DRIVERS.values() for name, module in options}


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (likewise MySQL)."""
    for backend, options in DRIVERS.items():
        if url.startswith(f"{backend}://"):
            for driver, module in options:
                if _importable(module):
                    return f"{backend}+{driver}://" + url[len(backend) + 3 :]
    return url


def check_storage_url(url: str, where: str = "storage") -> None:
    """Reject what cannot work before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        raise StorageError(f"{where}: malformed storage URL {mask_url(url)!r} ({err}); e.g. sqlite:///studies/x.db or postgresql://user@host/db") from None
    backend = parsed.get_backend_name()
    if backend not in DRIVERS and backend != "sqlite":
        raise StorageError(f"{where}: unsupported storage {backend!r} in {mask_url(url)!r}; use sqlite, postgresql or mysql URLs")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(f"{where}: SQLite storage needs a file path, e.g. sqlite:///studies/x.db")
        return
    driver = parsed.get_driver_name()
    if not _importable(DRIVER_MODULES.get(driver, driver)):
        extra = "postgres" if backend == "postgresql" else "mysql"
        raise StorageError(f"{where}: the {backend} driver {driver!r} is not installed; pip install 'bonas[{extra}]' or name an installed driver")
    if not parsed.host and not parsed.query.get("unix_socket") and not parsed.query.get("host"):
        raise StorageError(f"{where}: {mask_url(url)!r} names no host, e.g. postgresql://user@127.0.0.1:5432/db")
    if not parsed.database:
        raise StorageError(f"{where}: {mask_url(url)!r} names no database, e.g. postgresql://user@127.0.0.1:5432/db")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***: safe for logs, errors and study attrs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def prepare_sqlite_dir(url: str) -> None:
    """Create the directory of a SQLite database; a clear error when it cannot be written."""
    path = sqlite_path(url)
    if path is None:
        return
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StorageError(f"cannot create {parent} for the study database: {err.strerror}; choose a writable --storage") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise StorageError(f"{path}: study database is not writable; fix its permissions or choose another --storage")
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"{parent}: directory is not writable, cannot create {path.name}; fix its permissions or choose another --storage")


# --- storages -------------------------------------------------------------------------------------


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
        return {"connect_args": {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                 "keepalives_count": 3, "tcp_user_timeout": 30_000}}
    if url.startswith("mysql"):
        return {"connect_args": {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}}
    return {}


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return connect_args(url)
    # pool_pre_ping: a connection dropped by a database restart is replaced instead of failing the call.
    return {"pool_pre_ping": True, "pool_recycle": 3600, **connect_args(url)}


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None, max_retry: int = 2) -> BonasStorage:
    """An RDB storage; with a heartbeat interval, stale trials are failed and retried with their params."""
    from sqlalchemy.exc import SQLAlchemyError

    prepare_sqlite_dir(url)
    set_sqlite_wal(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=False),
        }
    try:
        return BonasStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
    except (SQLAlchemyError, OSError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {mask_url(url)}: {mask_url(reason)}") from None
    except RuntimeError as err:  # optuna: schema version mismatch
        raise StorageError(f"storage {mask_url(url)}: {err}") from None


def storage_for(config: StudyConfig, url: str) -> RDBStorage:
    w = config.workers
    return open_storage(url, w.heartbeat_interval, w.grace_period, w.max_retry)


# --- samplers and pruners -------------------------------------------------------------------------


def make_sampler(config: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    s = config.sampler
    seed = config.seed if seed is None else seed
    if s.name == "tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            group=s.group,
            constant_liar=s.constant_liar,
            seed=seed,
        )
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=s.n_startup_trials, seed=seed)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed)
    raise AssertionError(s.name)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    p = config.pruner
    max_epochs = config.training.max_epochs
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=max_epochs, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def directions(config: StudyConfig) -> list[str]:
    return ["maximize"] + ["minimize"] * (len(config.objective.metrics) - 1)


# --- creating and resuming ----------------------------------------------------------------------


def environment_info() -> dict[str, Any]:
    import torch

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "packages": {p: version(p) for p in ("bonas", "torch", "torchvision", "lightning", "optuna", "optuna-integration", "numpy", "scikit-learn", "sqlalchemy")},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
    }


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(ATTR_CONFIG)


def read_trials_file(path: Path) -> list[dict[str, Any]]:
    """A TOML file of ``[[trial]]`` tables, each a set of params to enqueue (e.g. studies/seed-archs.toml)."""
    import tomllib

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such warm-start file (warm_start.file)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read warm-start file: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    unknown = set(raw) - {"trial"}
    if unknown or not isinstance(raw.get("trial", []), list):
        raise ConfigError(f"{path}: expected only [[trial]] tables of params, found {sorted(unknown) or 'trial = ' + repr(raw.get('trial'))}")
    for i, t in enumerate(raw.get("trial", [])):
        for k, v in t.items():
            if not isinstance(v, (int, float, str, bool)):
                raise ConfigError(f"{path}: trial[{i}].{k}: a param value must be a number, string or boolean, got {v!r}")
    return raw.get("trial", [])


def warm_start_params(config: StudyConfig) -> list[dict[str, Any]]:
    """The params to enqueue when the study is created: the warm-start file, then another study's top k."""
    w = config.warm_start
    params: list[dict[str, Any]] = []
    if w.file:
        base = Path(config.path).parent if config.path and not config.path.startswith("<") else Path(".")
        path = Path(w.file) if Path(w.file).is_absolute() else base / w.file
        params += read_trials_file(path)
    if w.from_study:
        other = open_existing(w.from_study).study
        complete = [t for t in other.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if all(v <= 0 for v in t.constraints.values()) and "reused_from" not in t.user_attrs]
        complete.sort(key=lambda t: (-t.values[0], t.number))
        params += [dict(t.params) for t in complete[: w.top_k]]
    return params


def create_or_resume(config: StudyConfig, storage: RDBStorage, url: str, data_info: dict[str, Any], seed: int | None = None) -> optuna.Study:
    """Create the study with its records (and warm start), or resume it after checking the config matches."""
    stored = config.to_dict()
    stored["storage"] = mask_url(url)
    kwargs = dict(study_name=config.name, storage=storage, sampler=make_sampler(config, seed), pruner=make_pruner(config))
    try:
        study = optuna.load_study(**kwargs)
    except KeyError:
        study = None
    if study is None:
        try:
            study = optuna.create_study(directions=directions(config), **kwargs)
        except optuna.exceptions.DuplicatedStudyError:  # a peer created it first: that is fine
            return create_or_resume(config, storage, url, data_info, seed)
        study.set_user_attr(ATTR_CONFIG, stored)
        study.set_user_attr(ATTR_ENV, environment_info())
        study.set_user_attr(ATTR_DATA, data_info)
        study.set_metric_names(config.objective.metrics)
        for params in warm_start_params(config):
            study.enqueue_trial(params, skip_if_exists=True)
        return study
    check_resumable(config, study, url)
    return study


def check_resumable(config: StudyConfig, study: optuna.Study, url: str) -> None:
    previous = stored_config(study)
    if previous is None:
        raise StudyError(f"study {config.name!r} in {mask_url(url)} was not made by bonas (no stored config); pick another name")
    now = config.to_dict()
    # Where the data files live does not change which data set the trials saw.
    previous = {**previous, "data": {k: v for k, v in previous.get("data", {}).items() if k != "dir"}}
    now["data"].pop("dir")
    changed = [k for k in COMPARABLE_SECTIONS if previous.get(k) != now.get(k)]
    if changed:
        detail = _first_difference(previous, now, changed[0])
        raise StudyError(
            f"study {config.name!r} already exists with a different {', '.join(changed)} ({detail}); "
            f"its trials would not be comparable: restore the config or give the study a new name"
        )
    if len(study.directions) != len(config.objective.metrics):
        raise StudyError(f"study {config.name!r} has {len(study.directions)} objectives, the config {len(config.objective.metrics)}")


def _first_difference(previous: dict[str, Any], now: dict[str, Any], key: str) -> str:
    a, b = previous.get(key), now.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return f"{key}.{k}: was {a.get(k)!r}, now {b.get(k)!r}"
    return f"{key}: was {a!r}, now {b!r}"


@dataclass
class Opened:
    study: optuna.Study
    config: StudyConfig  # the file's config, with the sections that define the trials taken from the study
    url: str


def open_existing(study_or_config: str, storage_override: str | None = None) -> Opened:
    """Load an existing study for reading (best, trials, show, report, dashboard, retrain)."""
    config = load_config(find_config(study_or_config))
    url = resolve_storage(config, storage_override)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StudyError(f"study {config.name!r} has no database yet ({path}); run: bonas search {config.path}")
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise StudyError(f"no study named {config.name!r} in {mask_url(url)}; run: bonas search {config.path}") from None
    stored = stored_config(study)
    if stored is not None:
        trials_config = config_from_dict(stored, source=f"{config.name} (stored config)")
        for section in COMPARABLE_SECTIONS:
            setattr(config, section, getattr(trials_config, section))
    return Opened(study, config, url)
