"""`bonas run CONFIG --budget 1h`: from a wall-clock budget to a tested model, in one command.

The budget's clock starts once the data is loaded (start-up is not part of it) and is split in two:

1. the search, for ``[final] search_share`` of it, on the study's own database (so a second run with a
   larger budget goes on where the first stopped): ``[budget] n_trials`` and ``timeout`` give way to the
   run's time; a trial still running when the share ends stops at its next epoch boundary, or mid-epoch
   once half the final training's time has gone to it (so the final training always has the other half),
   and is requeued (it goes on from its state in a later run);
2. the final training: the best trial's architecture and knobs on the whole training split, with the
   study's recipe, until the budget's deadline (its learning-rate schedule follows the clock, so it has
   annealed when the deadline stops it, however many epochs that is), tested once on the test split.

It writes the checkpoint (file and study artifact), the study's retrain record and a record of the run
(``bonas:run:<k>``), and reports/<study>/; one progress bar covers the whole budget.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bonas.commands.processes import spawn_workers, supervise
from bonas.commands.retrain import format_result, save_final
from bonas.commands.search import RunArgs, load_for_run
from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.core.errors import StudyError
from bonas.data.splits import Splits
from bonas.nas.race import finalists, race, worth_racing
from bonas.nas.space import specs_from_params
from bonas.nas.worker import Worker, exit_code, prepare_worker
from bonas.results.leaderboard import Progress, in_notebook, progress_bar
from bonas.study.studies import Opened
from bonas.training.callbacks import TrialDeadline
from bonas.training.final import Final, final_rows, final_splits, finish, on_device
from bonas.training.session import Session

UNBOUNDED_TRIALS = 10**9  # a run is bounded by its time; [budget] n_trials gives way
FINAL_SHARE_A_TRIAL_MAY_TAKE = 0.5  # a trial running past the search's end finishes its epoch within this
REPORT_RESERVE_S = (5.0, 0.05)  # kept back for the latency, checkpoint and report: max(5 s, 5 % of the final share)


class BudgetBar:
    """One bar over the whole budget (seconds), its phase and the best accuracy so far; lines when not on a terminal."""

    def __init__(self, budget: float, start: float | None = None, stream: Any = None):
        self.stream = stream or sys.stderr
        self.budget, self.start, self.phase, self.note = budget, start or time.monotonic(), "search", ""
        self.stop = threading.Event()
        self.bar = None
        if self.stream.isatty() or in_notebook():
            self.bar = progress_bar(
                total=int(budget),
                desc="budget",
                unit="s",
                file=self.stream,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s {postfix}",
            )
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while not self.stop.wait(1.0):
            self.bar.n = min(self.budget, time.monotonic() - self.start)
            self.bar.set_postfix_str(f"{self.phase}{': ' + self.note if self.note else ''}")

    def set(self, phase: str, note: str = "") -> None:
        changed = phase != self.phase
        self.phase, self.note = phase, note
        if self.bar is None and changed:
            print(
                f"[{time.monotonic() - self.start:6.0f}s of {self.budget:.0f}s] {phase}{': ' + note if note else ''}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        self.stop.set()
        if self.bar is not None:
            self.bar.n = min(self.budget, time.monotonic() - self.start)
            self.bar.refresh()
            self.bar.close()


@dataclass
class RunRecord:
    """What a `bonas run` bought with its budget (stored on the study as ``bonas:run:<k>``)."""

    budget_s: float
    search_share: float
    search_s: float
    final_s: float
    total_s: float
    trials_this_run: int
    best_trial: int
    best_val_acc: float
    test_acc: float
    params: int
    latency_ms_batch1: float
    final_epochs: int
    checkpoint: str
    report: str
    arch: str = ""


class RunStopped(Exception):
    """The search was interrupted (SIGTERM, Ctrl-C) or a worker process failed: no model; ``code`` is the exit code."""

    def __init__(self, code: int):
        super().__init__(f"stopped with exit code {code}")
        self.code = code


@dataclass(frozen=True)
class Clock:
    """A run's wall clock: ``budget`` seconds from ``start`` (time.monotonic()), the first ``share`` searching."""

    start: float
    budget: float
    share: float

    @property
    def end(self) -> float:
        return self.start + self.budget

    def search_deadline(self) -> TrialDeadline:
        """The search's end: at ``share`` of the budget, at an epoch boundary; mid-epoch halfway into the final share."""
        end = self.start + self.share * self.budget
        wall = end + (1 - self.share) * self.budget * FINAL_SHARE_A_TRIAL_MAY_TAKE
        return TrialDeadline(end, "this run's search time", wall=wall)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def choose(recs: list[R.TrialRecord]) -> R.TrialRecord | None:
    """The trial whose network trains to the end: the best rankable one; with none yet (a budget too small for
    one whole trial), the one with the best validation accuracy after the epochs it did train."""
    best = R.best(recs)
    if best is not None:
        return best
    trained = [r for r in recs if r.trained and r.val_acc is not None and r.feasible]
    return max(trained, key=lambda r: (r.val_acc, -r.number), default=None)


