"""ImageFolder: ``root/<class>/*.png|jpg`` (``root/train`` + ``root/test`` when present), decoded once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from bonas.core.errors import DataError
from bonas.data.raw import RawData, cached, stratified_split

IMAGEFOLDER_TEST_FRACTION = 0.2
IMAGEFOLDER_TEST_SEED = 20_240_601
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_imagefolder(folder: Path, size: int, channels: int, root: Path) -> RawData:
    if not folder.is_dir():
        raise DataError(f"imagefolder: data.root {folder} is not a directory; point it at root/<class>/*.png")
    split_dirs = (folder / "train", folder / "test")
    has_split = all(d.is_dir() for d in split_dirs)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    key = f"imagefolder-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]}-{size}-{channels}"
    return cached(root, key, files, lambda: _decode_imagefolder(folder, size, channels, has_split))


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
    train, test = stratified_split(y, IMAGEFOLDER_TEST_FRACTION, IMAGEFOLDER_TEST_SEED)
    return RawData(x[train], y[train], x[test], y[test], classes, f"ImageFolder {folder} (fixed 20% test split)")
