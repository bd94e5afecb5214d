"""Guards for what users rely on and an upgrade could break quietly: a light read side, the Optuna internals bonas
wraps, the versions it admits, and the GPU's code paths, run here on the CPU."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages._rdb import models

from bonas.study import storage as bonas_storage
from tests.helpers import ROOT, write_tiny_config


def made_study_without_training(folder):
    """A config and its SQLite study with two finished trials, made through Optuna alone (nothing trained)."""
    path = write_tiny_config(folder, "light")
    study = optuna.create_study(study_name="light", storage=f"sqlite:///{folder / 'light.db'}", direction="maximize")
    dist = optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    for value in (0.5, 0.75):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={"lr": dist}, value=value))
    return path


PROBE = """
import json, sys
from bonas.cli import main
try:
    code = main(ARGV)
except SystemExit as stop:  # --help
    code = stop.code
heavy = sorted(m for m in ("torch", "lightning", "optuna_dashboard", "matplotlib") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["trials", "{cfg}"], ["best", "{cfg}"]])
def test_the_read_side_imports_no_training_stack(tmp_path, argv):
    cfg = made_study_without_training(tmp_path)
    args = [a.format(cfg=cfg) for a in argv]
    probe = PROBE.replace("ARGV", repr(args))
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"code": 0, "heavy": []}, proc.stderr[-2000:]
    if argv[0] == "best":
        assert "val_acc 0.7500" in proc.stdout


def test_every_optuna_internal_bonas_wraps_still_exists():
    """BonasStorage retries these RDBStorage methods by name and overrides a few more; the reaper reads the RDB
    models; storage_of/study_id/trial_id read Optuna's private handles. An upgrade that renames one fails here."""
    for name in (*bonas_storage._RETRIED, "set_trial_state_values", "_get_stale_trial_ids", "__getstate__", "__setstate__"):
        assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name} is gone"
    assert {"trial_id", "heartbeat"} <= set(models.TrialHeartbeatModel.__table__.columns.keys())
    assert {"trial_id", "study_id", "state"} <= set(models.TrialModel.__table__.columns.keys())
    assert list(inspect.signature(RDBStorage._get_stale_trial_ids).parameters) == ["self", "study_id"]
    study = optuna.create_study()
    trial = study.ask()
    assert bonas_storage.storage_of(study) is study._storage and isinstance(bonas_storage.study_id(study), int)
    assert isinstance(bonas_storage.trial_id(trial), int)


def test_optuna_is_bounded_below_its_next_major():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("optuna", "optuna-integration"):
        (spec,) = [d for d in deps if d.split(">")[0].split("<")[0].split("=")[0].strip() == package]
        lower = int(spec.split(">=")[1].split(",")[0].split(".")[0])
        assert f"<{lower + 1}" in spec.replace(" ", ""), f"{spec}: bound it below the next major"
        assert int(optuna.__version__.split(".")[0]) == lower


def test_several_workers_share_one_gpu_and_spread_over_many():
    from bonas.commands.processes import placement

    assert [placement(i, 3, 0) for i in range(3)] == [(None, 3)] * 3, "no GPU: the workers split the cores"
    assert [placement(i, 4, 1) for i in range(4)] == [(None, 1)] * 4, "one GPU: all of them share it"
    assert [placement(i, 4, 2)[0] for i in range(4)] == [0, 1, 0, 1], "several: one each, round robin"


@pytest.mark.slow
def test_the_gpu_code_paths_run_on_the_cpu(tmp_path, monkeypatch):
    """bf16 autocast (Lightning's bf16-mixed, which runs on a CPU), channels_last weights and inputs, the data set
    moved to the device: a trial and a final training through the same code a GPU takes."""
    import torch

    from bonas.config import load_config
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage
    from bonas.training import device
    from bonas.training.final import final_splits, train_final

    monkeypatch.setattr(device, "current", lambda: device.GPU_PATHS_ON_CPU)
    config = load_config(write_tiny_config(tmp_path, "gpu", n_trials=1, epochs=1, keep_top_k=1))
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    seen = {}
    original = worker.objective.fit

    def fit(*args, **kwargs):
        module = original(*args, **kwargs)
        weights = [p for p in module.net.parameters() if p.dim() == 4]
        seen.update(precision=module.trainer.precision, channels_last=module.channels_last)
        seen["weights_channels_last"] = all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        return module

    monkeypatch.setattr(worker.objective, "fit", fit)
    assert worker.run(n_trials=1, timeout=0).finished == 1
    assert seen == {"precision": "bf16-mixed", "channels_last": True, "weights_channels_last": True}
    (trial,) = worker.study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value > 0.0
    from bonas.nas.space import specs_from_params

    splits = final_splits(config)
    arch, train = specs_from_params(trial.params, config.space, config.training, config.data, splits.input_shape)
    final = train_final(config, splits, arch, train, seed=0, epochs=1)
    assert 0.0 <= final.result["test_acc"] <= 1.0 and final.result["epochs"] == 1