def search_phase(worker: Worker, url: str, workers: int, clock: Clock, bar: BudgetBar, verbose: bool) -> None:
    """The search share, in this process or in ``workers`` local processes (on one GPU, they share it)."""
    study, config = worker.study, worker.config
    before = len(study.get_trials(deepcopy=False))
    progress = Progress(config.name, None, enabled=bar.bar is None)

    def on_trial(s) -> None:
        progress.update(s)
        best = R.best(R.records(s.get_trials(deepcopy=False)))
        bar.set("search", f"{len(s.get_trials(deepcopy=False)) - before} trials, best {best.values[0]:.4f}" if best else "")

    try:
        if workers > 1:
            procs = spawn_workers(config, url, workers, verbose, UNBOUNDED_TRIALS, 0, clock.search_deadline())
            code = supervise(procs, lambda: on_trial(study))
        else:
            summary = worker.run(UNBOUNDED_TRIALS, 0, on_trial=on_trial, deadline=clock.search_deadline())
            code = exit_code(summary) if summary.signum is not None else 0  # failed trials in a row: the best so far goes on
    finally:
        progress.close()
    if code:
        raise RunStopped(code)


def chosen(study, config: StudyConfig, search_s: float) -> R.TrialRecord:
    best = choose(R.records(study.get_trials(deepcopy=False)))
    if best is None:
        raise StudyError(
            f"no trial of study {config.name!r} trained an epoch in the search's {search_s:.0f}s; "
            "raise --budget or the search share"
        )
    if not best.rankable:
        epochs = len(best.trial.intermediate_values) or len(best.curve)
        print(
            f"no trial completed in the search's {search_s:.0f}s: the final model is trial {best.number}'s network, "
            f"the best after its {epochs} epochs (val_acc {best.val_acc:.4f}); a larger --budget searches further",
            flush=True,
        )
    return best


def final_phase(
    config: StudyConfig, study, best: R.TrialRecord, clock: Clock, bar: BudgetBar, verbose: bool
) -> tuple[Final, Splits, R.TrialRecord]:
    """A race of the search's finalists (bonas.nas.race, when ``[final] finalists`` > 1 and the search completed that
    many), then the survivor (else the best trial) on the whole training split until the budget's deadline, less
    the time kept for writing; returns the trained model, its data and the trial it is."""
    reserve = max(REPORT_RESERVE_S[0], REPORT_RESERVE_S[1] * (clock.end - time.monotonic()))
    deadline = clock.end - reserve
    splits = on_device(final_splits(config))
    rows = final_rows(config, splits)
    entrants = finalists(R.records(study.get_trials(deepcopy=False)), config.final.finalists)
    log: list[dict] = []
    race_s = config.final.race_share * (deadline - time.monotonic())
    if worth_racing(len(entrants), race_s):
        bar.set("race", f"{len(entrants)} finalists: " + ", ".join(f"#{r.number}" for r in entrants))
        until = time.monotonic() + race_s
        shown = lambda k, alive: bar.set("race", f"round {k}: " + ", ".join(f"#{e.record.number}" for e in alive))  # noqa: E731
        winner, log = race(config, splits, entrants, until, deadline, verbose, on_round=shown)
        best, session = winner.record, winner.session
    else:
        arch, train = specs_from_params(best.trial.params, config.space, config.training, config.data, splits.input_shape)
        session = Session(config, splits, arch, train, best.seed if best.seed is not None else config.seed, rows)
    bar.set("final training", f"trial {best.number} ({best.arch_line}) on the whole training split")
    on_epoch = lambda e: bar.set("final training", f"epoch {e}, trial {best.number}")  # noqa: E731
    session.stretch(rows, deadline, test_images=len(splits.test), verbose=verbose, on_epoch=on_epoch, keep_state=False)
    return finish(session, rows, until_deadline=True, race=log), splits, best


