"""Data handed over from Python: any ``torch.utils.data.Dataset`` of (image, label) pairs, a (train, test) pair of
them, or a LightningDataModule, for ``bonas.search(..., data=...)`` and ``bonas.run(..., data=...)``.

The data is read once into a store (bonas.data.store) named by a fingerprint of every image and label, so a
second run with the same data reads the store and spawned worker processes find it by path (``[data] store``,
with ``dataset = "python"``). The study records the data's name and fingerprint: resuming it with other data is
refused in one line. Images may be tensors or arrays (C, H, W) — floats in [0, 1] or uint8 — or PIL images.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bonas.config import DataConfig
from bonas.config.checks import Fail
from bonas.core.errors import DataError
from bonas.data.raw import cache_dir, stratified_split
from bonas.data.store import Plan, Store, Writer, is_complete

TEST_FRACTION, TEST_SEED = 0.2, 20_240_601  # a Dataset without a test split gets this one, as an ImageFolder does
READ_BATCH = 256


def check(data: DataConfig, fail: Fail) -> None:
    if not data.store:
        fail("store", "dataset = 'python' takes its images from Python: bonas.search(config, data=your_dataset)")


def load_python(data: DataConfig, root: Path) -> Store:
    path = Path(data.store)
    if not is_complete(path):
        raise DataError(f"python data: {path} is not a complete store of decoded images; pass data= again")
    return Store(path)


def _array(image: Any) -> np.ndarray:
    """One image as uint8 (C, H, W)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB" if image.mode not in ("L", "1") else "L"))
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise DataError(f"python data: an image of shape {array.shape}; expected (C, H, W) with C 1 or 3")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < -1e-6 or array.max() > 1 + 1e-6:
            raise DataError("python data: float images must hold values in [0, 1] (as torchvision's ToTensor gives)")
        return np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    raise DataError(f"python data: images of dtype {array.dtype}; expected uint8, floats in [0, 1] or PIL images")


def _items(dataset: Any):
    """(image, label) pairs of a Dataset, or of the batches a DataLoader gives."""
    if isinstance(dataset, torch.utils.data.DataLoader):
        for images, labels in dataset:
            yield from zip(images, labels.tolist() if isinstance(labels, torch.Tensor) else labels, strict=True)
        return
    for i in range(len(dataset)):
        image, label = dataset[i][:2]
        yield image, int(label)


def _splits(data: Any) -> tuple[Any, Any | None, str]:
    """(train, test or None, name) of what the user passed."""
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1], type(data[0]).__name__
    if hasattr(data, "setup") and hasattr(data, "train_dataloader"):  # a LightningDataModule
        if hasattr(data, "prepare_data"):
            data.prepare_data()
        data.setup("fit")
        train = data.train_dataloader()
        test = None
        try:
            data.setup("test")
            test = data.test_dataloader()
        except Exception:  # noqa: BLE001  (Lightning raises its own error when test_dataloader is not defined)
            test = None
        return train, test, type(data).__name__
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return data, None, type(data).__name__
    raise DataError(f"data={type(data).__name__}: pass a torch Dataset of (image, label), a (train, test) pair or a DataModule")


def store_from_python(data: Any, root: Path) -> tuple[Store, str, str]:
    """(the store, the data's name, its fingerprint): read once, stored once per distinct content."""
    train, test, name = _splits(data)
    cache = cache_dir(root)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"python-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    digest, rows = hashlib.sha256(), []
    for part in (train, test):
        rows.append([])
        for image, label in _items(part) if part is not None else ():
            array = _array(image)
            digest.update(array.tobytes() + int(label).to_bytes(8, "little", signed=True))
            rows[-1].append((array, int(label)))
    if not rows[0]:
        raise DataError(f"python data {name}: no training images")
    fingerprint = digest.hexdigest()[:16]
    final = cache / f"python-{fingerprint}"
    if not is_complete(final):
        _write(partial, final, rows, name)
    return Store(final), name, fingerprint


def _write(partial: Path, final: Path, rows: list[list[tuple[np.ndarray, int]]], name: str) -> None:
    train, test = rows
    if not test:  # a fixed, stratified test split
        keep, held = stratified_split(torch.tensor([y for _, y in train]), TEST_FRACTION, TEST_SEED)
        train, test = [train[i] for i in keep.tolist()], [train[i] for i in held.tolist()]
    everything = train + test
    shapes = {a.shape for a, _ in everything}
    if len(shapes) != 1:
        raise DataError(f"python data {name}: images of several shapes {sorted(shapes)[:3]}; resize them to one")
    labels = sorted({y for _, y in everything})
    index = {y: i for i, y in enumerate(labels)}
    source = f"Python data {name} (fingerprint {final.name.removeprefix('python-')})"
    plan = Plan(shapes.pop(), len(everything), len(train), [str(y) for y in labels], source)
    writer = Writer(partial, plan)
    for chunk in writer.todo():
        r = writer.rows(chunk)
        part = everything[r.start : r.stop]
        writer.write(chunk, np.stack([a for a, _ in part]), np.array([index[y] for _, y in part], dtype=np.int64))
    writer.finish(final)
