"""The ``bonas`` command: one subcommand per verb, each ``add_arguments(parser)`` + ``run(args) -> int``.

Bad input of any kind prints one line (``bonas: <what>: <why>; <how to fix>``) and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from bonas.cli.models import Export, Predict, Retrain
from bonas.cli.reading import Best, Compare, Dashboard, Report, Show, Trials
from bonas.cli.running import Run, Search, Slurm, WorkerCmd
from bonas.core.errors import EXIT_USAGE, BonasError

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
