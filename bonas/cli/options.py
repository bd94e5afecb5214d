"""Flags several commands share, declared once."""

from __future__ import annotations

import argparse

from bonas.cli import argtypes


def add_study(p: argparse.ArgumentParser, name: str = "study") -> None:
    p.add_argument(name, help="a study config (.toml) or the name of studies/<name>.toml")


def add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-trials", type=argtypes.positive_int, help="the study's total trial budget (overrides the config)")
    p.add_argument("--timeout", type=argtypes.seconds, help="the study's total time budget in seconds (overrides the config)")
    p.add_argument("--data-dir", help="where data sets are found or downloaded (default $BONAS_DATA_DIR or ~/.cache/bonas)")


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL; overrides the config and $BONAS_STORAGE")
