"""Data loaders on small files written in the real on-disk formats; splits, statistics, augmentation."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bonas.cli import main
from bonas.config import DataConfig
from bonas.core.errors import DataError
from bonas.data.augment import Preprocess, random_crop
from bonas.data.batches import Batches
from bonas.data.idx import DEBIAN_FASHION_MNIST, read_idx
from bonas.data.images import MemoryImages
from bonas.data.raw import balanced_subset, stratified_split
from bonas.data.sources import from_raw, load_raw
from bonas.data.splits import channel_stats, load_splits, make_splits
from tests.helpers import make_cifar_dir, make_idx_dir, make_image_tree, require, tiny_config_text

RNG = np.random.default_rng(0)


def cfg(tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(dir=str(tmp_path / "data"), **kw)


# --- loaders --------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader(tmp_path, name, compress):
    arrays = make_idx_dir(tmp_path / "data" / name, compress=compress)
    raw = load_raw(name, cfg(tmp_path))
    assert raw.train_x.shape == (60, 1, 28, 28) and raw.train_x.dtype == torch.uint8
    assert torch.equal(raw.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert raw.test_y.tolist() == (np.arange(20) % 10).tolist()
    assert len(raw.classes) == 10 and (raw.classes[0] == "T-shirt/top") == (name == "fashion-mnist")


def test_idx_in_torchvision_layout_is_found(tmp_path):
    make_idx_dir(tmp_path / "data" / "FashionMNIST" / "raw")
    assert load_raw("fashion-mnist", cfg(tmp_path)).train_x.shape[0] == 60


def test_corrupt_idx_is_a_clear_error(tmp_path):
    folder = tmp_path / "data" / "mnist"
    make_idx_dir(folder)
    short = b"\x00\x00\x08\x03" + struct.pack(">III", 60, 28, 28) + b"short"
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(short))
    with pytest.raises(DataError, match="IDX header says"):
        load_raw("mnist", cfg(tmp_path))
    with pytest.raises(DataError, match="bad magic"):
        (folder / "x.gz").write_bytes(gzip.compress(b"\x12\x34\x56\x78"))
        read_idx(folder / "x.gz")


@pytest.mark.parametrize("hundred", [False, True], ids=["cifar10", "cifar100"])
def test_cifar_loader(tmp_path, hundred):
    name = "cifar100" if hundred else "cifar10"
    make_cifar_dir(tmp_path / "data" / ("cifar-100-python" if hundred else "cifar-10-batches-py"), hundred)
    raw = load_raw(name, cfg(tmp_path))
    assert raw.train_x.shape == (100, 3, 32, 32) and raw.test_x.shape == (20, 3, 32, 32)
    assert raw.train_x.dtype == torch.uint8 and raw.train_y.dtype == torch.int64
    assert len(raw.classes) == (100 if hundred else 10) and raw.classes[3] == "c3"


def test_cifar_pixel_layout_is_channel_planes(tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    make_cifar_dir(folder)
    first = pickle.loads((folder / "data_batch_1").read_bytes())[b"data"][0]
    raw = load_raw("cifar10", cfg(tmp_path))
    # 1024 red values, then green, then blue, each row-major 32x32
    assert raw.train_x[0, 1, 0, 5].item() == first[1024 + 5]
    assert raw.train_x[0, 2, 3, 0].item() == first[2048 + 3 * 32]


class RunsACommand:
    """What a hostile 'CIFAR batch' holds: unpickling it calls os.system (pickle stores posix.system)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, where):
    """A pickle naming os.system in place of a batch (or of the meta file): DataError naming the file and
    the global, and the command never runs. With plain pickle.load the command runs and no DataError comes."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    make_cifar_dir(folder)
    marker = tmp_path / "MARKER"
    (folder / where).write_bytes(pickle.dumps({b"data": RunsACommand(f"touch {marker}"), b"labels": [0]}))
    with pytest.raises(DataError) as caught:
        load_raw("cifar10", cfg(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"{folder / where}: refused to unpickle global posix.system") and "\n" not in message, message
    assert not marker.exists(), "the pickle's command ran"


def test_cifar_batches_in_numpy_and_python_pickle_protocols_load(tmp_path):
    """The unpickler accepts what real batches name: numpy's _reconstruct/ndarray/dtype (protocols 0-4, also
    as numpy 1 spells them, numpy.core), _frombuffer (protocol 5), _codecs.encode for bytes (protocol 2)."""
    folder = tmp_path / "data" / "cifar-10-batches-py"
    make_cifar_dir(folder)
    for i, protocol in enumerate((0, 2, 4, 5), start=1):
        batch = pickle.loads((folder / f"data_batch_{i}").read_bytes())
        data = pickle.dumps(batch, protocol=protocol)
        if protocol == 0:  # the original batches were pickled by numpy 1 under Python 2
            assert b"numpy._core.multiarray" in data
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / f"data_batch_{i}").write_bytes(data)
    raw = load_raw("cifar10", cfg(tmp_path))
    assert raw.train_x.shape == (100, 3, 32, 32) and raw.train_y.tolist()[:3] == [0, 1, 2]


@pytest.mark.parametrize("channels", [1, 3])
def test_imagefolder_loader(tmp_path, channels):
    make_image_tree(tmp_path / "imgs")
    raw = load_raw("imagefolder", cfg(tmp_path, root=str(tmp_path / "imgs"), image_size=8, channels=channels))
    assert raw.classes == ["cat", "dog", "owl"]
    assert raw.train_x.shape[1:] == (channels, 8, 8) and raw.train_x.dtype == torch.uint8
    assert len(raw.train_y) + len(raw.test_y) == 18
    assert len(raw.test_y) == 4 and set(raw.test_y.tolist()) == {0, 1, 2}, "a fixed, stratified 20% test split"


def test_imagefolder_with_train_and_test_folders(tmp_path):
    make_image_tree(tmp_path / "imgs" / "train", per_class=4)
    make_image_tree(tmp_path / "imgs" / "test", per_class=2)
    raw = load_raw("imagefolder", cfg(tmp_path, root=str(tmp_path / "imgs"), image_size=8, channels=3))
    assert (len(raw.train_y), len(raw.test_y)) == (12, 6)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        load_raw("imagefolder", cfg(tmp_path, root=str(tmp_path / "nope")))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_raw("imagefolder", cfg(tmp_path, root=str(tmp_path / "empty")))
    make_image_tree(tmp_path / "bad")
    (tmp_path / "bad" / "dog").rename(tmp_path / "bad" / "hollow")
    for f in (tmp_path / "bad" / "hollow").iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(DataError, match="class 'hollow': none of its images could be read"):
        load_raw("imagefolder", cfg(tmp_path, root=str(tmp_path / "bad")))
    assert not [p for p in (tmp_path / "data" / "cache").glob("imagefolder-*") if p.is_dir()], "a failed build leaves nothing"


def test_decoded_tensors_are_cached(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "data" / "mnist")
    first = load_raw("mnist", cfg(tmp_path))
    cached = [p for p in (tmp_path / "data" / "cache").glob("mnist-*") if p.is_dir()]
    assert len(cached) == 1 and {f.name for f in cached[0].iterdir()} == {"images.u8", "labels.npy", "meta.json"}
    import bonas.data.idx

    def no_decoding(*a, **k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(bonas.data.idx, "_decode_idx", no_decoding)
    second = load_raw("mnist", cfg(tmp_path))
    assert torch.equal(first.train_x, second.train_x)


def test_changed_source_files_invalidate_the_cache(tmp_path):
    folder = tmp_path / "data" / "mnist"
    make_idx_dir(folder, n_train=60)
    assert load_raw("mnist", cfg(tmp_path)).train_x.shape[0] == 60
    make_idx_dir(folder, n_train=40)
    assert load_raw("mnist", cfg(tmp_path)).train_x.shape[0] == 40


def test_debian_fashion_mnist_is_found():
    require(DEBIAN_FASHION_MNIST.is_dir(), "Debian's dataset-fashion-mnist is missing (apt-get install dataset-fashion-mnist)")
    raw = load_raw("fashion-mnist", DataConfig(dir="/nonexistent-bonas-dir"))
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert str(DEBIAN_FASHION_MNIST) in raw.source
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10


def test_missing_data_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """No files and no reachable mirror: one line naming the data set, where it looked and how to get it."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a real, closed port: the download fails
    path = tmp_path / "m.toml"
    path.write_text(tiny_config_text(name="m").replace('dataset = "digits"', 'dataset = "mnist"'))
    code = main(["search", str(path), "--data-dir", str(tmp_path / "nodata")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("bonas: mnist: not found") and str(tmp_path / "nodata") in err and "download failed" in err
    assert not path.with_suffix(".db").exists(), "no study is created when the data is missing"


# --- splits, statistics, batches, augmentation ------------------------------------------------------


def test_splits_are_disjoint_stratified_and_seeded(tmp_path):
    y = torch.arange(1000) % 10
    keep, held = stratified_split(y, 0.2, seed=1)
    assert len(held) == 200 and len(keep) == 800 and not set(keep.tolist()) & set(held.tolist())
    assert torch.bincount(y[held]).tolist() == [20] * 10
    again_keep, again_held = stratified_split(y, 0.2, seed=1)
    assert torch.equal(held, again_held) and torch.equal(keep, again_keep)
    assert not torch.equal(held, stratified_split(y, 0.2, seed=2)[1])


def test_subsets_are_exact_and_class_balanced():
    y = torch.cat([torch.zeros(700), torch.ones(300)]).long()
    sub = balanced_subset(y, 101, seed=0)
    assert len(sub) == 101 and torch.bincount(y[sub]).tolist() == [71, 30]
    assert len(balanced_subset(y, 0, seed=0)) == 1000


def test_load_splits_digits(tmp_path):
    s = load_splits("digits", cfg(tmp_path, val_fraction=0.25, train_subset=500, val_subset=200), seed=0)
    assert (len(s.train), len(s.val)) == (500, 200)
    assert s.input_shape == (1, 8, 8) and s.n_classes == 10 and not s.streamed
    s2 = load_splits("digits", cfg(tmp_path, val_fraction=0.25, train_subset=500, val_subset=200), seed=0)
    assert torch.equal(s.take(s.val)[0], s2.take(s2.val)[0]), "the same seed gives the same split"
    # the test split never changes with the study's seed
    s3 = load_splits("digits", cfg(tmp_path), seed=7)
    assert torch.equal(s.take(s.test)[0], s3.take(s3.test)[0])


def test_splits_disjoint_by_index(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=200)
    raw = load_raw("mnist", cfg(tmp_path))
    # give every training image a unique id in its first pixels, then check membership
    raw.train_x[:, 0, 0, 0] = torch.arange(200) % 256
    raw.train_x[:, 0, 0, 1] = torch.arange(200) // 256
    s = make_splits("mnist", from_raw(raw), cfg(tmp_path, val_fraction=0.3), seed=3)
    ids = lambda rows: set((s.take(rows)[0][:, 0, 0, 0].long() + 256 * s.take(rows)[0][:, 0, 0, 1].long()).tolist())  # noqa: E731
    assert len(ids(s.train)) == 140 and len(ids(s.val)) == 60 and not ids(s.train) & ids(s.val)


def test_normalisation_uses_the_training_split_only(tmp_path):
    make_idx_dir(tmp_path / "data" / "mnist", n_train=100)
    raw = load_raw("mnist", cfg(tmp_path))
    raw.test_x[:] = 255  # a test split that would shift any statistic it leaked into
    s = make_splits("mnist", from_raw(raw), cfg(tmp_path, val_fraction=0.2), seed=0)
    mean, std = channel_stats(s.images, s.train)
    assert s.mean == mean and s.std == std
    train_x = s.take(s.train)[0]
    assert abs(s.mean[0] - train_x.double().div(255).mean().item()) < 1e-9
    assert abs(s.std[0] - train_x.double().div(255).std().item()) < 1e-9
    x = Preprocess(s.mean, s.std)(train_x)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-2


def test_channel_statistics_are_exact_over_chunks_and_channels(monkeypatch):
    from bonas.data import splits as splits_module
    from bonas.data.images import MemoryImages

    monkeypatch.setattr(splits_module, "STATS_CHUNK_BYTES", 3 * 5 * 4 * 7)  # 7 images a step: several steps
    x = torch.randint(0, 256, (50, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 2] //= 4  # channels that differ
    rows = torch.arange(3, 47)
    mean, std = channel_stats(MemoryImages(x), rows)
    chosen = x[rows].double().div(255).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), chosen.mean(dim=1), atol=1e-12)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), chosen.std(dim=1), atol=1e-12)


