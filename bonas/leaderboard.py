"""What a study found, as text: the leaderboard, the best trial, a progress bar while it runs."""

from __future__ import annotations

import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bonas.objective import ATTR_ARCH_LINE, ATTR_EPOCHS, ATTR_FLOPS, ATTR_INFEASIBLE, ATTR_PARAMS, ATTR_REASON, ATTR_REUSED

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3, TrialState.FAIL: 4}


def si(n: float | None) -> str:
    """12345 -> 12.3k; None -> '-'."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def val_acc(t: FrozenTrial) -> float | None:
    """A trial's validation accuracy: its value, else its last reported epoch (pruned trials)."""
    if t.values:
        return t.values[0]
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def feasible(t: FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def rankable(t: FrozenTrial) -> bool:
    """A COMPLETE trial that was trained, within its constraints (reused trials repeat another's result)."""
    return t.state == TrialState.COMPLETE and feasible(t) and ATTR_REUSED not in t.user_attrs


def ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trained feasible COMPLETE by accuracy, then reused/infeasible ones, then PRUNED by their last
    accuracy, then the rest by number."""
    def key(t: FrozenTrial):
        order = STATE_ORDER.get(t.state, 5) + (0 if t.state != TrialState.COMPLETE or rankable(t) else 0.5)
        return (order, -(val_acc(t) or 0.0), t.number)

    return sorted(trials, key=key)


def annotation(t: FrozenTrial) -> str:
    if ATTR_REUSED in t.user_attrs:
        return f"  [reused #{t.user_attrs[ATTR_REUSED]}]"
    if not feasible(t) or ATTR_INFEASIBLE in t.user_attrs:
        return f"  [{t.user_attrs.get(ATTR_REASON, 'infeasible')}]"
    if t.state == TrialState.FAIL and t.user_attrs.get(ATTR_REASON):
        return f"  [{t.user_attrs[ATTR_REASON]}]"
    return ""


def leaderboard(study: optuna.Study, top: int | None = None, states: tuple[TrialState, ...] | None = None) -> str:
    trials = [t for t in study.get_trials(deepcopy=False) if states is None or t.state in states]
    rows = ranked(trials)[:top] if top else ranked(trials)
    header = f"{'rank':>4} {'trial':>5} {'state':<8} {'val_acc':>7} {'params':>7} {'FLOPs':>7} {'epochs':>6}  architecture"
    lines = [header]
    rank = 0
    for t in rows:
        rank += rankable(t)
        acc = val_acc(t)
        arch = t.user_attrs.get(ATTR_ARCH_LINE, "") + annotation(t)
        lines.append(
            f"{rank if rankable(t) else '-':>4} {t.number:>5} {t.state.name:<8} "
            f"{'-' if acc is None else f'{acc:.4f}':>7} {si(t.user_attrs.get(ATTR_PARAMS)):>7} "
            f"{si(t.user_attrs.get(ATTR_FLOPS)):>7} {t.user_attrs.get(ATTR_EPOCHS, '-'):>6}  {arch}"
        )
    shown = len(rows)
    if shown < len(trials):
        lines.append(f"... {len(trials) - shown} more (bonas trials {study.study_name} --top 0 shows all)")
    return "\n".join(lines)


def state_counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The most accurate trained, feasible, completed trial (first of equals)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if rankable(t)]
    return max(complete, key=lambda t: (t.values[0], -t.number)) if complete else None


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Multi-objective: the trained, feasible trials no other one beats on both accuracy and cost."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if rankable(t)]
    front, best = [], -1.0
    for t in sorted(complete, key=lambda t: (t.values[1], -t.values[0], t.number)):
        if t.values[0] > best:
            front.append(t)
            best = t.values[0]
    return front


def describe_best(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        front = pareto_trials(study)
        if not front:
            return f"study {study.study_name!r} has no completed trial yet"
        cost = study.metric_names[1] if study.metric_names else "cost"
        lines = [f"Pareto front of study {study.study_name!r} ({len(front)} trials; val_acc up, {cost} down):"]
        lines += [f"  trial {t.number:>4}  val_acc {t.values[0]:.4f}  {cost} {si(t.values[1]):>7}  {t.user_attrs.get(ATTR_ARCH_LINE, '')}" for t in front]
        return "\n".join(lines)
    t = best_trial(study)
    if t is None:
        return f"study {study.study_name!r} has no completed trial yet"
    a = t.user_attrs
    train = a.get("train", {})
    knobs = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(train.items()))
    return "\n".join(
        [
            f"best trial {t.number} of study {study.study_name!r}: val_acc {t.values[0]:.4f}",
            f"  architecture  {a.get(ATTR_ARCH_LINE, '?')}",
            f"  training      {knobs}",
            f"  params {si(a.get(ATTR_PARAMS))}, FLOPs/image {si(a.get(ATTR_FLOPS))}, epochs {a.get(ATTR_EPOCHS, '?')}, "
            f"train time {a.get('train_seconds', 0):.1f}s",
        ]
    )


class Progress:
    """Study-level progress: a bar on a terminal (done/total, best, pruned), one line per trial elsewhere."""

    def __init__(self, study_name: str, total: int, enabled: bool = True, stream: Any = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.name = study_name
        self.seen: set[int] = set()
        self.enabled = enabled
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=study_name, unit="trial", file=self.stream, dynamic_ncols=True)

    def update(self, study: optuna.Study) -> None:
        if not self.enabled:
            return
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        best = max((t.values[0] for t in trials if rankable(t)), default=None)
        new = [t for t in trials if t.state.is_finished() and t.number not in self.seen]
        self.seen.update(t.number for t in new)
        if self.bar is not None:
            self.bar.n = min(len(done), self.total)
            self.bar.set_postfix_str(f"best {best:.4f}, pruned {pruned}, failed {failed}" if best is not None else f"pruned {pruned}, failed {failed}")
            self.bar.refresh()
            return
        for t in sorted(new, key=lambda t: t.number):
            acc = val_acc(t)
            reason = t.user_attrs.get(ATTR_REASON, "")
            print(
                f"trial {t.number:>3} {t.state.name:<8} val_acc {'-' if acc is None else f'{acc:.4f}'} "
                f"params {si(t.user_attrs.get(ATTR_PARAMS))} epochs {t.user_attrs.get(ATTR_EPOCHS, '-')} "
                f"{t.user_attrs.get('train_seconds', 0):.1f}s | {len(done)}/{self.total} done, best "
                f"{'-' if best is None else f'{best:.4f}'}{f' | {reason}' if reason else ''}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
