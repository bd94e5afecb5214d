"""Reading data sets: each one decoded once into uint8 tensors (N, C, H, W) and int64 labels, cached.

Sources, by name: ``digits`` (scikit-learn, bundled), ``mnist``, ``fashion-mnist``, ``cifar10``,
``cifar100`` (the original IDX .gz files or CIFAR python batches found on disk, else downloaded with
torchvision), ``imagefolder`` (``root/<class>/*.png|jpg``; ``root/train`` + ``root/test`` when present).
Decoded tensors are cached in ``<data dir>/cache/`` keyed by the source files, so a second trial or
worker never decodes again. Data sets without an official test split get a fixed, stratified one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bonas.config import DataConfig
from bonas.core.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: a fixed one (seed below) stands in
DIGITS_TEST_SEED = 20_240_601
IMAGEFOLDER_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass
class RawData:
    """A decoded data set: uint8 images (N, C, H, W), int64 labels, official train/test split."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str  # where it came from, for the study's records


def data_dir(config: DataConfig) -> Path:
    if config.dir:
        return Path(config.dir).expanduser()
    env = os.environ.get("BONAS_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bonas"


def load_raw(name: str, config: DataConfig) -> RawData:
    root = data_dir(config)
    if name == "digits":
        return _cached(root, "digits", [], lambda: _load_digits())
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, root)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root)
    if name == "imagefolder":
        return _load_imagefolder(Path(config.root).expanduser(), config.image_size, config.channels, root)
    raise DataError(f"unknown dataset {name!r}")


# --- stratified splits (also the fixed test splits below) ----------------------------------------


def _allocate(counts: list[int], total: int) -> list[int]:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder: sums exactly)."""
    n = sum(counts)
    quotas = [c * total / n for c in counts]
    alloc = [int(q) for q in quotas]
    by_remainder = sorted(range(len(counts)), key=lambda i: (alloc[i] - quotas[i], i))
    for i in by_remainder[: total - sum(alloc)]:
        alloc[i] += 1
    return [min(a, c) for a, c in zip(alloc, counts, strict=True)]


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): ``round(len(y) * fraction)`` held out, every class in proportion."""
    return _stratified(y, round(len(y) * fraction), seed)


