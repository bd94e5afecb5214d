"""The README's commands, end to end: what it documents exists and works."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bonas.cli import build_parser
from tests.helpers import ROOT

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


@pytest.mark.slow
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
    """A real 3-trial study (so `--top 2` leaves one out)."""
    from bonas.cli import main
    from tests.helpers import tiny_config_text

    folder = tmp_path_factory.mktemp("readme")
    path = folder / "tiny.toml"
    path.write_text(tiny_config_text(n_trials=3))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BONAS_DATA_DIR", str(folder / "data"))
        assert main(["search", str(path)]) == 0
    return path


def rows(out: str) -> list[tuple[str, int, str, str]]:
    """The leaderboard's rows: (rank, trial, state, val_acc)."""
    pattern = r"^ *(\d+|-) +(\d+) (COMPLETE|PRUNED|FAIL|RUNNING|WAITING) +(\S+) "
    return [(m[1], int(m[2]), m[3], m[4]) for m in re.finditer(pattern, out, re.M)]


def expected_order(trials) -> list:
    """Leaderboard order, worked out here from the database: COMPLETE by value, then PRUNED by last value."""
    from optuna.trial import TrialState

    def last(t):
        return t.values[0] if t.values else t.intermediate_values[max(t.intermediate_values)]

    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    return sorted(trials, key=lambda t: (t.state != TrialState.COMPLETE, -last(t), t.number))


def check_show(out: str, t) -> None:
    acc = t.values[0] if t.values else t.intermediate_values[max(t.intermediate_values)]
    assert out.startswith(f"trial {t.number} of 'tiny': {t.state.name}, val_acc {acc:.4f}\n"), out
    assert f"  architecture  {t.user_attrs['arch_line']}\n" in out
    total = re.search(r"^total +([\d,]+) +([\d,]+)$", out, re.M)
    assert total, out
    assert tuple(int(x.replace(",", "")) for x in total.groups()) == (t.user_attrs["params"], t.user_attrs["flops"]), out


@pytest.mark.slow
@pytest.mark.parametrize("command", ["trials {cfg}", "trials {cfg} --top 2", "best {cfg}", "show {cfg} 0", "show {cfg} 1"])
def test_readme_read_commands_on_a_real_study(made_study, command, capsys):
    """Each read command prints what the database holds: the leaderboard's rows in the order the trials'
    values give, the best trial's number and accuracy, a trial's architecture and parameter total."""
    from bonas.cli import main
    from bonas.results.notes import si
    from bonas.study.studies import open_existing

    assert main(shlex.split(command.format(cfg=made_study))) == 0
    out = capsys.readouterr().out
    trials = open_existing(str(made_study)).study.trials
    order = expected_order(trials)
    verb = command.split()[0]
    if verb == "trials":
        top = 2 if "--top" in command else len(trials)
        printed = rows(out)
        assert [n for _, n, _, _ in printed] == [t.number for t in order[:top]], out
        for (_, _, state, acc), t in zip(printed, order, strict=False):
            value = t.values[0] if t.values else t.intermediate_values[max(t.intermediate_values)]
            assert state == t.state.name and acc == f"{value:.4f}", out
        assert ("1 more" in out) == (top < len(trials)), out
    elif verb == "best":
        best = order[0]
        assert out.startswith(f"best trial {best.number} of study 'tiny': val_acc {best.values[0]:.4f}\n"), out
        assert f"  architecture  {best.user_attrs['arch_line']}\n" in out and f"params {si(best.user_attrs['params'])}," in out
    else:
        check_show(out, trials[int(command.split()[-1])])


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section under ``## heading``."""
    body = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
@pytest.mark.parametrize("heading", ["From Python", "Extending bonas"])
def test_the_readme_python_examples_run(heading, tmp_path, monkeypatch, capsys):
    """Each example as a user pastes it, in a fresh folder (its studies/ a copy of the repository's)."""
    import shutil

    (blocks,) = [python_blocks(heading)]
    assert blocks, f"the README's {heading} section has its example"
    shutil.copytree(ROOT / "studies", tmp_path / "studies", ignore=shutil.ignore_patterns("*.db*", "*.artifacts", "*.slurm"))
    monkeypatch.chdir(tmp_path)
    from bonas.data.sources import DATA_SOURCES
    from bonas.model.blocks import BLOCK_TYPES

    registries = {id(r): (r, dict(r)) for r in (DATA_SOURCES, BLOCK_TYPES)}
    try:
        for block in blocks:
            exec(compile(block, f"README {heading}", "exec"), {"__name__": "__readme__"})
    finally:  # the example's registrations end with it
        for registry, before in registries.values():
            registry.clear()
            registry.update(before)
    out = capsys.readouterr().out
    assert (tmp_path / "example.db").exists() and out.strip()
    if heading == "From Python":
        assert (tmp_path / "mine.pt").exists()
    else:
        assert "wide" in out, out
