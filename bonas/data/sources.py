"""The data sets a study may name (``dataset = ...``): one registry, read by the config check and by
:func:`load_raw`, with what augmentation makes sense for each.

Each source decodes its data once into uint8 tensors (N, C, H, W) and int64 labels (bonas.data.raw caches them):
``digits`` (scikit-learn, bundled), ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100`` (the original files
found on disk, else downloaded with torchvision), ``imagefolder`` (your own images). Data sets without an
official test split get a fixed, stratified one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonas.config import DataConfig, StudyConfig
from bonas.config.checks import Fail, one_of
from bonas.core.errors import DataError
from bonas.data.cifar import load_cifar
from bonas.data.idx import load_idx_dataset
from bonas.data.imagefolder import load_imagefolder
from bonas.data.raw import RawData, cached, data_dir, stratified_split

DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: a fixed one (seed below) stands in
DIGITS_TEST_SEED = 20_240_601


@dataclass(frozen=True)
class DataSource:
    """How a data set is read, and which augmentations make sense for it."""

    load: Callable[[DataConfig, Path], RawData]  # (the [data] settings, the data dir) -> the decoded data set
    crop_pad: int | None  # random crop after padding by this many pixels; None: an eighth of the image's side
    flip: bool  # random horizontal flips: clothes, objects and photos survive one, digits do not
    check: Callable[[DataConfig, Fail], None] | None = None  # its own [data] settings, before anything is read


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
    "imagefolder": DataSource(
        lambda data, root: load_imagefolder(Path(data.root).expanduser(), data.image_size, data.channels, root),
        None,
        True,
        _check_imagefolder,
    ),
}


def check(config: StudyConfig) -> None:
    """The data set is registered, and its own settings can work."""
    one_of(config.fail(), "dataset", config.dataset, DATA_SOURCES)
    source = DATA_SOURCES[config.dataset]
    if source.check is not None:
        source.check(config.data, config.fail("data"))


def load_raw(name: str, config: DataConfig) -> RawData:
    if name not in DATA_SOURCES:
        raise DataError(f"unknown dataset {name!r}; registered: {', '.join(DATA_SOURCES)}")
    return DATA_SOURCES[name].load(config, data_dir(config))