def run_budget(
    config: StudyConfig,
    url: str,
    worker: Worker,
    budget: float,
    share: float | None = None,
    out: str | None = None,
    report_dir: str | None = None,
    workers: int = 1,
    verbose: bool = False,
) -> RunRecord:
    """Search for ``share`` of ``budget`` seconds, train the winner until the budget's end, test it, write it all."""
    import torch.utils.benchmark  # noqa: F401  (the latency timer's import, ~2 s on a CPU: before the clock starts)

    clock = Clock(time.monotonic(), budget, config.final.search_share if share is None else share)
    bar = BudgetBar(budget, start=clock.start)
    study = worker.study
    print(
        f"bonas run {config.name!r}: budget {budget:.0f}s = search {clock.share * budget:.0f}s + final training "
        f"{(1 - clock.share) * budget:.0f}s, {config.dataset}, storage {url.split('://')[0]}",
        flush=True,
    )
    before = len(study.get_trials(deepcopy=False))
    try:
        search_phase(worker, url, workers, clock, bar, verbose)
        worker.objective.splits.drop_pooled()  # the final training pools its own splits
        search_s = clock.elapsed()
        best = chosen(study, config, search_s)
        final, splits, best = final_phase(config, study, best, clock, bar, verbose)
        final_s = clock.elapsed() - search_s
        bar.set("writing", "checkpoint and report")
        result = save_final(Opened(study, config, url), best.trial, final, splits, out)
        from bonas.results.report import write_report

        index = write_report(study, Path(report_dir or f"reports/{study.study_name}"))
    finally:
        bar.close()
    record = RunRecord(
        budget, clock.share, round(search_s, 1), round(final_s, 1), round(clock.elapsed(), 1),
        len(study.get_trials(deepcopy=False)) - before, best.number, best.val_acc, result["test_acc"], result["parameters"],
        result["latency_ms_batch1"], result["epochs"], result["checkpoint"], str(index), best.arch_line,
    )  # fmt: skip
    runs = sum(k.startswith(R.RUN_PREFIX) for k in study.user_attrs)
    study.set_user_attr(f"{R.RUN_PREFIX}{runs}", asdict(record))
    print(format_result(result))
    print(
        f"run: {record.total_s:.0f}s of a {budget:.0f}s budget (search {search_s:.0f}s, {record.trials_this_run} trials; "
        f"final training {final_s:.0f}s, {result['epochs']} epochs); test accuracy {result['test_acc']:.4f}"
    )
    print(
        f"written: {result['checkpoint']} (and a study artifact), {index}, the study's records bonas:retrain:{best.number} "
        f"and {R.RUN_PREFIX}{runs}"
    )
    return record


def run(
    a: RunArgs, budget: float, share: float | None = None, out: str | None = None, report_dir: str | None = None, workers: int = 1
) -> int:
    """`bonas run`: the exit code."""
    config, url = load_for_run(a)
    worker = Worker(config, url, prepare_worker(config, url, a.verbose), verbose=a.verbose)
    try:
        run_budget(config, url, worker, budget, share, out, report_dir, workers, a.verbose)
    except RunStopped as stopped:
        return stopped.code
    return 0
