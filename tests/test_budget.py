"""The budget held exactly: what counts, the study's clock, queued trials, and failing + requeueing in one step."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.budget import Spent, Verdict, budget_status, study_elapsed
from bonas.study.claims import fail_and_requeue, requeue
from bonas.study.lock import StudyLock
from bonas.study.storage import open_storage
from tests.helpers import frozen_trial, write_tiny_config

BIN = Path(sys.executable).parent
T0 = datetime(2026, 1, 1)


def frozen(number: int, state: TrialState, start: float | None = 0, stop: float | None = 1) -> optuna.trial.FrozenTrial:
    return frozen_trial(number, state, 0.5 if state == TrialState.COMPLETE else None, start=start, stop=stop)


def test_elapsed_is_the_union_of_trial_intervals():
    trials = [
        frozen(0, TrialState.COMPLETE, 0, 10),
        frozen(1, TrialState.COMPLETE, 5, 12),
        frozen(2, TrialState.COMPLETE, 20, 25),
    ]
    assert study_elapsed(trials) == 17  # two workers overlapping on [0, 12], a gap, then [20, 25]
    assert study_elapsed([frozen(0, TrialState.RUNNING, 0, None)], now=T0 + timedelta(seconds=4)) == 4


def test_queued_trials_do_not_open_a_spent_budget():
    done, queued = [frozen(0, TrialState.COMPLETE)], [frozen(i, TrialState.WAITING, None, None) for i in range(1, 7)]
    assert budget_status(done + queued, n_trials=3, timeout=0).verdict == Verdict.OPEN
    running = [frozen(7, TrialState.RUNNING, 0, None), frozen(8, TrialState.RUNNING, 0, None)]
    status = budget_status(done + queued + running, n_trials=3, timeout=0)
    assert status.verdict == Verdict.WAIT, "1 finished + 2 running fill a budget of 3, whatever is queued"
    finished = [frozen(i, TrialState.PRUNED) for i in (7, 8)]
    status = budget_status(done + queued + finished, n_trials=3, timeout=0)
    assert (status.verdict, status.spent, status.waiting) == (Verdict.DONE, Spent.TRIALS, 6)
    assert "6 queued trials beyond the budget stay WAITING" in status.describe()


def test_the_timeout_counts_the_studys_own_clock():
    trials = [frozen(0, TrialState.COMPLETE, 0, 30), frozen(1, TrialState.FAIL, 40, 50)]
    assert budget_status(trials, n_trials=10, timeout=45).verdict == Verdict.OPEN
    status = budget_status(trials, n_trials=10, timeout=40)
    assert (status.verdict, status.spent) == (Verdict.DONE, Spent.TIME)


@pytest.mark.slow
def test_workers_never_run_queued_trials_past_the_budget(tmp_path):
    """Budget 3, one trial done, six queued (a warm-start list longer than the budget): two worker processes
    finish exactly 3, the rest stay WAITING and `bonas trials` says why."""
    path = write_tiny_config(tmp_path, "q", n_trials=3, epochs=1, train_subset=64, val_subset=32)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    config = load_config(path)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    assert worker.run(n_trials=1, timeout=0).finished == 1
    study = worker.study
    for width in (4, 8):
        for pool in ("max", "none"):
            study.enqueue_trial({"n_blocks": 1, "b0_width": width, "b0_pool": pool, "b0_bn": True, "head": "gap", "n_dense": 0})
    study.enqueue_trial({"n_blocks": 2})
    study.enqueue_trial({"n_blocks": 1, "head": "flatten"})
    proc = subprocess.run(
        [str(BIN / "bonas"), "search", str(path), "--workers", "2"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    states = [t.state for t in optuna.load_study(study_name="q", storage=url).trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 3, states
    assert states.count(TrialState.WAITING) == 4 and TrialState.RUNNING not in states
    shown = subprocess.run([str(BIN / "bonas"), "trials", str(path)], capture_output=True, text=True, timeout=120).stdout
    assert "4 queued trials stay WAITING: the budget of 3 trials is spent" in shown


def test_fail_and_requeue_is_one_step_and_never_queues_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    study = optuna.create_study(study_name="f", storage=open_storage(url))
    lock = StudyLock(url, "f")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(R.ARCH_LINE, "c8k3")
    trial.set_user_attr(R.EPOCHS, 2)  # a run attribute: the retry starts without it
    failed = fail_and_requeue(study, lock, trial, "interrupted by SIGTERM", max_retry=2)
    assert failed is not None and failed.requeued
    assert fail_and_requeue(study, lock, trial, "again", max_retry=2) is None, "already failed: nothing to do"
    first, retry = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs[R.REASON] == "interrupted by SIGTERM"
    assert retry.state == TrialState.WAITING and retry.params == first.params
    assert retry.system_attrs[R.SYS_FAILED_TRIAL] == 0 and retry.system_attrs[R.SYS_RETRY_HISTORY] == [0]
    assert retry.user_attrs == {R.ARCH_LINE: "c8k3"}
    assert requeue(study, study.trials[0], max_retry=2), "a reaper that died half-way finds the retry already queued"
    assert len(study.trials) == 2
    again = study.ask()  # the retry, failed again and again: max_retry = 2 retries, then no more
    fail_and_requeue(study, lock, again, "x", max_retry=2)
    third = study.ask()
    assert third.number == 2 and fail_and_requeue(study, lock, third, "x", max_retry=2).requeued is False
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
