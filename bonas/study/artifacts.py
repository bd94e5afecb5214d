"""Where a study keeps files (Optuna's file-system artifact store), and which artifacts a trial lists.

The store is a folder beside the study's SQLite file (``<name>.artifacts``), or beside the config for a
database server, or ``[artifacts] dir``. A trial's artifacts are listed in its system attrs as Optuna's
``upload_artifact`` writes them (``artifacts:<id>`` -> JSON with the file name); read here and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from bonas.config import StudyConfig
from bonas.study.urls import sqlite_path

ARTIFACT_ATTR = "artifacts:"  # optuna.artifacts' system-attr prefix


def artifact_dir(config: StudyConfig, url: str) -> Path:
    if config.artifacts.dir:
        return Path(config.artifacts.dir).expanduser()
    db = sqlite_path(url)
    return (db.parent if db is not None else config.directory) / f"{config.name}.artifacts"


def open_store(config: StudyConfig, url: str) -> FileSystemArtifactStore:
    path = artifact_dir(config, url)
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def trial_artifacts(trial: FrozenTrial) -> dict[str, str]:
    """File name -> artifact id of every artifact ``trial`` lists (read from its own record, as
    optuna.artifacts.get_all_artifact_meta does, without one database call per trial)."""
    found = {}
    for key, meta in trial.system_attrs.items():
        if key.startswith(ARTIFACT_ATTR) and isinstance(meta, str):
            info = json.loads(meta)
            found[info.get("filename", "")] = info["artifact_id"]
    return found