def test_batches_are_index_slices_covering_every_sample_once():
    images, y, rows = MemoryImages(torch.arange(103).view(103, 1, 1, 1).to(torch.uint8)), torch.arange(103), torch.arange(103)
    seen = []
    for xb, yb in Batches(images, y, rows, 10, shuffle=True, seed=0):
        assert xb.dtype == torch.uint8 and len(xb) == len(yb) <= 10
        assert torch.equal(xb.flatten().long(), yb)
        seen += yb.tolist()
    assert sorted(seen) == list(range(103)) and seen != list(range(103))
    assert len(Batches(images, y, rows, 10, shuffle=False)) == 11
    first = [yb.tolist() for _, yb in Batches(images, y, rows, 10, shuffle=True, seed=5)]
    assert first == [yb.tolist() for _, yb in Batches(images, y, rows, 10, shuffle=True, seed=5)]


def test_augmentation_keeps_shapes_and_dtypes_and_moves_pixels():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop(x, 4)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert not torch.equal(out, x), "some images shifted"
    # a shifted image is the original moved: its centre survives somewhere
    pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_pad=4, flip=True)
    aug = pre(x, augment=True)
    assert aug.shape == x.shape and aug.dtype == torch.float32
    plain = pre(x, augment=False)
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.25, atol=1e-6)  # one multiply-add: float32 rounding
    # flips only: every image is itself or its mirror
    flip_only = Preprocess((0.0,) * 3, (1.0,) * 3, crop_pad=0, flip=True)(x, augment=True) * 255
    mirrored = (flip_only.round() == x.flip(3).float()).flatten(1).all(1)
    same = (flip_only.round() == x.float()).flatten(1).all(1)
    assert bool((mirrored | same).all()) and mirrored.any() and same.any()


def test_crop_is_a_translation():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[0, 0, 4, 4] = 200
    outs = {tuple(torch.nonzero(random_crop(x, 2)[0, 0]).flatten().tolist()) for _ in range(200)}
    assert len(outs) > 5
    for pos in outs:
        if pos:
            assert abs(pos[0] - 4) <= 2 and abs(pos[1] - 4) <= 2


def test_augment_search_is_a_trial_parameter(tiny_config):
    import optuna

    from bonas.config import load_config
    from bonas.nas.space import suggest_training

    path = tiny_config()
    path.write_text(path.read_text().replace("[data]\n", '[data]\naugment = "search"\n'))
    config = load_config(path)
    trial = optuna.trial.FixedTrial({"lr": 0.01, "weight_decay": 1e-4, "augment": True})
    assert suggest_training(trial, config.training, config.data).augment is True
