"""The commands that read a study: best, trials, show, dashboard, report, compare (no training stack, but show's)."""

from __future__ import annotations

import argparse

from bonas.cli.options import add_storage, add_study
from bonas.core.errors import UsageError


class Best:
    help = "print the best trial of a study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p)
        add_storage(p)

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
        add_study(p)
        p.add_argument("--top", type=int, default=0, help="rows to print (default 0: all)")
        add_storage(p)

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
        add_study(p)
        p.add_argument("trial", type=int, help="trial number (see bonas trials)")
        add_storage(p)

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
        add_study(p)
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
        p.add_argument(
            "--allow-remote", action="store_true", help="allow a non-loopback --host (the dashboard has no authentication)"
        )
        add_storage(p)
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
        add_study(p)
        p.add_argument("--out", help="output folder (default reports/<study>)")
        add_storage(p)

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