def balanced_subset(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of exactly ``n`` samples with the class proportions of ``y`` (seeded); all when n is 0."""
    if n <= 0 or n >= len(y):
        return torch.arange(len(y))
    return _stratified(y, n, seed)[1]


def _stratified(y: torch.Tensor, n_held: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    members = [torch.nonzero(y == c).flatten() for c in classes]
    keep, held = [], []
    for idx, k in zip(members, _allocate([len(m) for m in members], n_held), strict=True):
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


# --- the decoded-tensor cache --------------------------------------------------------------------


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached(root: Path, key: str, files: list[Path], decode) -> RawData:
    """Decode once; later calls (other trials, other workers) load the saved tensors."""
    path = root / "cache" / f"{key}-{_fingerprint(files)}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return RawData(d["train_x"], d["train_y"], d["test_x"], d["test_y"], list(d["classes"]), d["source"])
        except Exception:  # a torn or foreign file: decode again and replace it
            pass
    raw = decode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({**raw.__dict__}, tmp)
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file
    except OSError:
        pass  # a read-only data dir only costs the decoding again
    return raw


# --- digits -------------------------------------------------------------------------------------


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    train, test = stratified_split(y, DIGITS_TEST_FRACTION, DIGITS_TEST_SEED)
    classes = [str(c) for c in d.target_names]
    return RawData(x[train], y[train], x[test], y[test], classes, "sklearn.datasets.load_digits")


# --- MNIST / Fashion-MNIST: IDX files -------------------------------------------------------------


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


def _load_idx_dataset(name: str, root: Path) -> RawData:
    dirs = _idx_candidates(name, root)
    for d in dirs:
        files = _find_idx(d)
        if files:
            return _cached(root, name, list(files.values()), lambda f=files, d=d: _decode_idx(name, f, d))
    raw = _download_torchvision(name, root, dirs)
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


# --- CIFAR-10/100: python pickle batches -----------------------------------------------------------

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


def _load_cifar(name: str, root: Path) -> RawData:
    folder = CIFAR[name][0]
    dirs = [root / folder, root / name / folder, root / name]
    for d in dirs:
        files = [d / f for f in (*CIFAR[name][1], *CIFAR[name][2], CIFAR[name][3])]
        if all(f.is_file() for f in files):
            return _cached(root, name, files, lambda d=d: _decode_cifar(name, d))
    return _download_torchvision(name, root, dirs)


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


# --- downloads (torchvision) ---------------------------------------------------------------------


def _download_torchvision(name: str, root: Path, looked: list[Path]) -> RawData:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = cls(root=str(root), train=True, download=True)
        test = cls(root=str(root), train=False, download=True)
    except Exception as err:  # URLError, RuntimeError (all mirrors failed), OSError
        where = ", ".join(str(p) for p in looked)
        how = {
            "fashion-mnist": "apt-get install dataset-fashion-mnist, or put the four IDX .gz files in",
            "mnist": "put the four original IDX .gz files in",
            "cifar10": "put the extracted cifar-10-batches-py folder in",
            "cifar100": "put the extracted cifar-100-python folder in",
        }[name]
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{name}: not found (looked in {where}) and the download failed ({reason}); {how} {looked[0]} or set --data-dir"
        ) from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    train_x, train_y = tensors(train)
    test_x, test_y = tensors(test)
    return RawData(train_x, train_y, test_x, test_y, list(train.classes), f"torchvision.datasets.{cls.__name__} in {root}")


# --- ImageFolder ---------------------------------------------------------------------------------


def _load_imagefolder(folder: Path, size: int, channels: int, root: Path) -> RawData:
    if not folder.is_dir():
        raise DataError(f"imagefolder: data.root {folder} is not a directory; point it at root/<class>/*.png")
    split_dirs = (folder / "train", folder / "test")
    has_split = all(d.is_dir() for d in split_dirs)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    key = f"imagefolder-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]}-{size}-{channels}"
    return _cached(root, key, files, lambda: _decode_imagefolder(folder, size, channels, has_split))


def _decode_imagefolder(folder: Path, size: int, channels: int, has_split: bool) -> RawData:
    import torchvision.datasets as tvd
    from torchvision.transforms import v2

    mode = "L" if channels == 1 else "RGB"
    transform = v2.Compose([v2.Lambda(lambda im: im.convert(mode)), v2.PILToTensor(), v2.Resize((size, size), antialias=True)])

    def decode(d: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        try:
            ds = tvd.ImageFolder(str(d), transform=transform)
        except (FileNotFoundError, OSError) as err:
            raise DataError(f"imagefolder: {d}: {err}") from None
        xs = []
        for i in range(len(ds)):
            try:
                xs.append(ds[i][0])
            except OSError as err:
                raise DataError(f"imagefolder: cannot decode {ds.samples[i][0]}: {err}") from None
        return torch.stack(xs), torch.tensor(ds.targets, dtype=torch.int64), ds.classes

    if has_split:
        train_x, train_y, classes = decode(folder / "train")
        test_x, test_y, test_classes = decode(folder / "test")
        if test_classes != classes:
            raise DataError(f"imagefolder: {folder}/train and {folder}/test hold different classes")
        return RawData(train_x, train_y, test_x, test_y, classes, f"ImageFolder {folder} (train/test)")
    x, y, classes = decode(folder)
    train, test = stratified_split(y, IMAGEFOLDER_TEST_FRACTION, DIGITS_TEST_SEED)
    return RawData(x[train], y[train], x[test], y[test], classes, f"ImageFolder {folder} (fixed 20% test split)")
