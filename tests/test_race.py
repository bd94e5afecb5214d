"""The race of finalists: equal time per network at the final training's fidelity, the better half going on from
its saved state each round, the survivor's final training going on from its own, the budget held."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.race import finalists, race, rounds, worth_racing
from bonas.training.final import final_rows, final_splits
from tests.helpers import frozen_trial, write_tiny_config

pytestmark = pytest.mark.slow  # real training: not in make test-fast


def test_finalists_are_the_best_distinct_trials():
    recs = R.records(
        [
            frozen_trial(0, TrialState.COMPLETE, 0.90, attrs={R.KEY: "a"}),
            frozen_trial(1, TrialState.COMPLETE, 0.95, attrs={R.KEY: "b"}),
            frozen_trial(2, TrialState.COMPLETE, 0.95, attrs={R.KEY: "b"}),  # the same network and knobs again
            frozen_trial(3, TrialState.PRUNED, None, attrs={R.KEY: "c"}, curve=[0.99]),
            frozen_trial(4, TrialState.COMPLETE, 0.80, attrs={R.KEY: "d"}),
        ]
    )
    assert [r.number for r in finalists(recs, 3)] == [1, 0, 4]
    assert [rounds(n) for n in (1, 2, 3, 4, 5, 8)] == [0, 1, 2, 2, 3, 3]
    assert worth_racing(4, 24.0) and not worth_racing(4, 23.0) and not worth_racing(1, 1000.0)


def test_a_race_halves_the_field_each_round_and_the_survivor_goes_on_from_its_state(tmp_path):
    path = write_tiny_config(tmp_path, "race", n_trials=4, epochs=1, pruner="none", pruner_extra="", sampler="random",
                             sampler_extra="")  # fmt: skip
    config = load_config(path)
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage

    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.run(n_trials=4, timeout=0)
    entrants = finalists(R.records(worker.study.trials), 4)
    assert len(entrants) == 4
    splits = final_splits(config)
    seen = []
    start = time.monotonic()
    winner, log = race(config, splits, entrants, start + 8, start + 20, on_round=lambda k, alive: seen.append(len(alive)))
    assert seen == [2, 1] and [len(r["standing"]) for r in log] == [4, 2]
    assert time.monotonic() - start < 8 + 4, "the race ends on time, give or take a batch and a validation"
    first, second = log
    assert {s["trial"] for s in second["standing"]} == {s["trial"] for s in first["standing"][:2]}, "the better half went on"
    assert winner.record.number == second["standing"][0]["trial"] and len(winner.scores) == 2
    steps = winner.session.steps
    assert winner.session.state is not None and steps > 0
    done = winner.session.epochs
    assert done >= second["standing"][0]["epochs"] > first["standing"][0]["epochs"] - 1e-9, "round 2 went on from round 1"
    rows = final_rows(config, splits)
    winner.session.stretch(rows, time.monotonic() + 3, test_images=len(splits.test))
    assert winner.session.steps > steps, "the final training went on from the race's state, its step count with it"


def test_bonas_run_races_its_finalists_and_holds_its_budget(tmp_path, monkeypatch):
    from bonas.cli import main

    monkeypatch.setattr("bonas.nas.race.MIN_SLOT_S", 0.25)  # a test-sized budget: slots of half a second or so
    path = write_tiny_config(tmp_path, "rr", n_trials=3, epochs=1, train_subset=300, val_subset=100)
    path.write_text(path.read_text() + "\n[final]\nfinalists = 3\nrace_share = 0.6\n")
    budget = 20  # a search of 10 s (3+ one-epoch trials of 300 images), 5 s kept for the report, a race of ~3 s
    start = time.monotonic()
    assert (
        main(["run", str(path), "--budget", f"{budget}s", "--out", str(tmp_path / "m.pt"), "--report", str(tmp_path / "r")]) == 0
    )
    assert time.monotonic() - start < budget + 30
    study = optuna.load_study(study_name="rr", storage=f"sqlite:///{tmp_path / 'rr.db'}")
    record = study.user_attrs[f"{R.RUN_PREFIX}0"]
    assert record["total_s"] <= budget * 1.05 + 1, record
    retrained = study.user_attrs[f"{R.RETRAIN_PREFIX}{record['best_trial']}"]
    assert [len(r["standing"]) for r in retrained["race"]] == [3, 2], "3 finalists: two rounds, 3 then 2"
    assert retrained["race"][-1]["standing"][0]["trial"] == record["best_trial"], "the survivor is the model"
