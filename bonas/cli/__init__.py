"""The ``bonas`` command: one subcommand per verb, each ``add_arguments(parser)`` + ``run(args) -> int``.

Bad input of any kind prints one line (``bonas: <what>: <why>; <how to fix>``) and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from bonas.cli import argtypes
from bonas.core.errors import EXIT_USAGE, BonasError, UsageError


def _add_study(p: argparse.ArgumentParser, name: str = "study") -> None:
    p.add_argument(name, help="a study config (.toml) or the name of studies/<name>.toml")


def _add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-trials", type=argtypes.positive_int, help="the study's total trial budget (overrides the config)")
    p.add_argument("--timeout", type=argtypes.seconds, help="the study's total time budget in seconds (overrides the config)")
    p.add_argument("--data-dir", help="where data sets are found or downloaded (default $BONAS_DATA_DIR or ~/.cache/bonas)")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL; overrides the config and $BONAS_STORAGE")


# --- search / worker -------------------------------------------------------------------------------


def _run_args(args: argparse.Namespace):
    from bonas.commands.search import RunArgs

    return RunArgs(args.config, args.n_trials, args.timeout, args.data_dir, args.threads, args.storage, args.verbose)


class Search:
    help = "run (or resume) a study until its budget is spent"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p, "config")
        _add_budget(p)
        p.add_argument(
            "--workers", type=argtypes.positive_int, default=1, help="local worker processes sharing the study (default 1)"
        )
        p.add_argument("--threads", type=argtypes.positive_int, help="torch threads per worker (default: CPU cores / workers)")
        _add_storage(p)
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
        _add_study(p, "config")
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
        _add_storage(p)
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
        _add_study(p, "config")
        _add_budget(p)
        p.add_argument("--index", type=int, help="this worker's index, seeds its sampler (default: from host and pid)")
        p.add_argument("--threads", type=argtypes.positive_int, help="torch threads (default: all CPU cores)")
        _add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.search import worker_command

        return worker_command(_run_args(args), args.index)


class Slurm:
    help = "submit N workers on a shared study as a Slurm job array (PostgreSQL or MySQL storage)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p, "config")
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
        _add_storage(p)
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


# --- reading studies ------------------------------------------------------------------------------


class Best:
    help = "print the best trial of a study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.results.leaderboard import describe_best
        from bonas.study.studies import open_existing

        study = open_existing(args.study, args.storage).study
        print(describe_best(study))
        return 0


class Trials:
    help = "print the leaderboard of a study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--top", type=int, default=0, help="rows to print (default 0: all)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.core.records import state_counts
        from bonas.results.leaderboard import leaderboard
        from bonas.study.studies import open_existing

        opened = open_existing(args.study, args.storage)
        trials = opened.study.get_trials(deepcopy=False)
        print(leaderboard(opened.study, top=args.top or None, budget=opened.config.budget.n_trials))
        print(f"\n{len(trials)} trials: {state_counts(trials)}")
        return 0


class Show:
    help = "rebuild a trial's network from its stored params and print its layers, shapes, params and FLOPs"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("trial", type=int, help="trial number (see bonas trials)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.show import show
        from bonas.study.studies import open_existing

        print(show(open_existing(args.study, args.storage), args.trial))
        return 0


class Dashboard:
    help = "browse a study in optuna-dashboard (notes, artifacts), on 127.0.0.1 by default"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
        p.add_argument(
            "--allow-remote", action="store_true", help="allow a non-loopback --host (the dashboard has no authentication)"
        )
        _add_storage(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no request log")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.results.dashboard import run_dashboard
        from bonas.study.studies import open_existing

        run_dashboard(open_existing(args.study, args.storage), args.host, args.port, args.allow_remote, args.quiet)
        return 0


class Report:
    help = "write reports/<study>/index.html, PNG figures and trials.csv"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--out", help="output folder (default reports/<study>)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from bonas.results.report import write_report
        from bonas.study.studies import open_existing

        study = open_existing(args.study, args.storage).study
        index = write_report(study, Path(args.out or f"reports/{study.study_name}"))
        print(f"report: {index}  (figures and trials.csv beside it)")
        return 0


class Compare:
    help = "overlay the best-so-far curves of several studies (e.g. TPE against random search)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("studies", nargs="+", help="study configs or names")
        p.add_argument("--out", help="PNG to write (default reports/compare-<names>.png)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from bonas.results.report import compare
        from bonas.study.studies import open_existing

        if len(args.studies) < 2:
            raise UsageError("compare needs at least two studies")
        studies = [open_existing(s).study for s in args.studies]
        out = Path(args.out or f"reports/compare-{'-vs-'.join(s.study_name for s in studies)}.png")
        path, table = compare(studies, out)
        print(table)
        print(f"\nfigure: {path}")
        return 0


class Retrain:
    help = "retrain a trial (default: the best) on the whole training split, test it once, save a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--trial", type=int, help="trial number (default: the best completed trial)")
        p.add_argument("--epochs", type=argtypes.positive_int, help="epochs (default: 3x the search's epochs per trial)")
        p.add_argument(
            "--search-data", action="store_true", help="train on the search's train/val subsets, not the whole training split"
        )
        p.add_argument("--full-data", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
        p.add_argument("--out", help="checkpoint path (default checkpoints/<study>-trial<N>.pt)")
        p.add_argument("--data-dir", help="where data sets are found or downloaded")
        _add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.retrain import format_result, retrain
        from bonas.study.studies import open_existing
        from bonas.training.module import quiet_lightning, set_threads

        opened = open_existing(args.study, args.storage)
        if args.data_dir:
            opened.config.data.dir = args.data_dir
        set_threads()
        quiet_lightning(args.verbose)
        print(format_result(retrain(opened, args.trial, args.epochs, args.search_data, args.out, args.verbose)))
        return 0


class Export:
    help = "export a checkpoint as TorchScript, torch.export (.pt2) or ONNX; reloads it and checks its outputs"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a checkpoint from bonas retrain (or a kept trial's weights artifact)")
        p.add_argument("--format", required=True, choices=["torchscript", "exported", "onnx"])
        p.add_argument("--out", help="output path (default: beside the checkpoint)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.model.export import export

        path, diff = export(args.checkpoint, args.format, args.out)
        print(f"{args.format}: {path} (reloaded; max |difference| from the checkpoint {diff:.2e}); input: float images in [0, 1]")
        return 0


class Predict:
    help = "classify image files with a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint")
        p.add_argument("images", nargs="+")
        p.add_argument("--top", type=argtypes.positive_int, default=3, help="classes shown per image (default 3)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.model.export import predict

        for path, ranking in predict(args.checkpoint, args.images, args.top):
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranking))
        return 0


COMMANDS = {
    "search": Search,
    "run": Run,
    "worker": WorkerCmd,
    "slurm": Slurm,
    "best": Best,
    "trials": Trials,
    "show": Show,
    "dashboard": Dashboard,
    "report": Report,
    "compare": Compare,
    "retrain": Retrain,
    "export": Export,
    "predict": Predict,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonas", description="Bayesian-optimisation neural architecture search (Optuna + Lightning)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BonasError as err:
        print(f"bonas: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bonas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bonas trials x | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
