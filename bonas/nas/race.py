"""A race of finalists, between the search and the final training of ``bonas run``.

The search ranks networks after a few epochs on a subset, which favours small networks that learn fast; the final
training runs many epochs on all the data, for a fixed time. So the best few trials of the search go on at the
final training's fidelity — the whole training split, each network for the same number of seconds (a network twice
as fast trains twice the epochs, as it will in the final training) — and after each round the better half by
validation accuracy goes on (successive halving), each from its own saved state, until one is left. The survivor's
final training goes on from its state, on train + validation, its learning-rate schedule following one clock from
its first round to the budget's deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.data.splits import Splits
from bonas.nas.space import specs_from_params
from bonas.training.final import evaluate, final_rows
from bonas.training.session import Session


@dataclass
class Entrant:
    record: R.TrialRecord
    session: Session
    scores: list[float] = field(default_factory=list)  # validation accuracy after each round it ran


def finalists(recs: list[R.TrialRecord], k: int) -> list[R.TrialRecord]:
    """The ``k`` most accurate rankable trials, one per distinct network and knobs (a repeated trial is one)."""
    seen, out = set(), []
    for r in R.top_k(recs, len(recs)):
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
        if len(out) == k:
            break
    return out


MIN_SLOT_S = 3.0  # a first-round slot shorter than this (a tiny budget) is no race: the search's best trains


def rounds(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def worth_racing(n: int, seconds: float) -> bool:
    """Whether ``seconds`` give each of ``n`` finalists a first-round slot of MIN_SLOT_S at least."""
    return n > 1 and seconds / rounds(n) / n >= MIN_SLOT_S


def race(
    config: StudyConfig,
    splits: Splits,
    entrants: list[R.TrialRecord],
    until: float,
    deadline: float,
    verbose: bool = False,
    on_round: Callable[[int, list[Entrant]], None] | None = None,
) -> tuple[Entrant, list[dict]]:
    """Race ``entrants`` until ``until`` (time.monotonic()); returns the survivor (its session ready to go on) and
    what each round measured. ``deadline``: when the survivor's final training ends (its schedule's end)."""
    stats = final_rows(config, splits)
    alive = []
    for r in entrants:
        arch, train = specs_from_params(r.trial.params, config.space, config.training, config.data, splits.input_shape)
        seed = r.seed if r.seed is not None else config.seed
        alive.append(Entrant(r, Session(config, splits, arch, train, seed, stats)))
    log: list[dict] = []
    total = rounds(len(alive))
    for k in range(total):
        slot = max(0.0, until - time.monotonic()) / (total - k) / len(alive)
        for e in alive:
            e.session.stretch(splits.train, time.monotonic() + slot, schedule_end=deadline, verbose=verbose)
            with e.session.on_data() as data:
                e.scores.append(evaluate(e.session.net, e.session.preprocess, data, data.val)[0])
        standing = sorted(alive, key=lambda e: (-e.scores[-1], e.record.number))
        log.append(
            {"round": k + 1, "seconds_each": round(slot, 1),
             "standing": [{"trial": e.record.number, "val_acc": e.scores[-1], "epochs": e.session.epochs}
                          for e in standing]}
        )  # fmt: skip
        alive = standing[: math.ceil(len(alive) / 2)]
        if on_round is not None:
            on_round(k + 1, alive)
    return alive[0], log
