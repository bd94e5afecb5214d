"""The trial record and the rules over it: one definition of feasible, rankable, best and the Pareto front."""

from __future__ import annotations

from optuna.trial import TrialState

from bonas.core import records as R
from bonas.results.report import best_so_far
from tests.helpers import frozen_trial

C, P, F, W = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING


def rec(number: int, state: TrialState, value: float | None = None, constraints: dict | None = None, **attrs) -> R.TrialRecord:
    system = {"constraints": list(constraints.values())} if constraints else {}  # Optuna's list format
    curve = [] if value is None or state == C else [value]
    return R.TrialRecord.of(frozen_trial(number, state, value if state == C else None, attrs=attrs, system=system, curve=curve))


def test_an_old_trial_without_bonas_attrs_reads_with_defaults():
    r = rec(0, C, 0.5)
    assert (r.arch_line, r.params, r.epochs, r.reused_from, r.infeasible, r.curve, r.layers) == ("", None, None, None, (), (), ())
    assert r.reason == R.COMPLETED and r.rankable and r.trained and r.feasible


def test_rankable_excludes_reused_infeasible_constraint_breaking_and_unfinished():
    assert rec(0, C, 0.9).rankable
    assert not rec(1, C, 0.99, **{R.REUSED: 0}).rankable
    assert not rec(2, C, 0.0, **{R.INFEASIBLE: ["params 2,000 > 1,500"]}).rankable
    assert not rec(3, P, 0.95).rankable and rec(3, P, 0.95).val_acc == 0.95
    assert not rec(4, F).rankable and not rec(5, W).rankable
    over = rec(6, C, 0.97, constraints={"params": 12.0})
    assert not over.feasible and not over.rankable, "a broken Optuna constraint alone makes it infeasible"
    assert rec(7, C, 0.97, constraints={"params": -3.0}).rankable


def test_best_is_the_most_accurate_rankable_first_of_equals():
    recs = [rec(0, C, 0.8), rec(1, C, 0.9), rec(2, C, 0.9), rec(3, C, 0.99, **{R.REUSED: 1}), rec(4, P, 0.995)]
    assert R.best(recs).number == 1
    assert [r.number for r in R.top_k(recs, 2)] == [1, 2]
    assert R.best([rec(0, F), rec(1, P, 0.5)]) is None


def test_pareto_front_by_any_cost_skips_what_is_not_rankable():
    recs = [
        rec(0, C, 0.9, params=10),
        rec(1, C, 0.8, params=5),
        rec(2, C, 0.85, params=20),
        rec(3, C, 0.7, params=5),
        rec(4, C, 0.95, params=30),
        rec(5, C, 0.99, params=1, **{R.REUSED: 4}),
        rec(6, P, 0.97, params=2),
    ]
    assert [r.number for r in R.pareto_front(recs, cost=lambda r: r.params)] == [1, 0, 4]


def test_best_so_far_counts_only_rankable_trials():
    curve = best_so_far(
        [rec(0, F), rec(1, C, 0.5), rec(2, P, 0.9), rec(3, C, 0.7), rec(4, C, 0.99, **{R.REUSED: 3}), rec(5, C, 0.6)]
    )
    assert curve == [(1, 0.5), (2, 0.5), (3, 0.7), (4, 0.7), (5, 0.7)]


def test_ranked_puts_rankable_first_then_reused_then_pruned_then_the_rest():
    recs = [rec(0, F), rec(1, C, 0.7), rec(2, C, 0.99, **{R.REUSED: 1}), rec(3, P, 0.95), rec(4, C, 0.8), rec(5, W)]
    assert [r.number for r in R.ranked(recs)] == [4, 1, 2, 3, 5, 0]


def test_attribute_names_are_unique():
    """Every trial attr bonas writes has its own key: two constants sharing one would overwrite each other."""
    names = {k: v for k, v in vars(R).items() if k.isupper() and isinstance(v, str) and not k.startswith(("STUDY_", "SYS_"))}
    assert len(set(names.values())) == len(names), names
    assert {R.ARCH, R.LAYERS, R.EPOCHS, R.REASON, R.REUSED, R.CURVE, R.SEED} <= set(names.values())
