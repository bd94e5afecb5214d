"""What the tests share: the tiny study config, real studies, trial records made by hand, small data sets in their
real formats, and waiting for a condition. Fixtures live in conftest.py; everything else any test module uses twice
lives here."""

from __future__ import annotations

import datetime
import gzip
import os
import pickle
import struct
import textwrap
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from bonas.study.storage import open_storage

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

ROOT = Path(__file__).resolve().parent.parent


def require(condition: bool, reason: str) -> None:
    """Skip (on a user's machine) or fail (in CI) when a system part is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


TINY = """
name = "{name}"
dataset = "digits"
seed = {seed}

[budget]
n_trials = {n_trials}

[sampler]
name = "{sampler}"
{sampler_extra}

[pruner]
name = "{pruner}"
{pruner_extra}

[training]
max_epochs = {epochs}
batch_sizes = [64]
optimizers = ["adamw"]
lr = [3e-3, 3e-2]
weight_decay = [1e-5, 1e-3]

[data]
val_fraction = 0.2
train_subset = {train_subset}
val_subset = {val_subset}

[space]
n_blocks = [1, 2]
convs_per_block = [1, 1]
widths = [4, 8]
kernel_sizes = [3]
pooling = ["max", "none"]
batch_norm = [true, false]
dropout = [0.0, 0.0]
heads = ["gap", "flatten"]
dense_layers = [0, 1]
dense_units = [8, 16]
dense_dropout = [0.0, 0.0]

[objective]
{objective}

[artifacts]
keep_top_k = {keep_top_k}
curves = true

[warm_start]
priors = {priors}
{warm_start}
{extra}
"""


def tiny_config_text(**kw) -> str:
    values = dict(
        name="tiny",
        seed=0,
        n_trials=3,
        sampler="tpe",
        sampler_extra="n_startup_trials = 2",
        pruner="median",
        pruner_extra="n_startup_trials = 2\nn_warmup_steps = 0",
        epochs=2,
        train_subset=300,
        val_subset=100,
        objective="latency_time_s = 0  # measured only by the tests about latency",
        keep_top_k=0,  # artifacts only in the tests about them
        priors="false",  # the standard designs only in the tests about them (tests/test_priors.py)
        warm_start="",
        extra="",
    )
    values.update(kw)
    return textwrap.dedent(TINY.format(**values))


def write_tiny_config(folder: Path, name: str = "tiny", **kw) -> Path:
    """Write ``folder/<name>.toml``, a tiny digits study (see :func:`tiny_config_text` for the knobs); its
    storage defaults to SQLite beside it. The one way tests make a study config."""
    path = folder / f"{name}.toml"
    path.write_text(tiny_config_text(name=name, **kw))
    return path


def make_mixed_study(folder: Path, name: str) -> Path:
    """A real 4-trial study with every ending: completed (top-2 artifacts kept), pruned at epoch 0 (a learning
    rate that cannot learn), failed (a parameter value outside its choices), plus one sampled trial."""
    from bonas.config import load_config
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage

    path = write_tiny_config(
        folder, name, n_trials=5, pruner_extra="n_startup_trials = 1\nn_warmup_steps = 0", epochs=3, keep_top_k=2
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BONAS_DATA_DIR", str(folder / "data"))
        config = load_config(path)
        url = resolve_storage(config)
        worker = Worker(config, url, prepare_worker(config, url, verbose=False))
        good = {
            "n_blocks": 1,
            "b0_width": 8,
            "b0_pool": "max",
            "b0_bn": True,
            "head": "flatten",
            "n_dense": 0,
            "lr": 0.02,
            "weight_decay": 1e-5,
        }
        worker.study.enqueue_trial(good)
        worker.study.enqueue_trial({**good, "lr": 1e-7})
        worker.study.enqueue_trial({**good, "head": "bogus"})
        worker.run(n_trials=4, timeout=0)
    return path


# --- trial records made by hand ---------------------------------------------------------------------------

T0 = datetime.datetime(2026, 1, 1)


def frozen_trial(
    number: int,
    state: TrialState,
    value: float | None = None,
    *,
    attrs: dict | None = None,
    system: dict | None = None,
    curve: list[float] | tuple[float, ...] = (),
    start: float | None = 0.0,
    stop: float | None = 1.0,
) -> optuna.trial.FrozenTrial:
    """A FrozenTrial as a study would hold it: ``curve`` its reported values per epoch, ``start``/``stop`` seconds
    after T0 (a trial that has not finished has no stop)."""
    begin = T0 + datetime.timedelta(seconds=start) if start is not None else None
    end = T0 + datetime.timedelta(seconds=stop) if stop is not None and state.is_finished() else None
    return optuna.trial.FrozenTrial(
        number, state, value, begin, end, {}, {}, attrs or {}, system or {}, dict(enumerate(curve)), number
    )


# --- workers on a shared study ------------------------------------------------------------------------------

FAST = "[workers]\nheartbeat_interval = 1\ngrace_period = 3\n"


_storages: dict[str, object] = {}


def load(url: str, name: str = "par") -> optuna.Study:
    """The study, through one storage per URL (polling must not open a new engine every time)."""
    if url not in _storages:
        _storages[url] = open_storage(url)
    return optuna.load_study(study_name=name, storage=_storages[url])


def wait_for(condition, timeout: float = 120, every: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def audit(url: str, n_trials: int, name: str = "par") -> list[optuna.trial.FrozenTrial]:
    trials = load(url, name).get_trials()
    states = [t.state for t in trials]
    assert [t.number for t in trials] == list(range(len(trials))), "trial numbers unique and dense"
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "reused_from" not in t.user_attrs]
    assert len(counted) == n_trials, states  # what the budget counts: finished trials that trained (a reused result is free)
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, states
    return trials


def sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'par.db'}"


# --- small data sets in their real formats -------------------------------------------------------------------

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """The IDX format of the original (Fashion-)MNIST files: magic 0x0000 08 <ndim>, big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_dir(folder: Path, n_train: int = 60, n_test: int = 20, compress: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if compress else "")), array, compress)
    return arrays


def make_cifar_dir(folder: Path, hundred: bool = False, per_batch: int = 20) -> None:
    """CIFAR's python version: pickled dicts with b'data' (N x 3072 uint8, RGB planes) and labels."""
    folder.mkdir(parents=True)
    label_key = b"fine_labels" if hundred else b"labels"
    n_classes = 100 if hundred else 10

    def batch(n: int) -> dict:
        return {b"data": RNG.integers(0, 256, (n, 3072)).astype(np.uint8), label_key: [i % n_classes for i in range(n)]}

    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for f in train_files:
        (folder / f).write_bytes(pickle.dumps(batch(per_batch * (5 if hundred else 1))))
    (folder / ("test" if hundred else "test_batch")).write_bytes(pickle.dumps(batch(per_batch)))
    meta = {(b"fine_label_names" if hundred else b"label_names"): [f"c{i}".encode() for i in range(n_classes)]}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))


def make_image_tree(root: Path, classes=("cat", "dog", "owl"), per_class: int = 6, size: int = 12) -> None:
    from PIL import Image

    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = RNG.integers(0, 256, (size, size + 4, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
