"""Shared fixtures: everything shrunk (digits subsets, 1-2 epochs, tiny widths, CPU, no workers).

System parts (PostgreSQL, MariaDB, chromium, Debian's Fashion-MNIST, network namespaces) may be missing
on a user's machine: their tests skip with a reason there. In CI (CI=true, set by .ci/run) a missing
part fails the test instead, so nothing is silently skipped.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

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


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(name="tiny", **kw)`` writes a tiny study config into tmp_path and returns its path."""
    return lambda name="tiny", **kw: write_tiny_config(tmp_path, name, **kw)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Data caches in a per-session folder; no storage override leaking in from the shell."""
    monkeypatch.setenv("BONAS_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.delenv("BONAS_STORAGE", raising=False)


def make_mixed_study(folder: Path, name: str) -> Path:
    """A real 4-trial study with every ending: completed (top-2 artifacts kept), pruned at epoch 0 (a learning
    rate that cannot learn), failed (a parameter value outside its choices), plus one sampled trial."""
    from bonas.config import load_config
    from bonas.search.worker import Worker, prepare_worker
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
