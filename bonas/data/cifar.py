"""CIFAR-10 and CIFAR-100: the extracted python batches, found on disk or downloaded by torchvision, read with an
unpickler that runs no code from the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from bonas.core.errors import DataError
from bonas.data.download import download_torchvision
from bonas.data.raw import RawData, cached

CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        b"labels",
        b"label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"),
}


def load_cifar(name: str, root: Path) -> RawData:
    folder = CIFAR[name][0]
    dirs = [root / folder, root / name / folder, root / name]
    for d in dirs:
        files = [d / f for f in (*CIFAR[name][1], *CIFAR[name][2], CIFAR[name][3])]
        if all(f.is_file() for f in files):
            return cached(root, name, files, lambda d=d: _decode_cifar(name, d))
    return download_torchvision(name, root, dirs)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 pickles bytes at protocol 2, for the latin-1 codec only."""
    if not isinstance(text, str) or encoding.replace("_", "-").lower() not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}: only latin-1 is accepted")
    return text.encode("latin-1", errors)


def _cifar_globals() -> dict[tuple[str, str], object]:
    """The only callables a CIFAR batch may name: numpy arrays and dtypes (numpy 1 and 2 spellings)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x before the rename
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct  # protocols 0-4
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class CifarUnpickler(pickle.Unpickler):
    """Unpickling runs whatever callable a file names: a CIFAR batch from an untrusted data dir could run any
    command. Real batches hold dicts, lists, bytes, ints and numpy arrays, so only numpy's array and dtype
    constructors are looked up; any other global is refused with a DataError naming the file and the global."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path
        self.allowed = _cifar_globals()

    def find_class(self, module: str, name: str):
        found = self.allowed.get((module, name))
        if found is None:
            raise DataError(
                f"{self.path}: refused to unpickle global {module}.{name}: a CIFAR batch holds only dicts, lists, "
                "bytes and numpy arrays (bonas never runs code from a data file)"
            )
        return found


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return CifarUnpickler(f, path).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataError(f"{path}: cannot read CIFAR batch: {err}") from None


def _decode_cifar(name: str, d: Path) -> RawData:
    _, train_files, test_files, meta_file, label_key, names_key = CIFAR[name]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            batch = _unpickle(d / f)
            if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
                raise DataError(f"{d / f}: not a {name} batch (missing data or {label_key.decode()})")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    meta = _unpickle(d / meta_file)
    if not isinstance(meta, dict):
        raise DataError(f"{d / meta_file}: not a {name} meta file (a {type(meta).__name__}, not a dict)")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(names_key, [])]
    return RawData(train_x, train_y, test_x, test_y, classes, f"CIFAR batches in {d}")
