"""Hardware-aware search: latency, constraints that skip training, multi-objective studies that prune."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.objective import CostAwarePruning
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.studies import open_existing
from bonas.study.urls import resolve_storage
from tests.helpers import frozen_trial, write_tiny_config

pytestmark = pytest.mark.slow  # real trials: not in make test-fast

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


def test_latency_is_measured_per_trial(tmp_path):
    path = write_tiny_config(tmp_path, "lat", n_trials=2, epochs=1, objective="latency_time_s = 0.02")
    assert main(["search", str(path)]) == 0
    for t in open_existing(str(path)).study.trials:
        lat = t.user_attrs["latency_ms"]
        assert set(lat) == {"1", "64"} and 0 < lat["1"] and 0 < lat["64"]


def test_constraints_known_before_training_skip_it(tmp_path):
    """max_params below most of the space: infeasible trials are never trained and never 'best'."""
    path = write_tiny_config(tmp_path, "con", n_trials=6, epochs=1, objective="max_params = 1500")
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.study.enqueue_trial(GOOD)  # 1,378 params: feasible
    worker.study.enqueue_trial({**GOOD, "b0_width": 8, "b0_pool": "none"})  # flatten of 8x8x8: 5k params
    worker.run(n_trials=6, timeout=0)
    trials = worker.study.trials
    feasible = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
    infeasible = [t for t in trials if t not in feasible]
    assert trials[0] in feasible and trials[1] in infeasible
    for t in infeasible:
        assert t.state == TrialState.COMPLETE and t.values[0] == 0.0
        assert t.user_attrs["epochs"] == 0
        assert "train_seconds" not in t.user_attrs, "never trained"
        assert t.user_attrs["end_reason"].startswith("infeasible: params")
        assert t.constraints["params"] == t.user_attrs["params"] - 1500 > 0
    for t in feasible:
        assert t.constraints["params"] <= 0 and "train_seconds" in t.user_attrs
    best = R.best(R.records(worker.study.trials)).trial
    assert best in feasible
    assert worker.study.best_trial.number == best.number, "Optuna agrees: infeasible trials are never best"


@pytest.mark.parametrize("sampler, extra", [("tpe", "n_startup_trials = 2"), ("nsga2", "population_size = 4")])
def test_multi_objective_study(tmp_path, sampler, extra, capsys, caplog):
    path = write_tiny_config(
        tmp_path,
        f"mo-{sampler}",
        n_trials=4,
        epochs=2,
        sampler=sampler,
        sampler_extra=extra,
        objective='metrics = ["val_acc", "params"]',
    )
    assert main(["search", str(path)]) == 0
    study = open_existing(str(path)).study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"] and study.metric_names == ["val_acc", "params"]
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.values[1] == t.user_attrs["params"] == t.user_attrs[R.COST]
        assert len(t.user_attrs[R.CURVE]) == 2
    capsys.readouterr()
    assert main(["best", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Pareto front") and all(f"trial {t.number:>4}" in out for t in R.pareto_front(R.records(study.trials)))
    report = tmp_path / "rep"
    optuna.logging.enable_propagation()  # Optuna's own warnings reach caplog
    try:
        assert main(["report", str(path), "--out", str(report)]) == 0
    finally:
        optuna.logging.disable_propagation()
    assert (report / "pareto.png").stat().st_size > 1000
    # learning curves from val_acc_curve: Optuna keeps no intermediate values in multi-objective studies
    assert (report / "intermediate.png").stat().st_size > 1000
    assert not [r for r in caplog.records if "pruning feature" in r.getMessage()]


def frozen(number, cost, curve, state=TrialState.COMPLETE):
    return R.TrialRecord.of(frozen_trial(number, state, attrs={R.COST: cost, R.CURVE: curve}))


def test_cost_aware_threshold_compares_with_no_costlier_trials_only():
    finished = [
        frozen(0, 100, [0.5, 0.6]),
        frozen(1, 200, [0.7, 0.8]),
        frozen(2, 1000, [0.9, 0.95]),
        frozen(3, 50, [0.1], TrialState.PRUNED),
    ]
    cheap = CostAwarePruning(None, cost=60, percentile=50, n_startup_trials=1, n_warmup_steps=0)
    assert cheap.threshold(finished, epoch=0) == 0.1, "only the pruned 50-cost trial is no costlier"
    assert cheap.threshold(finished, epoch=1) is None, "nobody that cheap reached epoch 1: never pruned"
    mid = CostAwarePruning(None, cost=250, percentile=50, n_startup_trials=2, n_warmup_steps=0)
    assert mid.threshold(finished, epoch=1) == pytest.approx(0.7)  # median of 0.6 and 0.8; the 1000-cost trial is ignored
    cheapest = CostAwarePruning(None, cost=10, percentile=50, n_startup_trials=1, n_warmup_steps=0)
    assert cheapest.threshold(finished, epoch=0) is None


def test_multi_objective_pruning_stops_costly_hopeless_trials_but_not_cheap_ones(tmp_path):
    path = write_tiny_config(
        tmp_path,
        "mop",
        n_trials=3,
        epochs=3,
        sampler="random",
        sampler_extra="",
        pruner_extra="n_startup_trials = 1\nn_warmup_steps = 0",
        objective='metrics = ["val_acc", "params"]',
    )
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.study.enqueue_trial(GOOD)  # 1,378 params, learns
    worker.study.enqueue_trial({**GOOD, "b0_pool": "none", "lr": 1e-7})  # 5k params, cannot learn: pruned at epoch 0
    worker.study.enqueue_trial({**GOOD, "b0_width": 4, "lr": 1e-7})  # 690 params, cannot learn, but cheapest: kept
    worker.run(n_trials=3, timeout=0)
    good, costly, cheap = worker.study.trials
    assert good.state == TrialState.COMPLETE
    assert costly.state == TrialState.PRUNED and costly.user_attrs["epochs"] == 1
    assert "percentile of trials costing <=" in costly.user_attrs["end_reason"]
    assert cheap.state == TrialState.COMPLETE and cheap.user_attrs["epochs"] == 3, "the cheapest trial is never pruned"
    assert cheap.values[1] < good.values[1]
