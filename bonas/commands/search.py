"""Running a study from the command line: ``bonas search`` (one worker here, or N local worker processes
supervised here) and ``bonas worker`` (one more worker on a shared study), with progress and results.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass

from bonas.commands.processes import spawn_workers, supervise
from bonas.config import StudyConfig, load_config
from bonas.core.records import state_counts
from bonas.nas.choices import check_choices
from bonas.nas.worker import RunSummary, Stop, Worker, exit_code, open_study, prepare_worker
from bonas.results.leaderboard import Progress, describe_best, leaderboard
from bonas.study.budget import Verdict, budget_status
from bonas.study.studies import find_config, warm_start_params
from bonas.study.urls import check_storage_url, check_writable, describe_url, resolve_storage, shell_url


@dataclass
class RunArgs:
    config: str
    n_trials: int | None = None
    timeout: float | None = None
    data_dir: str | None = None
    threads: int | None = None
    storage: str | None = None
    verbose: bool = False


def load_for_run(a: RunArgs) -> tuple[StudyConfig, str]:
    """Config + overrides + storage URL, all validated before anything is written."""
    config = load_config(find_config(a.config))
    check_choices(config)
    if a.n_trials is not None:
        config.budget.n_trials = a.n_trials
    if a.timeout is not None:
        config.budget.timeout = a.timeout
    if a.data_dir:
        config.data.dir = a.data_dir
    if a.threads:
        os.environ["BONAS_THREADS"] = str(a.threads)  # inherited by spawned workers
    url = resolve_storage(config, a.storage)
    check_storage_url(url, "--storage" if a.storage else config.path)
    check_writable(url)
    warm_start_params(config)  # a broken warm-start file or missing source study fails here, before anything exists
    return config, url


def print_results(study, config: StudyConfig, storage_override: str | None, top: int) -> None:
    print()
    print(leaderboard(study, top=top, budget=config.budget.n_trials))
    print()
    print(describe_best(study))
    print()
    print(f"browse: bonas dashboard {config.path}   (or: optuna-dashboard {shell_url(config, storage_override)})")


def say_finished(config: StudyConfig, reason: str) -> None:
    print(f"study {config.name!r} is finished ({reason}); raise budget.n_trials or pass --n-trials to add more")


def search(a: RunArgs, workers: int = 1, top: int = 10) -> int:
    """`bonas search`: run the study to its budget, here or in ``workers`` local processes."""
    config, url = load_for_run(a)
    n_trials, timeout = config.budget.n_trials, config.budget.timeout
    splits = prepare_worker(config, url, a.verbose, workers)
    if workers > 1:
        return _search_parallel(config, url, splits, a, workers, top)
    worker = Worker(config, url, splits, verbose=a.verbose)
    status = budget_status(worker.study.get_trials(deepcopy=False), n_trials, timeout)
    if status.verdict == Verdict.DONE:  # WAIT: a running trial may belong to a dead worker; the loop reaps it
        say_finished(config, status.describe())
        print_results(worker.study, config, a.storage, top)
        return 0
    print(
        f"study {config.name!r}: {config.dataset}, {config.sampler.name} sampler, {config.pruner.name} pruner, "
        f"budget {n_trials} trials{f' / {timeout:g}s' if timeout else ''}, storage {describe_url(url)}",
        flush=True,
    )
    summary = _run_with_progress(worker, config, n_trials, timeout)
    if summary.stop == Stop.INTERRUPTED:
        return exit_code(summary)
    if summary.stop == Stop.FAILURES:
        print(leaderboard(worker.study, top=top))
        return exit_code(summary)
    print_results(worker.study, config, a.storage, top)
    return 0


def _run_with_progress(worker: Worker, config: StudyConfig, n_trials: int, timeout: float) -> RunSummary:
    progress = Progress(config.name, n_trials)
    progress.update(worker.study)
    start = time.perf_counter()
    try:
        summary = worker.run(n_trials, timeout, on_trial=progress.update)
    finally:
        progress.close()
    print(
        f"{summary.describe()} ({summary.finished} trials finished in this run, {time.perf_counter() - start:.0f}s; "
        f"states {state_counts(worker.study.get_trials(deepcopy=False))})"
    )
    return summary


def worker_command(a: RunArgs, index: int | None) -> int:
    """`bonas worker`: one more worker on a shared study (another GPU, another machine, a scheduler job)."""
    config, url = load_for_run(a)
    splits = prepare_worker(config, url, a.verbose)
    # Workers on several machines must not share a sampler seed, or they propose the same trials.
    index = index if index is not None else zlib.crc32(f"{os.uname().nodename}:{os.getpid()}".encode()) % 100_000
    worker = Worker(config, url, splits, index=index, seed=config.seed + 1000 * index, verbose=a.verbose)
    progress = Progress(config.name, config.budget.n_trials)
    try:
        summary = worker.run(config.budget.n_trials, config.budget.timeout, on_trial=progress.update)
    finally:
        progress.close()
    print(
        f"worker {worker.name}: {summary.describe()} ({summary.finished} finished, {summary.failed} failed, "
        f"{summary.dropped} dropped, {summary.reaped} reaped)"
    )
    return exit_code(summary)


def _search_parallel(config: StudyConfig, url: str, splits, a: RunArgs, n_workers: int, top: int) -> int:
    # The study (and its schema) exists before any worker starts: N workers never race to create it.
    _, _, study = open_study(config, url, splits.describe())
    status = budget_status(study.get_trials(deepcopy=False), config.budget.n_trials, config.budget.timeout)
    if status.verdict == Verdict.DONE:
        say_finished(config, status.describe())
        print_results(study, config, a.storage, top)
        return 0
    print(f"study {config.name!r}: {n_workers} workers, budget {config.budget.n_trials} trials", flush=True)
    procs = spawn_workers(config, url, n_workers, a.verbose)
    progress = Progress(config.name, config.budget.n_trials)
    try:
        code = supervise(procs, lambda: progress.update(study))
    finally:
        progress.update(study)
        progress.close()
    if code:
        return code
    print_results(study, config, a.storage, top)
    return 0
