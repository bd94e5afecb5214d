"""Arrays: images and labels you already hold as numpy files, ``dataset = "arrays"``.

``[data] arrays`` names one ``.npz`` (keys ``x``/``y``, ``images``/``labels`` or Keras' ``x_train``/``y_train``
with ``x_test``/``y_test``; an optional ``classes`` array names the classes) or two ``.npy`` files (images, then
labels); ``[data] test_arrays`` the test split in the same form (else the npz's ``x_test``, else a fixed, stratified
20 %). Images are (N, H, W) or (N, H, W, C) — or (N, C, H, W) where that is unambiguous — uint8, or floats in
[0, 1] or [0, 255]; labels are one integer (or string) per image. They are written once into a store
(bonas.data.store), a chunk at a time: ``.npy`` files are memory-mapped, so a set larger than memory streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bonas.config import DataConfig
from bonas.config.checks import Fail
from bonas.core.errors import DataError
from bonas.data.raw import cache_dir, fingerprint, stratified_split
from bonas.data.store import Plan, Store, Writer, build_store

KEY_PAIRS = (("x", "y"), ("images", "labels"), ("x_train", "y_train"))
TEST_FRACTION, TEST_SEED = 0.2, 20_240_601  # as for an ImageFolder without train/ and test/


def check(data: DataConfig, fail: Fail) -> None:
    for key in ("arrays", "test_arrays"):
        paths = getattr(data, key)
        if key == "arrays" and not paths:
            fail(key, 'dataset = \'arrays\' needs data.arrays: ["data.npz"] or ["images.npy", "labels.npy"]')
        if (
            len(paths) > 2
            or (len(paths) == 1 and not paths[0].endswith(".npz"))
            or (len(paths) == 2 and not all(p.endswith(".npy") for p in paths))
        ):
            fail(key, f"one .npz file or two .npy files (images, labels), got {paths}")


def _open(paths: list[str], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list | None]:
    """(images, labels, test images or None, test labels or None, class names or None) as stored, unconverted."""
    try:
        if len(paths) == 2:
            return np.load(paths[0], mmap_mode="r"), np.load(paths[1], mmap_mode="r"), None, None, None
        npz = np.load(paths[0], allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"arrays: {where}: cannot read {', '.join(paths)}: {str(err).splitlines()[0]}") from None
    keys = set(npz.files)
    pair = next(((x, y) for x, y in KEY_PAIRS if {x, y} <= keys), None)
    if pair is None:
        raise DataError(
            f"arrays: {paths[0]} holds {sorted(keys)}; name the arrays x and y (or images and labels, x_train and y_train)"
        )
    test = ("x_test", "y_test") if {"x_test", "y_test"} <= keys else None
    classes = next((list(npz[k]) for k in ("classes", "class_names") if k in keys), None)
    x_test, y_test = (npz[test[0]], npz[test[1]]) if test else (None, None)
    return npz[pair[0]], npz[pair[1]], x_test, y_test, classes


def _layout(x: np.ndarray, where: str) -> tuple[tuple[int, int, int], bool]:
    """(one image's (C, H, W), whether the array is channels-first)."""
    if x.ndim == 3:
        return (1, x.shape[1], x.shape[2]), False
    if x.ndim == 4 and x.shape[3] in (1, 3, 4):
        return (min(3, x.shape[3]), x.shape[1], x.shape[2]), False
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return (x.shape[1], x.shape[2], x.shape[3]), True
    raise DataError(f"arrays: {where}: images of shape {x.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W), C 1 or 3")


def pixel_scale(arrays: list[np.ndarray], where: str) -> float:
    """What turns the images' values into 0..255, decided once for the whole set: 1 for uint8, 255 for floats in
    [0, 1], 1 for floats in [0, 255], 255 / max for wider integers."""
    dtype = arrays[0].dtype
    if dtype == np.uint8:
        return 1.0
    if dtype == np.bool_:
        return 255.0
    if np.issubdtype(dtype, np.integer):
        return 255.0 / np.iinfo(dtype).max if np.iinfo(dtype).max > 255 else 1.0
    if not np.issubdtype(dtype, np.floating):
        raise DataError(f"arrays: {where}: images of dtype {dtype}; expected uint8, integers or floats")
    lo, hi = min(float(np.min(a)) for a in arrays), max(float(np.max(a)) for a in arrays)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DataError(f"arrays: {where}: the images hold NaN or infinite values")
    if lo < 0 or hi > 255:
        raise DataError(f"arrays: {where}: images span [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
    return 255.0 if hi <= 1.0 else 1.0


def to_uint8(x: np.ndarray, scale: float) -> np.ndarray:
    if x.dtype == np.uint8:
        return np.asarray(x)
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * scale), 0, 255).astype(np.uint8)


def _labels(y: np.ndarray, n: int, where: str, classes: list | None) -> tuple[np.ndarray, list[str]]:
    """Labels as 0..K-1 and the class names: ``classes`` when the labels index it, else the sorted distinct labels."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        got = len(y) if y.ndim == 1 else f"an array of shape {y.shape} of"
        raise DataError(f"arrays: {where}: {got} labels for {n} images; give one label per image")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"arrays: {where}: labels must be whole numbers or strings, got values like {y[0]!r}")
    if classes is not None and np.issubdtype(y.dtype, np.number) and y.min() >= 0 and y.max() < len(classes):
        return y.astype(np.int64), [str(c) for c in classes]
    values = np.unique(y)
    return np.searchsorted(values, y).astype(np.int64), [str(v) for v in values]


def load_arrays(data: DataConfig, root: Path) -> Store:
    x, y, x_test, y_test, classes = _open(data.arrays, "data.arrays")
    if data.test_arrays:
        x_test, y_test, _, _, _ = _open(data.test_arrays, "data.test_arrays")
    shape, channels_first = _layout(x, "data.arrays")
    labels, names = _labels(y, len(x), "data.arrays", classes)
    if x_test is not None:
        if _layout(x_test, "test")[0] != shape:
            raise DataError(f"arrays: test images {x_test.shape[1:]} differ from the training images {x.shape[1:]}")
        test_labels = _labels(y_test, len(x_test), "test labels", names)[0]
        rows = [(x, i) for i in range(len(x))] + [(x_test, i) for i in range(len(x_test))]
        all_labels, n_train = np.concatenate([labels, test_labels]), len(x)
    else:
        keep, held = (t.numpy() for t in stratified_split(torch.from_numpy(labels), TEST_FRACTION, TEST_SEED))
        rows = [(x, i) for i in keep] + [(x, i) for i in held]
        all_labels, n_train = np.concatenate([labels[keep], labels[held]]), len(keep)
    scale = pixel_scale([a for a in (x, x_test) if a is not None], "data.arrays")
    files = [Path(p) for p in data.arrays + data.test_arrays]

    def plan() -> Plan:
        return Plan(shape, len(rows), n_train, names, f"arrays {', '.join(data.arrays + data.test_arrays)}")

    def fill(writer: Writer) -> None:
        for chunk in writer.todo():
            r = writer.rows(chunk)
            batch = to_uint8(np.stack([source[i] for source, i in rows[r.start : r.stop]]), scale)
            if batch.ndim == 3:
                batch = batch[:, None]
            elif not channels_first:
                batch = batch[..., : shape[0]].transpose(0, 3, 1, 2)
            writer.write(chunk, batch, all_labels[r.start : r.stop])

    return build_store(cache_dir(root), f"arrays-{fingerprint(files)}", plan, fill)
