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

import re
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bonas.commands.retrain import final_splits, format_result, save_final, train_final
from bonas.commands.search import WAIT_FOR_WORKERS_S, RunArgs, load_for_run, spawn_workers
from bonas.core import records as R
from bonas.core.errors import StudyError
from bonas.results.leaderboard import Progress
from bonas.search.space import specs_from_params
from bonas.search.worker import Worker, exit_code, prepare_worker
from bonas.study.studies import Opened
from bonas.training.callbacks import TrialDeadline

UNBOUNDED_TRIALS = 10**9  # a run is bounded by its time; [budget] n_trials gives way
FINAL_SHARE_A_TRIAL_MAY_TAKE = 0.5  # a trial running past the search's end finishes its epoch within this
REPORT_RESERVE_S = (5.0, 0.05)  # kept back for the latency, checkpoint and report: max(5 s, 5 % of the final share)


def parse_duration(text: str) -> float:
    """'90s', '45m', '1h', '1h30m', '2h15m30s' or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", t)
        if not t or parts is None or not any(parts.groups()):
            raise ValueError(f"expected a duration such as 90s, 45m, 1h or 1h30m, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if seconds < 10:
        raise ValueError(f"a budget under 10 s cannot train anything, got {text!r}")
    return seconds


class BudgetBar:
    """One bar over the whole budget (seconds), its phase and the best accuracy so far; lines when not on a terminal."""

    def __init__(self, budget: float, stream: Any = None):
        self.stream = stream or sys.stderr
        self.budget, self.start, self.phase, self.note = budget, time.monotonic(), "search", ""
        self.stop = threading.Event()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=int(budget),
                desc="budget",
                unit="s",
                file=self.stream,
                dynamic_ncols=True,
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


def search_deadline(start: float, budget: float, share: float) -> TrialDeadline:
    """The search's end: at ``share`` of the budget, at an epoch boundary; mid-epoch halfway into the final share."""
    end = start + share * budget
    return TrialDeadline(end, "this run's search time", wall=end + (1 - share) * budget * FINAL_SHARE_A_TRIAL_MAY_TAKE)


def search_in_processes(worker: Worker, config, url: str, workers: int, deadline: TrialDeadline, on_trial, verbose: bool) -> int:
    """The search share run by ``workers`` local processes (on one GPU, they share it); returns a nonzero
    exit code when one of them failed or was interrupted."""
    procs = spawn_workers(config, url, workers, verbose, n_trials=UNBOUNDED_TRIALS, timeout=0, deadline=deadline)
    try:
        while any(p.is_alive() for p in procs):
            on_trial(worker.study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=WAIT_FOR_WORKERS_S)
        return 130
    codes = [p.exitcode for p in procs]
    if any(codes):
        print(f"bonas: search workers exited with codes {codes}", file=sys.stderr)
        return max(c if c > 0 else 128 - c for c in codes if c)
    return 0


def choose(recs: list[R.TrialRecord]) -> R.TrialRecord | None:
    """The trial whose network trains to the end: the best rankable one; with none yet (a budget too small for
    one whole trial), the one with the best validation accuracy after the epochs it did train."""
    best = R.best(recs)
    if best is not None:
        return best
    trained = [r for r in recs if r.trained and r.val_acc is not None and r.feasible]
    return max(trained, key=lambda r: (r.val_acc, -r.number), default=None)


def run(
    a: RunArgs, budget: float, share: float | None = None, out: str | None = None, report_dir: str | None = None, workers: int = 1
) -> int:
    config, url = load_for_run(a)
    share = share if share is not None else config.final.search_share
    splits = prepare_worker(config, url, a.verbose)
    worker = Worker(config, url, splits, verbose=a.verbose)
    study = worker.study
    import torch.utils.benchmark  # noqa: F401  (the latency timer's import, ~2 s on a CPU: before the clock starts)

    bar = BudgetBar(budget)
    start = bar.start
    print(
        f"bonas run {config.name!r}: budget {budget:.0f}s = search {share * budget:.0f}s + final training "
        f"{(1 - share) * budget:.0f}s, {config.dataset}, storage {url.split('://')[0]}",
        flush=True,
    )
    before = len(study.get_trials(deepcopy=False))
    progress = Progress(config.name, None, enabled=bar.bar is None)

    def on_trial(s) -> None:
        progress.update(s)
        best = R.best(R.records(s.get_trials(deepcopy=False)))
        bar.set("search", f"{len(s.get_trials(deepcopy=False)) - before} trials, best {best.values[0]:.4f}" if best else "")

    try:
        if workers > 1:
            code = search_in_processes(worker, config, url, workers, search_deadline(start, budget, share), on_trial, a.verbose)
            if code:
                return code
        else:
            summary = worker.run(UNBOUNDED_TRIALS, 0, on_trial=on_trial, deadline=search_deadline(start, budget, share))
            if summary.signum is not None:
                return exit_code(summary)
        search_s = time.monotonic() - start
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
        final_start = time.monotonic()
        reserve = max(REPORT_RESERVE_S[0], REPORT_RESERVE_S[1] * (start + budget - final_start))
        bar.set("final training", f"trial {best.number} ({best.arch_line}) on the whole training split")
        fsplits = final_splits(config)
        arch, train = specs_from_params(best.trial.params, config.space, config.training, config.data, fsplits.input_shape)
        final = train_final(
            config,
            fsplits,
            arch,
            train,
            best.seed if best.seed is not None else config.seed,
            verbose=a.verbose,
            deadline=start + budget - reserve,
            on_epoch=lambda e: bar.set("final training", f"epoch {e}, trial {best.number}"),
        )
        final_s = time.monotonic() - final_start
        bar.set("writing", "checkpoint and report")
        opened = Opened(study, config, url)
        result = save_final(opened, best.trial, final, fsplits, out)
        from bonas.results.report import write_report

        index = write_report(study, Path(report_dir or f"reports/{study.study_name}"))
    finally:
        bar.close()
        progress.close()
    total = time.monotonic() - start
    record = RunRecord(
        budget,
        share,
        round(search_s, 1),
        round(final_s, 1),
        round(total, 1),
        len(study.get_trials(deepcopy=False)) - before,
        best.number,
        best.val_acc,
        result["test_acc"],
        result["parameters"],
        result["latency_ms_batch1"],
        result["epochs"],
        result["checkpoint"],
        str(index),
    )
    runs = sum(k.startswith(R.RUN_PREFIX) for k in study.user_attrs)
    study.set_user_attr(f"{R.RUN_PREFIX}{runs}", asdict(record))
    print(format_result(result))
    print(
        f"run: {total:.0f}s of a {budget:.0f}s budget (search {search_s:.0f}s, {record.trials_this_run} trials; final training "
        f"{final_s:.0f}s, {result['epochs']} epochs); test accuracy {result['test_acc']:.4f}"
    )
    print(
        f"written: {result['checkpoint']} (and a study artifact), {index}, the study's records bonas:retrain:{best.number} "
        f"and {R.RUN_PREFIX}{runs}"
    )
    return 0
