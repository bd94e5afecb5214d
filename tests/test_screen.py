"""Zero-cost screening in a real study: every new network is scored at initialisation, and once enough earlier
scores exist, one below the percentile is stopped before its first epoch, with its score and threshold recorded."""

from __future__ import annotations

from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.screen import judge
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.urls import resolve_storage
from tests.helpers import write_tiny_config


def test_low_scoring_networks_are_stopped_before_training(tmp_path):
    path = write_tiny_config(
        tmp_path,
        "scr",
        n_trials=8,
        epochs=1,
        sampler="random",
        sampler_extra="",
        extra='[screen]\nproxy = "synflow"\npercentile = 50.0\nn_startup_trials = 3\nbatch_size = 32\n',
    )
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.run(n_trials=8, timeout=0)
    recs = R.records(worker.study.trials)
    assert all(r.screen.get("proxy") == "synflow" and r.screen["score"] is not None for r in recs if r.reused_from is None)
    assert all(r.screen["threshold"] is None for r in recs[:3]), "the first n_startup_trials are only scored"
    out = [r for r in recs if r.screen.get("rejected")]
    assert out, "with half the earlier scores above it, some network scored lower"
    for r in out:
        assert r.state == TrialState.PRUNED and r.epochs == 0 and r.reason.startswith("screened out before training: synflow")
        assert r.screen["score"] < r.screen["threshold"] and not r.trained and not r.rankable
    kept = [r for r in recs if r.screen and not r.screen.get("rejected") and r.reused_from is None]
    assert all(r.epochs == 1 for r in kept), "what passed the screen trained"
    assert sum(r.finished and r.reused_from is None for r in recs) == 8, "a screened-out trial counts: it was judged"


def test_the_threshold_is_the_percentile_of_earlier_finite_scores():
    def rec(n, score):
        import datetime

        import optuna

        now = datetime.datetime.now()
        attrs = {R.SCREEN: {"proxy": "naswot", "score": score}}
        return R.TrialRecord.of(optuna.trial.FrozenTrial(n, TrialState.COMPLETE, 0.5, now, now, {}, {}, attrs, {}, {}, n))

    recs = [rec(0, 1.0), rec(1, 2.0), rec(2, 3.0), rec(3, float("-inf")), rec(4, 4.0)]
    assert judge(2.4, "naswot", recs[:2], 50.0, 3).threshold is None, "fewer than n_startup scores: no threshold"
    verdict = judge(2.4, "naswot", recs, 50.0, 3)
    assert verdict.threshold == 2.5 and verdict.peers == 4 and verdict.rejected
    assert not judge(2.6, "naswot", recs, 50.0, 3).rejected and judge(float("nan"), "naswot", recs, 50.0, 3).rejected
    assert judge(2.4, "synflow", recs, 50.0, 3).threshold is None, "scores of another proxy do not count"
