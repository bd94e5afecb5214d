"""Local worker processes: spawned (never forked with open database connections), one GPU each when there are
several, and supervised until they end, for ``bonas search --workers N`` and ``bonas run --workers N``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable

import torch

from bonas.config import StudyConfig
from bonas.core.errors import BonasError
from bonas.nas.worker import Worker, exit_code, prepare_worker
from bonas.training.callbacks import TrialDeadline

WAIT_FOR_WORKERS_S = 120  # after Ctrl-C: how long the workers get to fail and requeue their trials
POLL_S = 1.0


def _worker_main(
    config: StudyConfig,
    url: str,
    index: int,
    n_workers: int,
    n_trials: int,
    timeout: float,
    verbose: bool,
    gpu: int | None,
    deadline: TrialDeadline | None = None,
) -> None:
    """Entry point of a spawned worker process."""
    import logging

    if gpu is not None:  # before CUDA initialises in this process: one worker per GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=f"[w{index}] %(message)s")
    try:
        splits = prepare_worker(config, url, verbose, n_workers)
        worker = Worker(config, url, splits, index=index, seed=config.seed + 1000 * index, verbose=verbose)
        summary = worker.run(n_trials, timeout, deadline=deadline)  # time.monotonic() is one clock for every process
    except BonasError as err:
        print(f"bonas worker {index}: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(exit_code(summary))


def placement(index: int, n_workers: int, n_gpus: int) -> tuple[int | None, int]:
    """(the GPU worker ``index`` gets, or None: all of them see the same devices; how many workers split the
    CPU cores). Several GPUs: one each, round robin. One GPU: every worker shares it (small networks leave most
    of a large GPU idle). No GPU: the workers split the cores."""
    gpu = index % n_gpus if n_gpus > 1 else None
    return gpu, n_workers if n_gpus == 0 else 1


def spawn_workers(
    config: StudyConfig,
    url: str,
    n_workers: int,
    verbose: bool,
    n_trials: int | None = None,
    timeout: float | None = None,
    deadline: TrialDeadline | None = None,
) -> list[multiprocessing.Process]:
    """Start local worker processes: spawn (no database engine crosses a fork), one GPU each when there are
    several (with one GPU, they share it: small networks leave most of a large GPU idle)."""
    n_trials = config.budget.n_trials if n_trials is None else n_trials
    timeout = config.budget.timeout if timeout is None else timeout
    ctx = multiprocessing.get_context("spawn")
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    procs = []
    for i in range(n_workers):
        gpu, sharing_cores = placement(i, n_workers, n_gpus)
        args = (config, url, i, sharing_cores, n_trials, timeout, verbose, gpu, deadline)
        p = ctx.Process(target=_worker_main, args=args, name=f"bonas-worker-{i}")
        p.start()
        procs.append(p)
    return procs


def supervise(procs: list[multiprocessing.Process], on_tick: Callable[[], None]) -> int:
    """Wait for the workers, calling ``on_tick`` every second; returns the exit code of the whole: 0, or the worst
    worker's (a worker killed by signal N: 128 + N, as a shell says). SIGTERM to this process reaches every
    worker (each ends its trial as FAIL, requeues it, exits); Ctrl-C reaches them anyway (one process group),
    and they get WAIT_FOR_WORKERS_S to finish up."""
    previous = signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs if p.is_alive()])
    try:
        while any(p.is_alive() for p in procs):
            on_tick()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=WAIT_FOR_WORKERS_S)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [p.exitcode for p in procs]
    if any(codes):
        print(f"bonas: workers exited with codes {codes}", file=sys.stderr)
        return max(c if c > 0 else 128 - c for c in codes if c)
    return 0
