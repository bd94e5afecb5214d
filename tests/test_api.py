"""bonas from Python: search and run with a config's data or with your own (a Dataset, a DataModule), the trials as a
DataFrame, the best trial, a model back; Ctrl-C stops cleanly; a resume with other data is refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import lightning.pytorch as pl
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch.utils.data import DataLoader, TensorDataset

import bonas
from bonas.core.errors import StudyError
from tests.helpers import tiny_config_text, wait_for

pytestmark = pytest.mark.slow  # real searches: not in make test-fast


def table(name: str, tmp_path, **kw) -> dict:
    """The tiny config as a dict of tables (what a notebook would write), its database in tmp_path."""
    import tomllib

    raw = tomllib.loads(tiny_config_text(name=name, **kw))
    raw["storage"] = f"sqlite:///{tmp_path / (name + '.db')}"
    return raw


def blobs(n: int = 120, seed: int = 0) -> TensorDataset:
    """Three classes of 8x8 grey images, told apart by where their bright square is: floats in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    for i, label in enumerate(y.tolist()):
        x[i, 0, 2 * label : 2 * label + 3, 2 * label : 2 * label + 3] = 1.0
    return TensorDataset(x, y)


def test_search_trials_best_run_and_load_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = table("py", tmp_path, n_trials=3)
    study = bonas.search(config)
    assert isinstance(study, optuna.Study) and len(study.trials) >= 3
    frame = bonas.trials(study)
    assert {"number", "value_val_acc", "state", "architecture", "parameters", "flops", "epochs", "end_reason"} <= set(
        frame.columns
    )
    best = bonas.best(study)
    assert frame.iloc[0]["number"] == best.number and frame.iloc[0]["architecture"] == best.arch_line
    again = bonas.search(config, n_trials=4)  # resumes: one more trial, not four
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in again.trials) == 4
    result = bonas.run(config, budget=12, out=str(tmp_path / "m.pt"), report_dir=str(tmp_path / "r"))
    assert 0 <= result.test_acc <= 1 and result.checkpoint == str(tmp_path / "m.pt")
    net, preprocess = bonas.load(result.checkpoint)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    assert net(preprocess(images)).shape == (5, 10) and preprocess.classes == [str(i) for i in range(10)]


def test_your_own_dataset_and_datamodule_become_the_studys_data(tmp_path):
    data = blobs()
    study = bonas.search(table("own", tmp_path, n_trials=2, train_subset=0, val_subset=0), data=data)
    info = study.user_attrs["bonas:data"]
    assert info["input_shape"] == [1, 8, 8] and info["n_classes"] == 3 and info["source"].startswith("Python data TensorDataset")
    assert info["n_test"] == 24, "a Dataset without a test split gets a fixed 20 %"
    assert any(t.state == TrialState.COMPLETE for t in study.trials)
    with pytest.raises(StudyError, match="was searched on Python data TensorDataset .* not on Python data"):
        bonas.search(table("own", tmp_path, n_trials=3, train_subset=0, val_subset=0), data=blobs(seed=1))

    class Blobs(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(blobs(90), batch_size=32)

        def test_dataloader(self):
            return DataLoader(blobs(30, seed=5), batch_size=32)

    study = bonas.search(table("dm", tmp_path, n_trials=2, train_subset=0, val_subset=0), data=Blobs())
    info = study.user_attrs["bonas:data"]
    assert info["n_test"] == 30 and info["n_train"] + info["n_val"] == 90 and info["source"].startswith("Python data Blobs")


SCRIPT = """
import sys
import bonas
config = {config!r}
try:
    bonas.search(config)
except KeyboardInterrupt as err:
    print("KeyboardInterrupt:", err, flush=True)
    sys.exit(0)
print("finished", flush=True)
"""


def test_ctrl_c_stops_a_python_search_cleanly(tmp_path):
    """SIGINT (what a notebook's interrupt sends) inside a trial: the trial ends FAIL, its params wait in the queue,
    and the call raises KeyboardInterrupt instead of a traceback from deep inside Lightning."""
    config = table("ctrl", tmp_path, n_trials=3, epochs=4, train_subset=1000, val_subset=100, pruner="none", pruner_extra="")
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent(SCRIPT.format(config=config)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'ctrl.db'}"

    def in_fit():
        if proc.poll() is not None:
            pytest.fail(f"the search ended before the signal: {proc.communicate()}")
        try:
            trials = optuna.load_study(study_name="ctrl", storage=storage).get_trials(states=(TrialState.RUNNING,))
        except Exception:
            return None
        return next((t for t in trials if len(t.intermediate_values) == 1), None)

    victim = wait_for(in_fit, timeout=120, what="a trial inside fit")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "KeyboardInterrupt: bonas: the search of 'ctrl' was interrupted" in out, out + err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="ctrl", storage=storage)
    assert study.trials[victim.number].state == TrialState.FAIL
    assert study.trials[victim.number].user_attrs["end_reason"] == "interrupted by SIGINT"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [victim.params]
