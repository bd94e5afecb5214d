"""The data sets a study may name (``dataset = ...``): one registry, read by the config check and by
:func:`load_raw`, with what augmentation makes sense for each.

Each source decodes its data once into uint8 tensors (N, C, H, W) and int64 labels (bonas.data.raw caches them):
``digits`` (scikit-learn, bundled), ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` (the original files
found on disk, else downloaded with torchvision), ``imagefolder`` (your own images). Data sets without an
official test split get a fixed, stratified one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonas.config import DataConfig, StudyConfig
from bonas.config.checks import Fail, one_of
from bonas.core.errors import DataError
from bonas.data import arrays, python
from bonas.data.arrays import load_arrays
from bonas.data.cifar import load_cifar
from bonas.data.idx import load_idx_dataset
from bonas.data.imagefolder import load_imagefolder
from bonas.data.images import DiskImages, Images, MemoryImages
from bonas.data.python import load_python
from bonas.data.raw import RawData, cached, data_dir, stratified_split
from bonas.data.store import Store

DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: a fixed one (seed below) stands in
DIGITS_TEST_SEED = 20_240_601


@dataclass(frozen=True)
class DataSource:
    """How a data set is read, and which augmentations make sense for it."""

    # (the [data] settings, the data dir) -> the decoded data set: tensors (RawData), or a store on disk
    load: Callable[[DataConfig, Path], RawData | Store]
    crop_pad: int | None  # random crop after padding by this many pixels; None: an eighth of the image's side
    flip: bool | None  # random horizontal flips (clothes, objects, photos survive one, digits do not); None: [data] flip
    check: Callable[[DataConfig, Fail], None] | None = None  # its own [data] settings, before anything is read
    resized_crop: bool = False  # augment with a random-resized crop instead of the padded one (photos)


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    classes = [str(c) for c in d.target_names]
    return RawData(x[train], y[train], x[test], y[test], classes, "sklearn.datasets.load_digits")


def _check_imagefolder(data: DataConfig, fail: Fail) -> None:
    if not data.root:
        fail("root", "dataset = 'imagefolder' needs data.root, the folder holding root/<class>/*.png")


DATA_SOURCES: dict[str, DataSource] = {
    # an 8x8 digit cannot be cropped (a pixel is an eighth of it) or mirrored (another symbol)
    "digits": DataSource(lambda data, root: cached(root, "digits", [], _load_digits), 0, False),
    "mnist": DataSource(lambda data, root: load_idx_dataset("mnist", root), 2, False),
    "fashion-mnist": DataSource(lambda data, root: load_idx_dataset("fashion-mnist", root), 2, True),
    "cifar10": DataSource(lambda data, root: load_cifar("cifar10", root), 4, True),
    "cifar100": DataSource(lambda data, root: load_cifar("cifar100", root), 4, True),
    "imagefolder": DataSource(load_imagefolder, None, None, _check_imagefolder, resized_crop=True),
    "arrays": DataSource(load_arrays, None, None, arrays.check),
    "python": DataSource(load_python, None, None, python.check),  # bonas.search(..., data=...) fills [data] store
}


def check(config: StudyConfig) -> None:
    """The data set is registered, and its own settings can work."""
    one_of(config.fail(), "dataset", config.dataset, DATA_SOURCES)
    source = DATA_SOURCES[config.dataset]
    if source.check is not None:
        source.check(config.data, config.fail("data"))


@dataclass
class Decoded:
    """A data set as the splits see it: every row's image, in memory or on disk, and its label."""

    images: Images  # (N, C, H, W) uint8: the official training split's rows, then its test split's
    labels: torch.Tensor  # (N,) int64; -1: a row whose image could not be read
    n_train: int
    classes: list[str]
    source: str


def from_raw(raw: RawData) -> Decoded:
    """Tensors a reader returned, as rows in memory (one copy, for a data set small enough to decode into tensors)."""
    images = MemoryImages(torch.cat([raw.train_x, raw.test_x]))
    return Decoded(images, torch.cat([raw.train_y, raw.test_y]), len(raw.train_y), list(raw.classes), raw.source)


# Auto memory limit on a CPU: at most half a GiB (or a sixteenth of the machine's memory) per process. A process
# already holds ~1 GB of torch and Lightning; 20 000 photos at 128 px (1 GB of pixels) held in memory took one to
# 2.4 GB, streamed to 1.4 GB, at 0.84x the images per second (bench/own_data.py).
CPU_MEMORY_LIMIT = 512 * 2**20
CPU_MEMORY_SHARE = 16
GPU_MEMORY_SHARE = 8  # on a GPU the data lives in the GPU's memory: an eighth of it


def memory_limit(config: DataConfig, workers: int = 1) -> int:
    """Bytes of images one process may hold in memory: ``[data] memory_limit_mb``, else (auto) CPU_MEMORY_LIMIT or a
    CPU_MEMORY_SHARE of the machine's memory, or a GPU_MEMORY_SHARE of the GPU's, shared by ``workers``."""
    if config.memory_limit_mb:
        return int(config.memory_limit_mb * 2**20)
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory // (GPU_MEMORY_SHARE * max(1, workers))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(CPU_MEMORY_LIMIT, ram // CPU_MEMORY_SHARE) // max(1, workers)


def decode(name: str, config: DataConfig, workers: int = 1) -> Decoded:
    """The data set, decoded once (its store) and held in memory when it fits :func:`memory_limit`, else streamed."""
    if name not in DATA_SOURCES:
        raise DataError(f"unknown dataset {name!r}; registered: {', '.join(DATA_SOURCES)}")
    got = DATA_SOURCES[name].load(config, data_dir(config))
    if isinstance(got, RawData):
        return from_raw(got)
    plan, labels = got.plan, torch.from_numpy(got.labels)
    if got.nbytes <= memory_limit(config, workers):
        images: Images = MemoryImages(torch.from_numpy(got.read_all()))
    else:
        images = DiskImages(got.images_file, (plan.rows, *plan.shape))
    return Decoded(images, labels, plan.n_train, list(plan.classes), plan.source)


def load_raw(name: str, config: DataConfig) -> RawData:
    """The whole data set as tensors, whatever its size (small data sets, tests and benches)."""
    data = decode(name, dataclasses.replace(config, memory_limit_mb=1e12))
    x, y, n = data.images.x, data.labels, data.n_train
    return RawData(x[:n], y[:n], x[n:], y[n:], data.classes, data.source)
