"""Static reports and study comparisons on a real study with completed, pruned and failed trials."""

from __future__ import annotations

import csv
import html
import shutil
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.study.studies import open_existing
from tests.helpers import make_mixed_study, tiny_config_text

pytestmark = pytest.mark.slow  # a real study: not in make test-fast


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return make_mixed_study(tmp_path_factory.mktemp("report"), "rep")


def test_report_files_and_csv_match_the_database(mixed, capsys):
    out = mixed.parent / "out"
    assert main(["report", str(mixed), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    figures = ("history.png", "intermediate.png", "parallel.png", "acc_vs_params.png", "acc_vs_flops.png")
    for name in ("index.html", "trials.csv", *figures):
        assert (out / name).stat().st_size > 500, name
    study = open_existing(str(mixed)).study
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [int(r["number"]) for r in rows] == [t.number for t in study.trials]
    for r, t in zip(rows, study.trials, strict=True):
        assert r["state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert float(r["value_val_acc"]) == pytest.approx(t.values[0])
        assert r["user_attrs_arch_line"] == t.user_attrs.get("arch_line", "")
    html = (out / "index.html").read_text()
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= {t.state for t in study.trials}
    for t in study.trials:
        assert f"<td>{t.number}</td><td>{t.state.name}</td>" in html


SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


def test_report_escapes_hostile_trial_attributes(mixed, tmp_path):
    """A copy of the real study plus two trials written through its storage with markup where the report
    shows text: a COMPLETE trial whose architecture line is a script, a FAIL trial whose end_reason is an
    image with an onerror handler. The report shows them as text. Fails if report.py stops escaping."""
    copy = tmp_path / mixed.name
    shutil.copy(mixed, copy)
    with sqlite3.connect(mixed.with_suffix(".db")) as src, sqlite3.connect(copy.with_suffix(".db")) as dst:
        src.backup(dst)  # WAL mode: the file alone may miss committed pages
    study = open_existing(str(copy)).study
    real = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    hostile = {**real.user_attrs, "arch_line": SCRIPT, "end_reason": f"completed {IMG}"}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=0.5, params=real.params, distributions=real.distributions, user_attrs=hostile
        )
    )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params=real.params,
            distributions=real.distributions,
            user_attrs={**real.user_attrs, "end_reason": f"error: {IMG}"},
        )
    )
    stored = open_existing(str(copy)).study.trials[-2:]
    assert [t.user_attrs["arch_line"] for t in stored] == [SCRIPT, real.user_attrs["arch_line"]]
    out = tmp_path / "out"
    assert main(["report", str(copy), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert f"<code>{html.escape(SCRIPT)}</code>" in page and f"error: {html.escape(IMG)}" in page
    assert "<script" not in page.lower() and "<img src=x" not in page and "onerror=alert(2)>" not in page


def test_compare_overlays_best_so_far(tmp_path, capsys):
    paths = []
    for sampler in ("tpe", "random"):
        p = tmp_path / f"cmp-{sampler}.toml"
        startup = "n_startup_trials = 1" if sampler == "tpe" else ""
        p.write_text(tiny_config_text(name=f"cmp-{sampler}", n_trials=3, sampler=sampler, sampler_extra=startup, epochs=1))
        assert main(["search", str(p)]) == 0
        paths.append(str(p))
    capsys.readouterr()
    out = tmp_path / "cmp.png"
    assert main(["compare", *paths, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cmp-tpe" in text and "cmp-random" in text and out.stat().st_size > 5000


def test_compare_needs_two(tmp_path, capsys):
    assert main(["compare", "digits"]) == 2
    assert "at least two studies" in capsys.readouterr().err
