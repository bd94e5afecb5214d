"""The commands that run trials: search, run, worker, slurm."""

from __future__ import annotations

import argparse

from bonas.cli import argtypes
from bonas.cli.options import add_budget, add_storage, add_study


def _run_args(args: argparse.Namespace):
    from bonas.commands.search import RunArgs

    return RunArgs(args.config, args.n_trials, args.timeout, args.data_dir, args.threads, args.storage, args.verbose)


class Search:
    help = "run (or resume) a study until its budget is spent"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p, "config")
        add_budget(p)
        p.add_argument(
            "--workers", type=argtypes.positive_int, default=1, help="local worker processes sharing the study (default 1)"
        )
        p.add_argument("--threads", type=argtypes.positive_int, help="torch threads per worker (default: CPU cores / workers)")
        add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true", help="Lightning's progress bars and logs, Optuna's trial logs")
        p.add_argument("--top", type=int, default=10, help="leaderboard rows printed at the end (default 10)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.search import search

        return search(_run_args(args), args.workers, args.top)


class Run:
    help = "from a time budget to a tested model: search, then train the winner on the whole training split, test it once"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p, "config")
        p.add_argument(
            "--budget", type=argtypes.duration, required=True, help="wall-clock budget after start-up: 90s, 45m, 1h, 1h30m"
        )
        p.add_argument(
            "--search-share", type=argtypes.share, help="share of the budget spent searching (default: [final] search_share)"
        )
        p.add_argument(
            "--workers", type=argtypes.positive_int, default=1, help="local worker processes for the search (default 1)"
        )
        p.add_argument("--threads", type=argtypes.positive_int, help="torch threads (default: all CPU cores)")
        p.add_argument("--data-dir", help="where data sets are found or downloaded (default $BONAS_DATA_DIR or ~/.cache/bonas)")
        p.add_argument("--out", help="checkpoint path (default checkpoints/<study>-trial<N>.pt)")
        p.add_argument("--report", help="report folder (default reports/<study>)")
        add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.run import run
        from bonas.commands.search import RunArgs

        a = RunArgs(args.config, data_dir=args.data_dir, threads=args.threads, storage=args.storage, verbose=args.verbose)
        return run(a, args.budget, args.search_share, args.out, args.report, args.workers)


class WorkerCmd:
    help = "run one worker on a shared study (start one per GPU / machine)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p, "config")
        add_budget(p)
        p.add_argument("--index", type=int, help="this worker's index, seeds its sampler (default: from host and pid)")
        p.add_argument("--threads", type=argtypes.positive_int, help="torch threads (default: all CPU cores)")
        add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.search import worker_command

        return worker_command(_run_args(args), args.index)


class Slurm:
    help = "submit N workers on a shared study as a Slurm job array (PostgreSQL or MySQL storage)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p, "config")
        p.add_argument("--workers", type=argtypes.positive_int, required=True, help="array tasks, one bonas worker each")
        p.add_argument(
            "--gpus-per-worker", type=int, choices=(0, 1), default=0, help="0 or 1: a worker trains on one device (default 0)"
        )
        p.add_argument(
            "--cpus-per-worker",
            type=argtypes.positive_int,
            default=1,
            help="cores per task, also the worker's torch threads (default 1)",
        )
        p.add_argument(
            "--time",
            type=argtypes.slurm_time,
            help="time limit per task (Slurm format: 90, 2:00:00, 1-12:00:00); default the partition's",
        )
        p.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
        add_storage(p)
        p.add_argument(
            "--requeue",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="let Slurm requeue a task after node failure or preemption; it rejoins the study (default: yes)",
        )
        p.add_argument(
            "--dry-run", action="store_true", help="print the job script; check nothing remote, write and submit nothing"
        )

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.slurm import slurm_command

        return slurm_command(
            args.config,
            args.workers,
            args.cpus_per_worker,
            args.gpus_per_worker,
            args.time,
            args.partition,
            args.storage,
            args.requeue,
            args.dry_run,
        )
