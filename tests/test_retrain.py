"""From search to a model: retrain + test, checkpoints that load with weights_only, exports that reload
with identical outputs, predictions on image files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bonas.cli import main
from bonas.model.checkpoint import FORMAT, load_checkpoint
from bonas.model.export import deployed_from_checkpoint, export
from bonas.study.studies import open_existing
from tests.helpers import tiny_config_text

pytestmark = pytest.mark.slow  # real training and exports: not in make test-fast


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retrain")
    path = folder / "rt.toml"
    path.write_text(tiny_config_text(name="rt", n_trials=2, pruner="none", pruner_extra=""))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BONAS_DATA_DIR", str(folder / "data"))
        assert main(["search", str(path)]) == 0
        ckpt = folder / "best.pt"
        assert main(["retrain", str(path), "--epochs", "2", "--out", str(ckpt)]) == 0
        best = open_existing(str(path)).study.user_attrs
        assert main(["retrain", str(path), "--epochs", "1", "--search-data", "--out", str(folder / "subset.pt")]) == 0
        subset = open_existing(str(path)).study.user_attrs
    return path, ckpt, best, subset


def test_retrain_records_test_accuracy_on_the_study(retrained):
    path, ckpt, attrs, subset = retrained
    records = {k: v for k, v in attrs.items() if k.startswith("bonas:retrain:")}
    assert len(records) == 1
    r = next(iter(records.values()))
    assert 0.0 <= r["test_acc"] <= 1.0 and len(r["per_class_acc"]) == 10
    assert r["test_images"] == 359, "digits' fixed 20% test split, untouched by the search"
    assert r["train_images"] == 1438, "by default the whole training split: train + validation, no subset"
    assert r["epochs"] == 2 and r["parameters"] > 0 and r["latency_ms_batch1"] > 0
    again = next(v for k, v in subset.items() if k.startswith("bonas:retrain:"))
    assert again["train_images"] == 400 and again["epochs"] == 1, "--search-data: the search's subsets (300 + 100)"
    assert r["epochs"] == 2 and r["checkpoint"] == str(ckpt)
    assert sum(sum(row) for row in r["confusion"]) == 359
    metas = optuna_artifacts(open_existing(str(path)).study)
    assert any(m.artifact_id == r["artifact_id"] for m in metas)


def optuna_artifacts(study):
    import optuna

    return optuna.artifacts.get_all_artifact_meta(study)


def test_checkpoint_loads_with_weights_only_and_holds_what_is_needed(retrained):
    _, ckpt, _, _ = retrained
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format"] == FORMAT
    assert raw["input_shape"] == [1, 8, 8] and raw["classes"] == [str(i) for i in range(10)]
    assert len(raw["mean"]) == 1 and len(raw["std"]) == 1 and raw["arch"]["blocks"]
    net, _ = load_checkpoint(ckpt)
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx"])
def test_export_reloads_with_identical_outputs(retrained, tmp_path, fmt, capsys):
    _, ckpt, _, _ = retrained
    out = tmp_path / f"model.{fmt}"
    assert main(["export", str(ckpt), "--format", fmt, "--out", str(out)]) == 0
    assert "reloaded" in capsys.readouterr().out and out.stat().st_size > 1000
    model, _ = deployed_from_checkpoint(ckpt)
    x = torch.rand(7, 1, 8, 8)  # a batch size the export never saw
    if fmt == "torchscript":
        got = torch.jit.load(str(out))(x)
    elif fmt == "exported":
        got = torch.export.load(str(out)).module()(x)
    else:
        from bonas.model.export import _onnx_runner

        got = _onnx_runner(out)(x)
    assert torch.allclose(model(x), got, atol=1e-5)


def test_predict_classifies_image_files_like_the_network(retrained, tmp_path, capsys):
    from PIL import Image
    from sklearn.datasets import load_digits

    _, ckpt, _, _ = retrained
    digits = load_digits()
    files = []
    for i in range(12):
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        files.append(str(tmp_path / f"digit{i}.png"))
        Image.fromarray(pixels).save(files[-1])
    assert main(["predict", str(ckpt), *files, "--top", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12
    model, ckpt_dict = deployed_from_checkpoint(ckpt)
    x = torch.from_numpy(np.round(digits.images[:12] * 255 / 16).astype(np.uint8)).unsqueeze(1).float() / 255
    expected = model(x).argmax(1).tolist()
    for line, cls in zip(lines, expected, strict=True):
        assert line.split(": ", 1)[1].startswith(f"{ckpt_dict['classes'][cls]} ")


def test_bad_checkpoint_and_images_are_one_line_errors(retrained, tmp_path, capsys):
    _, ckpt, _, _ = retrained
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for argv, fragment in [
        (["export", str(junk), "--format", "onnx"], "not a bonas checkpoint"),
        (["export", str(tmp_path / "missing.pt"), "--format", "exported"], "no such checkpoint"),
        (["predict", str(ckpt), str(tmp_path / "nope.png")], "no such image"),
        (["predict", str(ckpt), str(junk)], "not an image"),
        (["retrain", str(retrained[0]), "--trial", "99"], "has no trial 99"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is rejected, not executed."""
    import os

    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": FORMAT, "x": Boom()}, evil)
    with pytest.raises(Exception, match="not a bonas checkpoint"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_export_refuses_an_unknown_format(retrained):
    from bonas.core.errors import BonasError

    with pytest.raises(BonasError, match="unknown export format"):
        export(retrained[1], "tflite")
