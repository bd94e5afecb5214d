"""MNIST and Fashion-MNIST: the original IDX files (optionally .gz), found on disk (Debian's
dataset-fashion-mnist included) or downloaded by torchvision."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from bonas.core.errors import DataError
from bonas.data.download import download_torchvision
from bonas.data.raw import RawData, cached

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): the format of the original MNIST and Fashion-MNIST files."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read IDX file: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) but holds {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_candidates(name: str, root: Path) -> list[Path]:
    tv = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    dirs = [root / name, root / name / "raw", root / tv / "raw"]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def _find_idx(d: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (d / f"{stem}.gz", d / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def load_idx_dataset(name: str, root: Path) -> RawData:
    dirs = _idx_candidates(name, root)
    for d in dirs:
        files = _find_idx(d)
        if files:
            return cached(root, name, list(files.values()), lambda f=files, d=d: _decode_idx(name, f, d))
    raw = download_torchvision(name, root, dirs)
    return raw


def _decode_idx(name: str, files: dict[str, Path], where: Path) -> RawData:
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{where}: {split} images {x.shape} and labels {y.shape} do not match")
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return RawData(
        torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["test_y"].astype(np.int64)),
        classes,
        f"IDX files in {where}",
    )
