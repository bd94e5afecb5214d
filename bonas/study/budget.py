"""The study's budget: what counts against it, and whether a new configuration may start.

What counts: finished trials (COMPLETE + PRUNED) against ``n_trials``, and the study's own clock (the
union of the intervals during which its trials ran, across runs and workers) against ``timeout``. Every
worker asks under the study lock (bonas.study.claims), so together they hold it exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from bonas.study import promotion


class Verdict(enum.Enum):
    OPEN = "open"  # a trial may start
    WAIT = "wait"  # running trials fill the budget; one may still die and be retried
    DONE = "done"  # the budget is spent


class Spent(enum.Enum):
    TRIALS = "trials"
    TIME = "time"
    SPACE = "space"  # the sampler keeps proposing finished configurations: the space looks exhausted


EXHAUSTED_AFTER = 25  # proposals in a row that only repeated finished trials: the sampler has nothing new


@dataclass(frozen=True)
class BudgetStatus:
    verdict: Verdict
    finished: int
    running: int
    waiting: int
    elapsed: float  # seconds on the study's clock
    n_trials: int
    timeout: float
    spent: Spent | None = None

    def describe(self) -> str:
        if self.spent == Spent.SPACE:
            return (
                f"the space looks exhausted: the last {EXHAUSTED_AFTER} proposals repeated finished trials "
                f"({self.finished} trials trained)"
            )
        if self.spent == Spent.TIME:
            return f"the study's timeout of {self.timeout:g}s is spent ({self.finished} of {self.n_trials} trials finished)"
        if self.spent == Spent.TRIALS:
            queued = f"; {self.waiting} queued trials beyond the budget stay WAITING" if self.waiting else ""
            return f"{self.finished} of {self.n_trials} trials finished{queued}"
        if self.verdict == Verdict.WAIT:
            return f"{self.running} running trials fill the budget of {self.n_trials}"
        return f"{self.finished} of {self.n_trials} trials finished"


def study_elapsed(trials: Iterable[FrozenTrial], now: datetime | None = None) -> float:
    """Seconds during which at least one trial ran: the study's own clock, across runs and workers."""
    now = now or datetime.now()
    spans = sorted(
        (t.datetime_start, t.datetime_complete or now)
        for t in trials
        if t.datetime_start is not None and (t.datetime_complete is not None or t.state == TrialState.RUNNING)
    )
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def budget_status(trials: list[FrozenTrial], n_trials: int, timeout: float) -> BudgetStatus:
    """Whether a new configuration may start. Queued trials do not open the budget: they start only while
    finished + running configurations are fewer than ``n_trials`` (an ASHA promotion is no new one)."""
    c = promotion.count(trials)
    elapsed = study_elapsed(trials) if timeout else 0.0
    status = dict(
        finished=c.finished, running=c.running_all, waiting=c.waiting, elapsed=elapsed, n_trials=n_trials, timeout=timeout
    )
    if timeout and elapsed >= timeout:
        return BudgetStatus(Verdict.DONE, spent=Spent.TIME, **status)
    if c.finished >= n_trials and c.running_all == 0:
        return BudgetStatus(Verdict.DONE, spent=Spent.TRIALS, **status)
    if c.repeats_in_a_row >= EXHAUSTED_AFTER:
        return BudgetStatus(Verdict.DONE, spent=Spent.SPACE, **status)
    if c.finished + c.running >= n_trials:
        return BudgetStatus(Verdict.WAIT, **status)
    return BudgetStatus(Verdict.OPEN, **status)
