"""Asynchronous successive halving with pause and promotion (ASHA, Li et al. 2020), through the shared study
database.

Rungs: ``r_k = min_resource * eta**k`` epochs (k = 0, 1, ... while r_k < max_epochs). A trial that has
trained r_k epochs has reached rung k; its score there is its validation accuracy after r_k epochs. At a
rung, a running trial goes on only while it is in the top ``floor(n_k / eta)`` of the n_k trials that
reached that rung; otherwise it *pauses*: its training state is saved (bonas.training.states), it ends PRUNED with
``paused_at_epoch = r_k``, and its worker takes other work. When a worker looks for work (under the study
lock, bonas.study.budget), a paused trial that has since entered the top ``floor(n_k / eta)`` of its rung is
promoted before any new configuration is sampled — the highest rung first, then the best score: a new
trial with the same params (system attr ``bonas:promoted_from``) goes on from the paused trial's state.

Unlike in-trial successive halving (Optuna's pruner decides once, when the trial reaches the rung), no
trial is stopped for good by arriving early among few or strong peers: it waits until the rung fills.
Each configuration counts once against ``n_trials``; promotions are not new trials of the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from bonas.core import records as R
from bonas.study.storage import storage_of, study_id


def rungs(min_resource: int, eta: int, max_epochs: int) -> list[int]:
    """Epoch counts at which trials are compared: min_resource * eta**k below max_epochs."""
    out, r = [], max(1, min_resource)
    while r < max_epochs:
        out.append(r)
        r *= eta
    return out


def is_continuation(t: FrozenTrial) -> bool:
    return R.SYS_PROMOTED_FROM in t.system_attrs


def superseded(recs: list[R.TrialRecord]) -> set[int]:
    """Paused trials a promotion has taken up (whatever became of it)."""
    return {r.promoted_from for r in recs if r.promoted_from is not None}


def scores_at(recs: list[R.TrialRecord], epochs: int) -> list[tuple[float, int]]:
    """(score after ``epochs`` epochs, trial number) of every configuration that reached that rung, once
    each: a promoted trial's continuation carries its earlier scores, so the paused trial is left out."""
    gone = superseded(recs)
    step = epochs - 1
    return [
        (r.trial.intermediate_values[step], r.number)
        for r in recs
        if r.number not in gone and r.state != TrialState.FAIL and step in r.trial.intermediate_values
    ]


def rank_at(recs: list[R.TrialRecord], number: int, epochs: int) -> tuple[int, int]:
    """(1-based rank of trial ``number`` at the rung of ``epochs``, how many reached it); ties: earlier first."""
    ordered = sorted(scores_at(recs, epochs), key=lambda p: (-p[0], p[1]))
    ranks = [n for _, n in ordered]
    return ranks.index(number) + 1, len(ordered)


def next_promotion(recs: list[R.TrialRecord], rung_epochs: list[int], eta: int) -> R.TrialRecord | None:
    """The paused trial to promote now, if any: the highest rung first, then the best score there."""
    gone = superseded(recs)
    by_number = {r.number: r for r in recs}
    for epochs in sorted(rung_epochs, reverse=True):
        ordered = sorted(scores_at(recs, epochs), key=lambda p: (-p[0], p[1]))
        for _, number in ordered[: len(ordered) // eta]:
            r = by_number[number]
            if r.state == TrialState.PRUNED and r.paused_at == epochs and number not in gone:
                return r
    return None


@dataclass(frozen=True)
class Counts:
    finished: int  # configurations finished (COMPLETE or PRUNED, a paused one included), reused results not counted
    running: int  # configurations running (promotions not included: they are not new configurations)
    running_all: int  # every RUNNING trial, promotions included
    waiting: int
    repeats_in_a_row: int  # the latest finished trials that only reused an identical earlier result


def count(trials: list[FrozenTrial]) -> Counts:
    """What counts against ``n_trials``: configurations that trained (or were stopped before training on
    their own merits: infeasible, screened out) — a reused result measures nothing new."""
    roots = [t for t in trials if not is_continuation(t)]
    finished = [t for t in roots if t.state in R.FINISHED]
    repeats = 0
    for t in sorted(finished, key=lambda t: t.number, reverse=True):
        if R.REUSED not in t.user_attrs:
            break
        repeats += 1
    return Counts(
        finished=sum(R.REUSED not in t.user_attrs for t in finished),
        running=sum(t.state == TrialState.RUNNING for t in roots),
        running_all=sum(t.state == TrialState.RUNNING for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
        repeats_in_a_row=repeats,
    )


def promote(study: optuna.Study, source: R.TrialRecord) -> optuna.Trial:
    """A RUNNING trial with ``source``'s params and scores that goes on from its state (the caller holds
    the study lock). Created RUNNING, not queued: ask() would pop the oldest WAITING trial instead."""
    t = source.trial
    system_attrs = {R.SYS_PROMOTED_FROM: t.number}
    template = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=t.params,
        distributions=t.distributions,
        user_attrs={k: v for k, v in t.user_attrs.items() if k not in R.RUN_ATTRS},
        system_attrs=system_attrs,
        intermediate_values=t.intermediate_values,
    )
    storage = storage_of(study)
    tid = storage.create_new_trial(study_id(study), template_trial=template)
    storage.set_trial_state_values(tid, TrialState.RUNNING)
    return optuna.trial.Trial(study, tid)  # Optuna's own class for a running trial; its params are already set
