"""Trials that survive their worker: a killed worker's trial goes on from its last saved state, with its seed,
training only the epochs still to go — and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.urls import resolve_storage
from tests.helpers import write_tiny_config

pytestmark = pytest.mark.slow  # worker processes, database servers, a browser or a scheduler: not in make test-fast

BIN = Path(sys.executable).parent
GOOD = {
    "n_blocks": 1,
    "b0_width": 8,
    "b0_pool": "max",
    "b0_bn": True,
    "head": "flatten",
    "n_dense": 0,
    "lr": 0.02,
    "weight_decay": 1e-5,
}
EPOCHS = 5


def config(folder: Path, name: str, keep_top_k: int = 0) -> Path:
    path = write_tiny_config(
        folder,
        name,
        n_trials=1,
        epochs=EPOCHS,
        pruner="none",
        pruner_extra="",
        train_subset=600,
        val_subset=100,
        keep_top_k=keep_top_k,
        extra="[workers]\nheartbeat_interval = 1\ngrace_period = 3\n",
    )
    path.write_text(path.read_text().replace("batch_sizes = [64]", "batch_sizes = [16]"))
    return path


def reference_curve(folder: Path) -> list[float]:
    """The same trial (params, seed 0 + number 0), trained without interruption, one thread."""
    path = config(folder, "ref")
    cfg = load_config(path)
    url = resolve_storage(cfg)
    worker = Worker(cfg, url, prepare_worker(cfg, url, verbose=False))
    torch.set_num_threads(1)
    worker.study.enqueue_trial(GOOD)
    worker.run(n_trials=1, timeout=0)
    t = worker.study.trials[0]
    assert t.state == TrialState.COMPLETE
    return [t.intermediate_values[s] for s in range(EPOCHS)]


def test_a_killed_workers_trial_resumes_from_its_state_with_its_seed(tmp_path):
    path = config(tmp_path, "kill")
    cfg = load_config(path)
    url = resolve_storage(cfg)
    study = Worker(cfg, url, prepare_worker(cfg, url, verbose=False)).study  # creates the study
    study.enqueue_trial(GOOD)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(
        [str(BIN / "bonas"), "worker", str(path), "--index", "0", "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and len(running[0].intermediate_values) >= 2:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the worker never reached its second epoch")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    killed = study.get_trials(states=(TrialState.RUNNING,))[0]
    done_epochs = len(killed.intermediate_values)
    assert done_epochs < EPOCHS, "killed mid-training"

    peer = subprocess.run(
        [str(BIN / "bonas"), "worker", str(path), "--index", "1", "--threads", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert peer.returncode == 0, peer.stdout[-2000:] + peer.stderr[-2000:]
    trials = {t.number: t for t in optuna.load_study(study_name="kill", storage=url).trials}
    failed = trials[killed.number]
    assert failed.state == TrialState.FAIL and failed.user_attrs[R.REASON].startswith("worker lost: no heartbeat")
    retry = next(t for t in trials.values() if t.user_attrs.get(R.RETRY_OF) == killed.number)
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs[R.SEED] == killed.user_attrs[R.SEED], "a retry keeps the seed"
    resumed = retry.user_attrs[R.RESUMED_AT]
    assert done_epochs <= resumed < EPOCHS, "it went on from the last state the killed worker saved"
    assert retry.user_attrs[R.EPOCHS] == EPOCHS - resumed, "no epoch trained twice"
    curve = [retry.intermediate_values[s] for s in range(EPOCHS)]
    assert curve[:done_epochs] == [killed.intermediate_values[s] for s in range(done_epochs)]
    reference = reference_curve(tmp_path)
    assert curve == reference, f"resumed {curve} vs uninterrupted {reference}: the same training, interrupted or not"
    print(
        f"killed after {done_epochs} epochs; the retry went on from epoch {resumed} and trained {EPOCHS - resumed}; "
        f"its curve equals the uninterrupted run's"
    )


def test_each_epoch_replaces_the_one_state_whole_and_removal_takes_a_torn_leftover(tmp_path):
    from bonas.training.states import partial_name, remove_states, state_artifact

    path = config(tmp_path, "whole", keep_top_k=1)
    cfg = load_config(path)
    url = resolve_storage(cfg)
    worker = Worker(cfg, url, prepare_worker(cfg, url, verbose=False))
    worker.study.enqueue_trial(GOOD)
    worker.run(n_trials=1, timeout=0)
    trial = worker.study.trials[0]
    store, folder = worker.keeper.store, worker.keeper.folder
    artifact_id = state_artifact(trial)
    state = torch.load(folder / artifact_id, map_location="cpu", weights_only=True)
    assert len(state["bonas"]["history"]) == EPOCHS, "the artifact holds the last epoch's state"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [], "no half-written state left"

    (folder / partial_name(artifact_id)).write_bytes(b"half a checkpoint, cut by a kill")
    assert remove_states(worker.study, store, folder, keep_top_k=0) == 1
    assert not (folder / artifact_id).exists() and not (folder / partial_name(artifact_id)).exists()
