"""What a study found, as text: the leaderboard, the best trial (or Pareto front), a progress bar.

Read side only: trial records, no training stack (``bonas trials`` and ``bonas best`` import neither
torch nor Lightning).
"""

from __future__ import annotations

import sys
from typing import Any

import optuna
from optuna.trial import TrialState

from bonas.core import records as R
from bonas.results.notes import si


def annotation(r: R.TrialRecord, promoted_to: dict[int, int]) -> str:
    if r.reused_from is not None:
        return f"  [reused #{r.reused_from}]"
    if not r.feasible:
        return f"  [{r.reason or 'infeasible'}]"
    notes = [f"prior: {r.prior}"] if r.prior else []
    if r.promoted_from is not None or r.resumed_at:
        notes.append(f"from #{r.promoted_from if r.promoted_from is not None else r.retry_of} at epoch {r.resumed_at}")
    if r.paused_at:
        notes.append(
            f"paused at epoch {r.paused_at}" + (f", promoted to #{promoted_to[r.number]}" if r.number in promoted_to else "")
        )
    if r.screen.get("rejected"):
        notes.append(f"screened out ({r.screen['proxy']})")
    elif r.state in (TrialState.FAIL, TrialState.WAITING) and r.reason:
        notes.append(r.reason)
    return f"  [{'; '.join(notes)}]" if notes else ""


def leaderboard(study: optuna.Study, top: int | None = None, budget: int | None = None) -> str:
    trials = study.get_trials(deepcopy=False)
    recs = R.ranked(R.records(trials))
    rows = recs[:top] if top else recs
    promoted_to = {r.promoted_from: r.number for r in recs if r.promoted_from is not None}
    header = f"{'rank':>4} {'trial':>5} {'state':<8} {'val_acc':>7} {'params':>7} {'FLOPs':>7} {'epochs':>6}  architecture"
    lines = [header]
    rank = 0
    for r in rows:
        rank += r.rankable
        acc = r.val_acc
        lines.append(
            f"{rank if r.rankable else '-':>4} {r.number:>5} {r.state.name:<8} "
            f"{'-' if acc is None else f'{acc:.4f}':>7} {si(r.params):>7} "
            f"{si(r.flops):>7} {'-' if r.epochs is None else r.epochs:>6}  {r.arch_line}{annotation(r, promoted_to)}"
        )
    if len(rows) < len(recs):
        lines.append(f"... {len(recs) - len(rows)} more (bonas trials {study.study_name} --top 0 shows all)")
    waiting = sum(r.state == TrialState.WAITING for r in recs)
    if waiting and budget is not None and sum(r.finished for r in recs) >= budget:
        lines.append(
            f"{waiting} queued trials stay WAITING: the budget of {budget} trials is spent (raise --n-trials to run them)"
        )
    return "\n".join(lines)


def describe_best(study: optuna.Study) -> str:
    recs = R.records(study.get_trials(deepcopy=False))
    if len(study.directions) > 1:
        front = R.pareto_front(recs)
        if not front:
            return f"study {study.study_name!r} has no completed trial yet"
        cost = study.metric_names[1] if study.metric_names else "cost"
        lines = [f"Pareto front of study {study.study_name!r} ({len(front)} trials; val_acc up, {cost} down):"]
        lines += [f"  trial {r.number:>4}  val_acc {r.values[0]:.4f}  {cost} {si(r.values[1]):>7}  {r.arch_line}" for r in front]
        return "\n".join(lines)
    r = R.best(recs)
    if r is None:
        return f"study {study.study_name!r} has no completed trial yet"
    knobs = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(r.train.items()))
    return "\n".join(
        [
            f"best trial {r.number} of study {study.study_name!r}: val_acc {r.values[0]:.4f}",
            f"  architecture  {r.arch_line or '?'}",
            f"  training      {knobs}",
            f"  params {si(r.params)}, FLOPs/image {si(r.flops)}, epochs {'?' if r.epochs is None else r.epochs}, "
            f"train time {r.seconds or 0:.1f}s",
        ]
    )


def in_notebook() -> bool:
    """Running in a Jupyter kernel (where tqdm's notebook bar replaces text lines)."""
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(**kwargs: Any) -> Any:
    """tqdm's bar: the notebook widget in Jupyter (tqdm.auto chooses it), the text bar on a terminal."""
    if in_notebook():
        from tqdm.auto import tqdm

        kwargs.pop("file", None)
        return tqdm(**kwargs)
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, **kwargs)


class Progress:
    """Study-level progress: a bar on a terminal or in a notebook (done/total, best, pruned), one line per trial
    elsewhere."""

    def __init__(self, study_name: str, total: int | None, enabled: bool = True, stream: Any = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.name = study_name
        self.seen: set[int] = set()
        self.enabled = enabled
        self.bar = None
        if enabled and (self.stream.isatty() or in_notebook()):
            self.bar = progress_bar(total=total, desc=study_name, unit="trial", file=self.stream)

    def update(self, study: optuna.Study) -> None:
        if not self.enabled:
            return
        recs = R.records(study.get_trials(deepcopy=False))
        done = sum(r.finished for r in recs)
        pruned = sum(r.state == TrialState.PRUNED for r in recs)
        failed = sum(r.state == TrialState.FAIL for r in recs)
        best = max((r.values[0] for r in recs if r.rankable), default=None)
        new = [r for r in recs if r.state.is_finished() and r.number not in self.seen]
        self.seen.update(r.number for r in new)
        if self.bar is not None:
            self.bar.n = min(done, self.total or done)
            self.bar.set_postfix_str(
                f"best {best:.4f}, pruned {pruned}, failed {failed}" if best is not None else f"pruned {pruned}, failed {failed}"
            )
            self.bar.refresh()
            return
        for r in sorted(new, key=lambda r: r.number):
            acc = r.val_acc
            reason = "" if r.reason == R.COMPLETED else r.reason
            print(
                f"trial {r.number:>3} {r.state.name:<8} val_acc {'-' if acc is None else f'{acc:.4f}'} "
                f"params {si(r.params)} epochs {'-' if r.epochs is None else r.epochs} "
                f"{r.seconds or 0:.1f}s | {done}{f'/{self.total}' if self.total else ''} done, best "
                f"{'-' if best is None else f'{best:.4f}'}{f' | {reason}' if reason else ''}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
