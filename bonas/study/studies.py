"""Studies: finding a config, samplers and pruners, and creating, resuming or opening a study.

Every study stores, as user attrs, the resolved config, package versions, hardware and the data set's
shape (bonas.core.records names them), so any trial can be rebuilt later from the database alone.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from bonas.config import COMPARABLE_SECTIONS, NOT_COMPARED, StudyConfig, config_from_dict, load_config
from bonas.config.objective import AUTO
from bonas.core import records as R
from bonas.core.errors import ConfigError, StudyError
from bonas.study.samplers import directions, make_pruner, make_sampler
from bonas.study.storage import BonasStorage, open_storage
from bonas.study.urls import mask_url, resolve_storage, sqlite_path

STUDIES_DIR = Path("studies")

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# bonas runs its own heartbeat around ask/tell (see bonas.nas.worker), which this warning does not know.
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
        "packages": {
            p: version(p)
            for p in (
                "bonas",
                "torch",
                "torchvision",
                "lightning",
                "optuna",
                "optuna-integration",
                "numpy",
                "scikit-learn",
                "sqlalchemy",
            )
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
    }


def stored_config(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(R.STUDY_CONFIG)


def stored_data(study: optuna.Study) -> dict[str, Any]:
    """The data set's shape, classes and split sizes as the study was searched on ({} if not by bonas)."""
    return study.user_attrs.get(R.STUDY_DATA) or {}


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
        raise ConfigError(
            f"{path}: expected only [[trial]] tables of params, found {sorted(unknown) or 'trial = ' + repr(raw.get('trial'))}"
        )
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
        path = Path(w.file) if Path(w.file).is_absolute() else config.directory / w.file
        params += read_trials_file(path)
    if w.from_study:
        other = open_existing(w.from_study).study
        params += [dict(r.trial.params) for r in R.top_k(R.records(other.get_trials(deepcopy=False)), w.top_k)]
    return params


def create_or_resume(
    config: StudyConfig,
    storage: BonasStorage,
    url: str,
    data_info: dict[str, Any],
    seed: int | None = None,
    limits: dict[str, Any] | None = None,
    priors: list[tuple[str, dict[str, Any]]] = (),
) -> optuna.Study:
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
            return create_or_resume(config, storage, url, data_info, seed, limits, priors)
        study.set_user_attr(R.STUDY_CONFIG, stored)
        study.set_user_attr(R.STUDY_ENV, environment_info())
        study.set_user_attr(R.STUDY_DATA, data_info)
        study.set_user_attr(R.STUDY_LIMITS, limits or {})
        study.set_metric_names(config.objective.metrics)
        for params in warm_start_params(config):
            study.enqueue_trial(params, skip_if_exists=True)
        for name, params in priors:  # the standard designs, after the user's own list
            study.enqueue_trial(params, user_attrs={R.PRIOR: name}, skip_if_exists=True)
        return study
    check_resumable(config, study, url)
    check_same_data(config, study, data_info)
    return study


def check_same_data(config: StudyConfig, study: optuna.Study, data_info: dict[str, Any]) -> None:
    """Data handed over from Python is not in the config: a study resumed with other data is refused by its
    fingerprint (bonas.data.python names it in the data's source)."""
    stored = stored_data(study).get("source", "")
    now = data_info.get("source", "")
    if (stored.startswith("Python data") or now.startswith("Python data")) and stored != now:
        raise StudyError(
            f"study {config.name!r} was searched on {stored or 'other data'}, not on {now}; its trials would not be "
            "comparable: pass the same data or give the study a new name"
        )


def check_resumable(config: StudyConfig, study: optuna.Study, url: str) -> None:
    previous = stored_config(study)
    if previous is None:
        raise StudyError(f"study {config.name!r} in {mask_url(url)} was not made by bonas (no stored config); pick another name")
    now = config.to_dict()
    # Through today's defaults: a setting added since the study was made, left at its default, changes nothing.
    try:
        previous = config_from_dict(previous, source=f"{config.name} (stored config)").to_dict()
    except ConfigError:
        pass  # compare as stored: the first difference is reported below
    # Where the data files live, or how they are read, does not change which images the trials saw.
    for section, keys in NOT_COMPARED.items():
        previous = {**previous, section: {k: v for k, v in previous.get(section, {}).items() if k not in keys}}
        now[section] = {k: v for k, v in now[section].items() if k not in keys}
    if R.STUDY_LIMITS not in study.user_attrs and now["objective"]["max_flops"] == AUTO:
        now["objective"]["max_flops"] = 0.0  # a study made before the auto limit ran without a FLOPs limit: the same
    changed = [k for k in COMPARABLE_SECTIONS if previous.get(k) != now.get(k)]
    if changed:
        detail = _first_difference(previous, now, changed[0])
        raise StudyError(
            f"study {config.name!r} already exists with a different {', '.join(changed)} ({detail}); "
            f"its trials would not be comparable: restore the config or give the study a new name"
        )
    if len(study.directions) != len(config.objective.metrics):
        raise StudyError(
            f"study {config.name!r} has {len(study.directions)} objectives, the config {len(config.objective.metrics)}"
        )


def _first_difference(previous: dict[str, Any], now: dict[str, Any], key: str) -> str:
    a, b = previous.get(key), now.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return f"{key}.{k}: was {a.get(k)!r}, now {b.get(k)!r}"
    return f"{key}: was {a!r}, now {b!r}"


def trial_of(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """Trial ``number`` of ``study``, or one line saying which numbers exist."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise StudyError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    return trials[number]


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
