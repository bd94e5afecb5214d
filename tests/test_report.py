"""Static reports and study comparisons on a real study with completed, pruned and failed trials."""

from __future__ import annotations

import csv

import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.study import open_existing
from tests.conftest import make_mixed_study, tiny_config_text


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return make_mixed_study(tmp_path_factory.mktemp("report"), "rep")


def test_report_files_and_csv_match_the_database(mixed, capsys):
    out = mixed.parent / "out"
    assert main(["report", str(mixed), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    for name in ("index.html", "trials.csv", "history.png", "intermediate.png", "parallel.png", "acc_vs_params.png", "acc_vs_flops.png"):
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
    assert "&lt;" not in study.study_name and "<script" not in html


def test_compare_overlays_best_so_far(tmp_path, capsys):
    paths = []
    for sampler in ("tpe", "random"):
        p = tmp_path / f"cmp-{sampler}.toml"
        p.write_text(tiny_config_text(name=f"cmp-{sampler}", n_trials=3, sampler=sampler, sampler_extra="n_startup_trials = 1" if sampler == "tpe" else "",
                                      epochs=1))
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
