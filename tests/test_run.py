"""`bonas run`: a time budget split between the search and the final training, held, and everything written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from bonas.config import load_config
from bonas.core import records as R
from bonas.core.durations import parse_duration
from bonas.data.idx import DEBIAN_FASHION_MNIST
from tests.helpers import ROOT, make_cifar_dir, require, write_tiny_config

pytestmark = pytest.mark.slow  # bonas run with real budgets: not in make test-fast

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "text, seconds", [("90s", 90), ("45m", 2700), ("1h", 3600), ("1h30m", 5400), ("2h15m30s", 8130), ("600", 600)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "5s", "-3m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_budget_is_one_line_and_exit_2(tmp_path):
    path = write_tiny_config(tmp_path, "rb")
    proc = subprocess.run([str(BIN / "bonas"), "run", str(path), "--budget", "soon"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected a duration such as 90s" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "rb.db").exists()


def test_run_holds_its_budget_and_writes_a_tested_model(tmp_path):
    path = write_tiny_config(tmp_path, "rn", n_trials=3, epochs=2, train_subset=300, val_subset=100)
    budget = 16
    start = time.monotonic()
    proc = subprocess.run(
        [
            str(BIN / "bonas"),
            "run",
            str(path),
            "--budget",
            f"{budget}s",
            "--report",
            str(tmp_path / "report"),
            "--out",
            str(tmp_path / "final.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    study = optuna.load_study(study_name="rn", storage=f"sqlite:///{tmp_path / 'rn.db'}")
    record = study.user_attrs[f"{R.RUN_PREFIX}0"]
    assert record["total_s"] <= budget * 1.05 + 1, record
    assert record["search_s"] == pytest.approx(budget * 0.5, abs=6), "the search share, give or take the epoch it finishes"
    assert record["trials_this_run"] > 3, "the run's time, not [budget] n_trials, bounds the search"
    assert wall < budget + 60, "start-up is the only time outside the budget"
    retrained = study.user_attrs[f"{R.RETRAIN_PREFIX}{record['best_trial']}"]
    assert retrained["train_images"] == 1438, "the whole training split of digits: train + validation, no subset"
    assert 0.0 <= retrained["test_acc"] <= 1.0 and retrained["test_images"] == 359
    ckpt = torch.load(tmp_path / "final.pt", weights_only=True)
    assert ckpt["info"]["test_acc"] == retrained["test_acc"]
    assert (tmp_path / "report" / "index.html").exists()
    assert (
        f"test accuracy {retrained['test_acc']:.4f}" in proc.stdout
        and "parameters" in proc.stdout
        and "ms per image" in proc.stdout
    )


PRESETS = sorted(p.stem for p in (ROOT / "studies").glob("*.toml"))
GPU_SIZED = {"cifar10", "fashion-mnist-gpu"}  # their headers say so
BUDGET_S = {"fashion-mnist": 20}  # its 10 000-image epochs need the time; digits presets train an epoch in a second


@pytest.mark.parametrize("preset", PRESETS)
def test_run_works_on_every_preset(preset, tmp_path, monkeypatch, capsys):
    """Each preset, as shipped, from a 10- to 20-second budget to a tested model (CIFAR-10: small files in its real format),
    in this process (a new one per preset would add its start-up). A budget too small for one whole trial still
    ends with a model: the trial that learned best so far.

    A preset sized for a GPU, on a CPU: one training step of its networks can outlast such a budget (the first
    CIFAR-10 trial: 7 GFLOPs an image) and no step is cut short, so what must hold there is the ending, not the
    time: a model, or exit 2 with one line, the stopped trial's params queued again and no model written."""
    from bonas.cli import main

    gpu_on_cpu = preset in GPU_SIZED and not torch.cuda.is_available()
    budget = 10 if gpu_on_cpu else BUDGET_S.get(preset, 10)
    copy = tmp_path / f"{preset}.toml"
    copy.write_text((ROOT / "studies" / f"{preset}.toml").read_text())
    if (ROOT / "studies" / "warm-start").is_dir():
        shutil.copytree(ROOT / "studies" / "warm-start", tmp_path / "warm-start")
    argv = ["run", str(copy), "--budget", f"{budget}s", "--report", str(tmp_path / "report"), "--out", str(tmp_path / "final.pt")]
    if preset == "cifar10":
        make_cifar_dir(tmp_path / "data" / "cifar-10-batches-py", per_batch=40)
        argv += ["--data-dir", str(tmp_path / "data")]
    if preset.startswith("fashion-mnist"):
        require(DEBIAN_FASHION_MNIST.is_dir(), "Debian's dataset-fashion-mnist is not installed")
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    out, err = capsys.readouterr()
    name = load_config(copy).name
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / (name + '.db')}")
    if gpu_on_cpu and code == 2:
        assert "trained an epoch" in err and not (tmp_path / "final.pt").exists()
        stopped = study.get_trials(states=(TrialState.FAIL,))
        assert stopped and all(t.user_attrs[R.REASON].startswith("stopped in epoch 1 ") for t in stopped)
        assert [t.params for t in study.get_trials(states=(TrialState.WAITING,))] == [t.params for t in stopped]
        assert not any(key.startswith(R.RUN_PREFIX) for key in study.user_attrs), "no run recorded"
        return
    assert code == 0, err
    record = study.user_attrs[f"{R.RUN_PREFIX}0"]
    if not gpu_on_cpu:
        assert record["total_s"] <= budget * 1.05 + 2, record
    assert 0.0 <= record["test_acc"] <= 1.0 and "test accuracy" in out and (tmp_path / "final.pt").exists()
