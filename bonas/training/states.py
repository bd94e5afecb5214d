"""Trials that survive their worker: each trial's training state in the study's artifact store, and where
a retried or promoted trial picks up.

A trial saves its whole training state (Lightning's checkpoint: weights, optimizer, schedule, EMA weights,
batch-order generator, RNG, per-epoch history) after every epoch, as one artifact of the trial
(``trial-<n>-state.ckpt``) that each epoch overwrites. A trial that repeats another — a retry after its
worker was killed, preempted or failed by a peer (Optuna's ``retry_history``), or an ASHA promotion of a
paused trial (``promoted_from``) — starts from that trial's last state, with its seed, and trains only
the epochs still to go. States of finished trials are removed unless the trial is in the top k, or is
paused and may still be promoted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from bonas.core import records as R
from bonas.study.artifacts import trial_artifacts
from bonas.study.storage import storage_of, study_id

log = logging.getLogger("bonas.training.states")

STATE_SUFFIX = "-state.ckpt"


def state_name(number: int) -> str:
    return f"trial-{number}{STATE_SUFFIX}"


def partial_name(artifact_id: str) -> str:
    """The file a state is written to before it replaces artifact ``artifact_id`` whole."""
    return f".{artifact_id}.partial"


def state_artifact(trial: FrozenTrial) -> str | None:
    """The id of ``trial``'s training-state artifact, if it saved one."""
    return trial_artifacts(trial).get(state_name(trial.number))


@dataclass(frozen=True)
class ResumePoint:
    source: int  # the trial whose state this one goes on from
    path: Path  # its state, downloaded
    epochs: int  # epochs that state has trained


def resume_source(frozen: FrozenTrial) -> int | None:
    """The trial a trial goes on from: the last attempt it retries, else the paused trial it promotes
    (the retry of a promotion goes on from the promotion's own, later state)."""
    history = frozen.system_attrs.get(R.SYS_RETRY_HISTORY) or []
    return history[-1] if history else frozen.system_attrs.get(R.SYS_PROMOTED_FROM)


def find_resume_point(
    study: optuna.Study, frozen: FrozenTrial, store: FileSystemArtifactStore, folder: Path
) -> ResumePoint | None:
    """Download the state ``frozen`` should go on from into ``folder``; None when it starts afresh."""
    source = resume_source(frozen)
    if source is None:
        return None
    storage = storage_of(study)
    previous = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id(study), source))
    artifact_id = state_artifact(previous)
    if artifact_id is None:
        return None
    path = folder / f"resume-{source}.ckpt"
    import torch

    try:
        with store.open_reader(artifact_id) as reader, open(path, "wb") as f:
            f.write(reader.read())
        state = torch.load(path, map_location="cpu", weights_only=True)
        epochs = len(state.get("bonas", {}).get("history", []))
    except Exception as err:  # removed meanwhile, or torn by a kill mid-write: start afresh, say so
        log.warning(
            "trial %d: the state of trial %d cannot be read (%s); training from scratch",
            frozen.number,
            source,
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
        return None
    return ResumePoint(source, path, epochs) if epochs > 0 else None


def removable_states(recs: list[R.TrialRecord], keep_top_k: int) -> list[R.TrialRecord]:
    """Finished trials whose state no one will resume from: not in the top k, not paused and promotable,
    not failed with a retry still to come."""
    keep = {r.number for r in R.top_k(recs, keep_top_k)}
    superseded = {r.trial.system_attrs.get(R.SYS_PROMOTED_FROM) for r in recs}
    retried_done = {n for r in recs if r.state.is_finished() for n in r.trial.system_attrs.get(R.SYS_RETRY_HISTORY, [])}
    out = []
    for r in recs:
        if not r.state.is_finished() or r.number in keep:
            continue
        if r.paused_at and r.number not in superseded:
            continue  # ASHA may still promote it
        if r.state == TrialState.FAIL and r.number not in retried_done:
            continue  # its retry (queued or running) goes on from this state
        out.append(r)
    return out


def remove_states(study: optuna.Study, store: FileSystemArtifactStore, folder: Path, keep_top_k: int) -> int:
    """Delete the state files of :func:`removable_states`; returns how many went."""
    removed = 0
    for r in removable_states(R.records(study.get_trials(deepcopy=False)), keep_top_k):
        artifact_id = state_artifact(r.trial)
        if artifact_id is not None:  # a kill mid-save leaves the half-written next state behind
            (folder / partial_name(artifact_id)).unlink(missing_ok=True)
        if artifact_id is not None and (folder / artifact_id).exists():
            try:
                store.remove(artifact_id)
                removed += 1
            except Exception:  # a peer removed it first
                pass
    return removed
