"""Your own data: image folders at photo sizes (aspect ratio, modes, broken files), stores that resume and are
shared, the streaming path, numpy arrays; each checked on what it produced."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bonas.cli import main
from bonas.config import DataConfig, load_config
from bonas.data.decode import decode_image
from bonas.data.images import DiskImages
from bonas.data.sources import load_raw
from bonas.data.splits import load_splits
from bonas.data.store import Plan, Writer, build_store, is_complete
from tests.helpers import make_image_tree, tiny_config_text, write_tiny_config


def cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(dir=str(tmp_path / "data"), **kw)


def photo(path, size=(160, 120), colour=(200, 30, 30), mode="RGB", fmt=None):
    """A landscape photo: the left quarter blue, the right quarter green, the middle ``colour``."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = colour
    array[:, : size[0] // 4] = (0, 0, 255)
    array[:, -size[0] // 4 :] = (0, 255, 0)
    image = Image.fromarray(array, "RGB")
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(200)
    elif mode == "CMYK":
        image = image.convert("CMYK")
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)
    return path


def test_a_photo_keeps_its_aspect_ratio_short_side_then_centre(tmp_path):
    """160x120 to 32: the short side becomes 32 (the long one 43), then the centre 32 columns: the blue and green
    quarters at the edges are cut down to 5 columns each, never squeezed into the image."""
    array, converted = decode_image(photo(tmp_path / "a.png"), 32, 3)
    assert array.shape == (3, 32, 32) and array.dtype == np.uint8 and converted is None
    middle = array[:, 16, 16]
    assert abs(int(middle[0]) - 200) < 8 and middle[2] < 45, "the centre is the photo's centre"
    blue_columns = int((array[2, 16] > 200).sum())
    assert 3 <= blue_columns <= 6, blue_columns


def test_modes_are_converted_and_said_once_broken_files_skipped_and_listed(tmp_path, caplog):
    root = tmp_path / "photos"
    for i, mode in enumerate(["RGB", "L", "RGBA", "CMYK", "I;16", "RGB"]):
        photo(root / "red" / f"{i}.{'jpg' if mode in ('RGB', 'CMYK', 'L') else 'png'}", mode=mode)
        photo(root / "grey" / f"{i}.png", colour=(128, 128, 128))
    (root / "red" / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = (root / "grey" / "0.png").read_bytes()
    (root / "grey" / "truncated.png").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING):
        raw = load_raw("imagefolder", cfg(tmp_path, root=str(root), image_size=16, channels=3))
    lines = [r.getMessage() for r in caplog.records if r.name == "bonas.data.imagefolder"]
    assert len(lines) == 2, lines
    converted, skipped = lines
    assert "converted 4 images" in converted and all(k in converted for k in ("greyscale", "transparency", "CMYK", "16-bit"))
    assert skipped.startswith("imagefolder: skipped 2 unreadable images: ") and "broken.jpg" in skipped
    assert "truncated.png" in skipped
    assert raw.classes == ["grey", "red"]
    valid = torch.cat([raw.train_y, raw.test_y])
    assert (valid >= 0).sum().item() == 12 and (valid < 0).sum().item() == 2, "the two broken files are rows in no split"
    splits = load_splits("imagefolder", cfg(tmp_path, root=str(root), image_size=16, val_fraction=0.25), seed=0)
    rows = torch.cat([splits.train, splits.val, splits.test])
    assert len(rows) == 12 and (splits.labels[rows] >= 0).all()
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # read from the store: the notes are kept with it
        load_raw("imagefolder", cfg(tmp_path, root=str(root), image_size=16, channels=3))
    assert len([r for r in caplog.records if r.name == "bonas.data.imagefolder"]) == 2


def test_bad_folders_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys):
    root = tmp_path / "photos"
    photo(root / "cat" / "0.jpg")
    (root / "dog").mkdir()
    config = tmp_path / "f.toml"
    text = tiny_config_text(name="f").replace('dataset = "digits"', 'dataset = "imagefolder"')
    config.write_text(text.replace("[data]\n", f'[data]\nroot = "{root}"\nimage_size = 16\n'))
    assert main(["search", str(config), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class 'dog'" in err[0] and "has no images" in err[0], err
    assert not (tmp_path / "f.db").exists() and not list((tmp_path / "data").glob("cache/imagefolder-*/"))


def test_an_interrupted_store_build_goes_on_where_it_stopped(tmp_path):
    plan = Plan((1, 2, 2), rows=10, n_train=8, classes=["a", "b"], source="test", chunk=3)
    images = np.arange(40, dtype=np.uint8).reshape(10, 1, 2, 2)
    labels = np.arange(10) % 2

    def fill(stop_after: int | None, asked: list[int]):
        def run(writer: Writer) -> None:
            for chunk in writer.todo():
                asked.append(chunk)
                r = writer.rows(chunk)
                writer.write(chunk, images[r.start : r.stop], labels[r.start : r.stop])
                if stop_after is not None and len(asked) == stop_after:
                    raise KeyboardInterrupt  # Ctrl-C, or a kill: the chunks written so far stay written

        return run

    first: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        build_store(tmp_path, "s", lambda: plan, fill(2, first))
    assert first == [0, 1] and not is_complete(tmp_path / "s") and (tmp_path / "s.partial").is_dir()
    second: list[int] = []
    store = build_store(tmp_path, "s", lambda: plan, fill(None, second))
    assert second == [2, 3], "only the chunks the first build had not written"
    assert np.array_equal(store.read_all(), images) and store.labels.tolist() == labels.tolist()
    assert not (tmp_path / "s.partial").exists() and is_complete(tmp_path / "s")
    assert build_store(tmp_path, "s", lambda: pytest.fail("planned again"), fill(None, [])).path == store.path


def _build_in_a_process(cache: str, log: str) -> None:
    plan = Plan((1, 2, 2), rows=6, n_train=4, classes=["a", "b"], source="test", chunk=2)

    def fill(writer: Writer) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        for chunk in writer.todo():
            r = writer.rows(chunk)
            time.sleep(0.2)  # long enough for the peer to arrive while this one builds
            writer.write(chunk, np.full((len(r), 1, 2, 2), chunk, np.uint8), np.arange(r.start, r.stop) % 2)

    build_store(Path(cache), "shared", lambda: plan, fill)


@pytest.mark.slow
def test_workers_of_one_machine_build_a_store_once_and_share_it(tmp_path):
    """Three processes asking for the same store at once: one builds it, the others wait on its lock and read it."""
    import multiprocessing

    log = tmp_path / "builders.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_a_process, args=(str(tmp_path / "cache"), str(log))) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1, "exactly one process filled the store"
    store = build_store(tmp_path / "cache", "shared", lambda: pytest.fail("planned again"), lambda w: pytest.fail("built"))
    assert store.read_all()[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]


def test_a_streamed_trial_trains_exactly_as_one_in_memory(tmp_path):
    """The same study on digits with the images held in memory and streamed from the store's file by DataLoader
    readers: the same batches in the same order, so the same learning curve, value for value."""
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage

    curves = []
    for name, limit in (("inmemory", 0), ("streamed", 0.001)):
        path = write_tiny_config(tmp_path, name, n_trials=1, epochs=2, pruner="none", pruner_extra="")
        path.write_text(path.read_text().replace("[data]\n", f"[data]\nmemory_limit_mb = {limit}\n"))
        config = load_config(path)
        url = resolve_storage(config)
        worker = Worker(config, url, prepare_worker(config, url, verbose=False))
        assert worker.objective.splits.streamed == (limit > 0)
        assert isinstance(worker.objective.splits.images, DiskImages) == (limit > 0)
        worker.run(n_trials=1, timeout=0)
        (trial,) = worker.study.trials
        curves.append(list(trial.intermediate_values.values()))
    assert curves[0] == curves[1] and len(curves[0]) == 2


def test_arrays_in_their_usual_forms(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 12, 10), dtype=np.uint8)
    y = np.repeat(["cat", "dog"], 25)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    raw = load_raw("arrays", cfg(tmp_path, arrays=[str(tmp_path / "a.npz")]))
    assert raw.classes == ["cat", "dog"] and raw.train_x.shape[1:] == (1, 12, 10)
    assert (len(raw.train_y), len(raw.test_y)) == (40, 10), "a fixed, stratified 20 % test split"
    floats = rng.random((30, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", floats)
    np.save(tmp_path / "y.npy", np.arange(30) % 3)
    np.savez(tmp_path / "test.npz", x=floats[:6], y=np.arange(6) % 3)
    raw = load_raw(
        "arrays",
        cfg(tmp_path, arrays=[str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], test_arrays=[str(tmp_path / "test.npz")]),
    )
    assert raw.train_x.shape == (30, 3, 8, 8) and len(raw.test_y) == 6
    assert torch.equal(raw.train_x[0], torch.from_numpy(np.rint(floats[0] * 255).astype(np.uint8).transpose(2, 0, 1)))
    np.savez(tmp_path / "keras.npz", x_train=x[:40], y_train=np.arange(40) % 2, x_test=x[40:], y_test=np.arange(10) % 2)
    raw = load_raw("arrays", cfg(tmp_path, arrays=[str(tmp_path / "keras.npz")]))
    assert (len(raw.train_y), len(raw.test_y)) == (40, 10) and torch.equal(raw.test_x[:, 0], torch.from_numpy(x[40:]))


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x": np.zeros((5, 4, 4), np.uint8), "y": np.zeros(4)}, "4 labels for 5 images"),
        ({"x": np.full((5, 4, 4), np.nan, np.float32), "y": np.zeros(5)}, "NaN"),
        ({"images": np.zeros((5, 4, 4), np.uint8)}, "name the arrays x and y"),
        ({"x": np.zeros((5, 4), np.uint8), "y": np.zeros(5)}, "images of shape (5, 4)"),
    ],
)
def test_bad_arrays_are_one_line_and_exit_2(tmp_path, capsys, arrays, fragment):
    np.savez(tmp_path / "bad.npz", **arrays)
    config = write_tiny_config(tmp_path, "arr")
    config.write_text(
        config.read_text()
        .replace('dataset = "digits"', 'dataset = "arrays"')
        .replace("[data]\n", f'[data]\narrays = ["{tmp_path / "bad.npz"}"]\n')
    )
    assert main(["search", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not (tmp_path / "arr.db").exists()


def pool_stem_arch(stride: int):
    from bonas.core.spec import ArchSpec, BlockSpec, StemSpec

    blocks = (BlockSpec(1, 8, 3, "max", True, 0.0),)
    return ArchSpec(blocks=blocks, head="gap", dense=(), dense_dropout=0.0, stem=StemSpec("pool", 0, stride))


def test_a_pool_stem_is_applied_once_to_the_data_and_trains_as_in_the_network(tmp_path):
    """A pool stem holds nothing learnt and normalising commutes with averaging: the images are pooled once (within
    the memory limit, shared by every trial) and the stem taken out while the network trains and is tested on them,
    with outputs equal but for the pooled images' rounding; any augmentation keeps the images whole."""
    from bonas.core.spec import TrainSpec
    from bonas.model.build import build_model
    from bonas.training.session import stem_on_the_data

    make_image_tree(tmp_path / "photos", per_class=6, size=40)
    splits = load_splits("imagefolder", cfg(tmp_path, root=str(tmp_path / "photos"), image_size=32), seed=0)
    pooled = splits.pooled(4, limit=2**30)
    assert pooled.input_shape == (3, 8, 8) and pooled.labels is splits.labels and pooled.mean == splits.mean
    expected = torch.nn.functional.avg_pool2d(splits.images.x.float(), 4, ceil_mode=True).round().to(torch.uint8)
    assert torch.equal(pooled.images.x, expected)
    assert splits.pooled(4, limit=2**30) is pooled, "kept for the next trial"
    held = splits.images.x.numel()
    assert splits.pooled(2, limit=held + 100) is None, "over the limit with the images held: not made"
    assert not splits._pooled, "one pooled set at a time: the last one dropped before another is made"
    assert splits.pooled(2, limit=held + pooled.images.x.numel() * 4).input_shape == (3, 16, 16)
    splits.drop_pooled()
    assert not splits._pooled
    pooled = splits.pooled(4, limit=2**30)

    torch.manual_seed(0)
    net = build_model(pool_stem_arch(4), splits.input_shape, splits.n_classes).eval()
    keys = set(net.state_dict())
    preprocess = splits.preprocess()
    x, _ = splits.take(splits.test)
    whole = net(preprocess(x))
    plain = TrainSpec("adamw", 1e-3, 0.0, 8, augment=False)
    with stem_on_the_data(net, splits, plain, cutout=0, limit=2**30) as data:
        assert data is pooled and isinstance(net.stem_pool, torch.nn.Identity)
        assert torch.allclose(net(preprocess(data.take(data.test)[0])), whole, atol=0.02)
    assert isinstance(net.stem_pool, torch.nn.AvgPool2d) and set(net.state_dict()) == keys
    for train, cutout in ((TrainSpec("adamw", 1e-3, 0.0, 8, augment=True), 0), (plain, 4)):
        with stem_on_the_data(net, splits, train, cutout=cutout, limit=2**30) as data:
            assert data is splits and isinstance(net.stem_pool, torch.nn.AvgPool2d)


def test_a_final_training_behind_a_pool_stem_trains_on_pooled_images_and_keeps_its_stem(tmp_path, monkeypatch):
    """Every training step and the test read the pooled images (the stem runs on no batch: only the latency's
    one-image probe goes through it); the network handed back has its stem and takes whole images."""
    from bonas.core.spec import TrainSpec
    from bonas.training.final import train_final

    make_image_tree(tmp_path / "photos", per_class=6, size=40)
    text = tiny_config_text(name="p").replace('dataset = "digits"', 'dataset = "imagefolder"')
    data = f'[data]\nroot = "{tmp_path / "photos"}"\nimage_size = 32\ndir = "{tmp_path / "data"}"\n'
    (tmp_path / "p.toml").write_text(text.replace("[data]\n", data))
    config = load_config(tmp_path / "p.toml")
    splits = load_splits("imagefolder", config.data, seed=0)
    convs, stems = [], []
    conv, pool = torch.nn.Conv2d.forward, torch.nn.AvgPool2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: convs.append(tuple(x.shape)) or conv(self, x))
    monkeypatch.setattr(torch.nn.AvgPool2d, "forward", lambda self, x: stems.append(tuple(x.shape)) or pool(self, x))
    final = train_final(config, splits, pool_stem_arch(4), TrainSpec("adamw", 1e-3, 0.0, 8, False), seed=0, epochs=1)
    assert {shape[-2:] for shape in convs} == {(8, 8)} and max(shape[0] for shape in convs) == 8
    assert stems and {shape[0] for shape in stems} == {1}, f"the stem ran on {sum(s[0] > 1 for s in stems)} batches"
    assert len(splits.test) > 1 and final.result["test_images"] == len(splits.test)
    assert isinstance(final.net.stem_pool, torch.nn.AvgPool2d) and 0.0 <= final.result["test_acc"] <= 1.0
    assert final.net(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
