"""The README's commands, end to end: what it documents exists and works."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bonas.cli import build_parser
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def readme_commands(prefix: str) -> list[str]:
    """Indented command lines of the README starting with ``prefix`` (comments stripped)."""
    lines = re.findall(rf"^    ({prefix} [^\n]*)$", README, flags=re.M)
    return [line.split("  #")[0].strip() for line in lines]


def test_every_documented_bonas_subcommand_exists():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    documented = {cmd.split()[1] for cmd in readme_commands("bonas")}
    assert documented, "the README documents bonas commands"
    assert documented <= set(subcommands), documented - set(subcommands)


def test_every_documented_make_target_exists():
    help_text = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    targets = set(re.findall(r"make (\w[\w-]*)", help_text))
    documented = {cmd.split()[1] for cmd in readme_commands("make") if len(cmd.split()) > 1 and "=" not in cmd.split()[1]}
    assert {"search", "test", "help", "workers", "dashboard", "report"} <= targets
    assert documented <= targets, documented - targets


def test_make_search_runs_the_default_study(tmp_path):
    """`make search` as the README says (here with 2 trials into a scratch database)."""
    db = tmp_path / "digits.db"
    args = f"--n-trials 2 --storage sqlite:///{db}"
    proc = subprocess.run(["make", "search", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "done: 2 of 2 trials finished" in proc.stdout
    assert "rank trial state" in proc.stdout and "optuna-dashboard" in proc.stdout
    again = subprocess.run(["make", "search", f"ARGS={args}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "is finished" in again.stdout


@pytest.fixture(scope="module")
def made_study(tmp_path_factory):
    from bonas.cli import main
    from tests.conftest import tiny_config_text

    folder = tmp_path_factory.mktemp("readme")
    path = folder / "tiny.toml"
    path.write_text(tiny_config_text(n_trials=2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BONAS_DATA_DIR", str(folder / "data"))
        assert main(["search", str(path)]) == 0
    return path


@pytest.mark.parametrize("command", ["trials {cfg}", "trials {cfg} --top 2", "best {cfg}", "show {cfg} 0", "show {cfg} 1"])
def test_readme_read_commands_on_a_real_study(made_study, command, capsys):
    from bonas.cli import main

    assert main(shlex.split(command.format(cfg=made_study))) == 0
    assert capsys.readouterr().out.strip()
