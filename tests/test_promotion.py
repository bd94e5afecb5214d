"""ASHA through the study database: rungs, ranks, which paused trial is promoted, and a real study in which
promoted trials go on from their paused state without training any epoch twice."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.nas.worker import Worker, prepare_worker
from bonas.study import promotion
from bonas.study.urls import resolve_storage
from tests.helpers import frozen_trial, write_tiny_config

P, C, RUN = TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING


def rec(number: int, state: TrialState, curve: list[float], paused: int = 0, promoted_from: int | None = None) -> R.TrialRecord:
    system = {R.SYS_PROMOTED_FROM: promoted_from} if promoted_from is not None else {}
    attrs = {R.PAUSED: paused} if paused else {}
    return R.TrialRecord.of(
        frozen_trial(number, state, curve[-1] if state == C else None, attrs=attrs, system=system, curve=curve)
    )


def test_rungs_are_min_resource_times_powers_of_eta_below_max_epochs():
    assert promotion.rungs(1, 3, 9) == [1, 3]
    assert promotion.rungs(1, 3, 27) == [1, 3, 9]
    assert promotion.rungs(2, 2, 9) == [2, 4, 8]
    assert promotion.rungs(5, 3, 4) == []


def test_a_paused_trial_is_promoted_once_it_is_in_the_top_third_of_its_rung():
    recs = [rec(0, P, [0.5], paused=1), rec(1, P, [0.4], paused=1)]
    assert promotion.next_promotion(recs, [1, 3], 3) is None, "2 trials at rung 1: floor(2/3) = 0 may go on"
    recs.append(rec(2, P, [0.3], paused=1))
    assert promotion.next_promotion(recs, [1, 3], 3).number == 0
    recs.append(rec(3, RUN, [0.5, 0.6], promoted_from=0))  # taken up: its continuation carries its scores
    assert promotion.next_promotion(recs, [1, 3], 3) is None
    assert promotion.rank_at(recs, 3, 1) == (1, 3), "the paused trial is replaced by its continuation in the rung"


def test_the_highest_rung_is_promoted_first():
    recs = [rec(i, P, [0.9 - i / 100], paused=1) for i in range(6)]
    recs += [
        rec(6, P, [0.95, 0.96, 0.97], paused=3, promoted_from=0),
        rec(7, P, [0.5, 0.6, 0.7], paused=3, promoted_from=1),
        rec(8, P, [0.5, 0.5, 0.5], paused=3, promoted_from=2),
    ]
    assert promotion.next_promotion(recs, [1, 3], 3).number == 6


def test_counts_leave_promotions_and_reused_results_out():
    def frozen(n, state, attrs=None, system=None):
        return frozen_trial(n, state, 0.5 if state == C else None, attrs=attrs, system=system)

    trials = [
        frozen(0, P, {R.PAUSED: 1}),
        frozen(1, C, {R.REUSED: 0}),
        frozen(2, C, system={R.SYS_PROMOTED_FROM: 0}),
        frozen(3, RUN),
        frozen(4, RUN, system={R.SYS_PROMOTED_FROM: 9}),
    ]
    c = promotion.count(trials)
    assert (c.finished, c.running, c.running_all) == (1, 1, 2)


@pytest.mark.slow
def test_asha_study_promotes_from_the_paused_state_and_never_trains_an_epoch_twice(tmp_path):
    path = write_tiny_config(
        tmp_path,
        "asha",
        n_trials=9,
        epochs=4,
        sampler="random",
        sampler_extra="",
        train_subset=200,
        val_subset=100,
        pruner="asha",
        pruner_extra="min_resource = 1\nreduction_factor = 3",
    )
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    summary = worker.run(n_trials=9, timeout=0)
    recs = R.records(worker.study.trials)
    roots = [r for r in recs if r.promoted_from is None]
    promoted = [r for r in recs if r.promoted_from is not None]
    assert len(roots) == 9 and summary.finished == len(recs), "9 configurations; promotions are extra trials, not new ones"
    assert promoted, "some paused trial was promoted"
    by_number = {r.number: r for r in recs}
    for r in promoted:
        parent = by_number[r.promoted_from]
        assert parent.state == P and parent.paused_at == r.resumed_at, "it went on from where the parent paused"
        assert r.epochs == len(r.trial.intermediate_values) - r.resumed_at, "only the epochs still to go were trained"
        assert r.seed == parent.seed
    for r in recs:
        assert r.state in (P, C) and (r.state == C or r.paused_at in (1, 3)), (r.number, r.state, r.reason)
    assert promotion.next_promotion(recs, [1, 3], 3) is None, "nothing promotable is left when the study ends"
    assert any(r.state == C and len(r.trial.intermediate_values) == 4 for r in recs)
    trained = sum(r.epochs for r in recs)
    assert trained < 9 * 4, f"{trained} epochs for 9 configurations of 4"
