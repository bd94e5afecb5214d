"""End to end: tiny searches on a digits subset into SQLite, read back, resumed, pruned."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.config import load_config
from bonas.core.records import STUDY_CONFIG, STUDY_DATA, STUDY_ENV
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.studies import open_existing
from bonas.study.urls import resolve_storage

pytestmark = pytest.mark.slow  # real searches: not in make test-fast


def study_of(config_path):
    return open_existing(str(config_path)).study


def test_search_writes_a_study_optuna_can_read(tiny_config, capsys):
    path = tiny_config(n_trials=3)
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    assert "done: 3 of 3 trials finished" in out and "rank trial state" in out and "optuna-dashboard sqlite:///" in out

    db = path.with_suffix(".db")
    assert db.exists(), "the default storage is SQLite beside the config"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "optuna"),
            "trials",
            "--study-name",
            "tiny",
            "--storage",
            f"sqlite:///{db}",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert all(r["state"] in ("COMPLETE", "PRUNED") for r in rows)
    for r in rows:
        attrs = r["user_attrs"]
        assert {"arch", "arch_line", "params", "flops", "epochs", "train_seconds", "seed", "train"} <= set(attrs)
        assert attrs["params"] > 0 and attrs["flops"] > 0 and 1 <= attrs["epochs"] <= 2

    study = study_of(path)
    assert study.user_attrs[STUDY_CONFIG]["name"] == "tiny"
    assert study.user_attrs[STUDY_ENV]["packages"]["torch"]
    assert study.user_attrs[STUDY_DATA]["input_shape"] == [1, 8, 8]
    assert study.user_attrs[STUDY_DATA]["n_train"] == 300

    assert main(["show", str(path), "0"]) == 0
    shown = capsys.readouterr().out
    assert "classifier" in shown and "total" in shown
    assert main(["best", str(path)]) == 0 and "best trial" in capsys.readouterr().out
    assert main(["trials", str(path)]) == 0 and "3 trials" in capsys.readouterr().out


def test_resume_adds_trials_up_to_the_budget_never_more(tiny_config, capsys):
    path = tiny_config(n_trials=2)
    assert main(["search", str(path)]) == 0
    assert main(["search", str(path), "--n-trials", "4"]) == 0
    study = study_of(path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    capsys.readouterr()
    assert main(["search", str(path), "--n-trials", "4"]) == 0
    assert "is finished" in capsys.readouterr().out
    assert len(study_of(path).trials) == 4


def test_timeout_is_the_studys_total(tiny_config, capsys):
    # 40 epochs: the first trial is still running at 0.5 s whatever the machine's speed (with few epochs the time
    # could run out in a trial's last epoch, which then completes: stopping it there would save nothing)
    path = tiny_config(n_trials=50, epochs=40)
    assert main(["search", str(path), "--timeout", "0.5"]) == 0
    first = len(study_of(path).trials)
    assert 1 <= first < 50
    assert "timeout" in capsys.readouterr().out
    stopped = [t for t in study_of(path).trials if t.state == TrialState.FAIL]
    assert stopped, "the trial running at 0.5 s (a trial takes longer) stopped"
    for t in stopped:  # a trial running when the time ran out stopped at an epoch boundary, its params queued again
        assert (
            t.user_attrs["end_reason"].startswith("stopped after epoch ")
            and "the study's timeout of 0.5s is spent" in (t.user_attrs["end_reason"])
        )
    assert len(study_of(path).get_trials(states=(TrialState.WAITING,))) == len(stopped)
    assert main(["search", str(path), "--timeout", "0.5"]) == 0
    assert "is finished" in capsys.readouterr().out
    assert len(study_of(path).trials) == first


def test_forced_pruning_really_prunes(tiny_config):
    """One good trial, then trials that cannot learn (lr 1e-7): the median pruner must stop them at epoch 0."""
    path = tiny_config(n_trials=4, epochs=3, pruner_extra="n_startup_trials = 1\nn_warmup_steps = 0")
    config = load_config(path)
    url = resolve_storage(config)
    splits = prepare_worker(config, url, verbose=False)
    worker = Worker(config, url, splits)
    good = {
        "n_blocks": 1,
        "b0_width": 8,
        "b0_pool": "max",
        "b0_bn": True,
        "head": "flatten",
        "n_dense": 0,
        "lr": 0.02,
        "weight_decay": 1e-5,
    }
    worker.study.enqueue_trial(good)
    for variant in ({"b0_width": 4}, {"b0_width": 8}, {"b0_pool": "none"}):  # three different nets that cannot learn
        worker.study.enqueue_trial({**good, **variant, "lr": 1e-7})  # lr below the range on purpose: Optuna warns, uses it
    summary = worker.run(n_trials=4, timeout=0)
    trials = worker.study.trials
    assert trials[0].state == TrialState.COMPLETE
    assert summary.finished == 4
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 3, [(t.state, t.intermediate_values) for t in trials]
    for t in pruned:
        assert t.user_attrs["epochs"] < 3
        assert "pruned at epoch" in t.user_attrs["end_reason"]


def test_the_last_epoch_is_never_pruned(tiny_config):
    """The forced-pruning setup with one epoch per trial: pruning then would save nothing, so the hopeless
    trial finishes COMPLETE with its (poor) value, and its epoch is still reported."""
    path = tiny_config(n_trials=2, epochs=1, pruner_extra="n_startup_trials = 1\nn_warmup_steps = 0")
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    good = {
        "n_blocks": 1,
        "b0_width": 8,
        "b0_pool": "max",
        "b0_bn": True,
        "head": "flatten",
        "n_dense": 0,
        "lr": 0.02,
        "weight_decay": 1e-5,
    }
    worker.study.enqueue_trial(good)
    worker.study.enqueue_trial({**good, "b0_width": 4, "lr": 1e-7})
    worker.run(n_trials=2, timeout=0)
    first, hopeless = worker.study.trials
    assert [first.state, hopeless.state] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert hopeless.values[0] < first.values[0] and hopeless.intermediate_values == {0: pytest.approx(hopeless.values[0])}


def test_changed_space_refuses_to_resume(tiny_config, capsys):
    path = tiny_config(n_trials=1)
    assert main(["search", str(path)]) == 0
    path.write_text(path.read_text().replace("widths = [4, 8]", "widths = [4, 16]"))
    capsys.readouterr()
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert "different space" in err and "space.widths: was [4, 8], now [4, 16]" in err


def test_reading_a_study_that_does_not_exist(tiny_config, capsys):
    path = tiny_config()
    assert main(["trials", str(path)]) == 2
    assert "has no database yet" in capsys.readouterr().err
    assert not path.with_suffix(".db").exists()
    assert main(["search", str(path), "--n-trials", "1"]) == 0
    assert main(["show", str(path), "7"]) == 2
    assert "has no trial 7" in capsys.readouterr().err


@pytest.mark.parametrize("sampler, extra", [("random", ""), ("gp", "n_startup_trials = 1"), ("nsga2", "population_size = 2")])
def test_other_samplers_run(tiny_config, sampler, extra):
    path = tiny_config(n_trials=2, sampler=sampler, sampler_extra=extra, pruner="none", pruner_extra="", epochs=1)
    assert main(["search", str(path)]) == 0
    assert len(study_of(path).trials) == 2


@pytest.mark.parametrize("pruner", ["successive-halving", "hyperband"])
def test_other_pruners_run(tiny_config, pruner):
    path = tiny_config(n_trials=3, pruner=pruner, pruner_extra="min_resource = 1\nreduction_factor = 2")
    assert main(["search", str(path)]) == 0
    assert {t.state for t in study_of(path).trials} <= {TrialState.COMPLETE, TrialState.PRUNED}


def test_optuna_is_the_source_of_truth(tiny_config):
    """A study made by bonas is a plain Optuna study: load_study works without bonas' help."""
    path = tiny_config(n_trials=2)
    assert main(["search", str(path)]) == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{path.with_suffix('.db')}")
    assert len(study.trials) == 2 and study.metric_names == ["val_acc"]


def test_a_dead_workers_running_trial_filling_the_budget_is_reaped_not_called_finished(tiny_config, capsys):
    """A worker died holding the study's last trial: `bonas search` waits out the grace period, fails and
    retries that trial, instead of calling the study finished while a trial stays RUNNING."""
    path = tiny_config(n_trials=1, epochs=1, extra="[workers]\nheartbeat_interval = 1\ngrace_period = 2\n")
    config = load_config(path)
    url = resolve_storage(config)
    dead = Worker(config, url, prepare_worker(config, url, verbose=False))
    trial = dead.study.ask()
    dead.storage.record_heartbeat(trial._trial_id)  # its last sign of life
    time.sleep(2.5)
    capsys.readouterr()
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    assert "is finished" not in out
    states = [t.state for t in optuna.load_study(study_name="tiny", storage=url).trials]
    assert states[0] == TrialState.FAIL and TrialState.RUNNING not in states
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 1
