"""ImageFolder: your own images, ``root/<class>/*.jpg|png|...`` (``root/train`` + ``root/test`` when both exist),
decoded once into a store (bonas.data.store) by as many processes as the machine has cores.

Every image keeps its aspect ratio: the short side is resized to ``[data] image_size`` and the centre cropped
(bonas.data.decode). Greyscale, transparent, CMYK and 16-bit files are converted, said in one warning line;
unreadable or truncated files are skipped, said in one line with the first few paths; a class with no images,
or none that can be read, is refused in one line, and nothing is left in the cache.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from bonas.config import DataConfig
from bonas.core.errors import DataError
from bonas.data.decode import decode_chunk
from bonas.data.raw import cache_dir, fingerprint, stratified_split
from bonas.data.store import Plan, Store, Writer, build_store

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2  # a folder without train/ and test/ gets a fixed, stratified test split of this share
TEST_SEED = 20_240_601
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SHOWN = 5  # skipped files named in the warning line


@dataclass(frozen=True)
class Listing:
    """The files of a folder in row order (its training split's first), their labels, its classes."""

    files: list[Path]
    labels: list[int]
    n_train: int
    classes: list[str]
    source: str


def _classes(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[d.name] = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not classes:
        raise DataError(f"imagefolder: {folder} holds no class folders; put images in {folder}/<class>/*.jpg")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise DataError(
            f"imagefolder: class {empty[0]!r} ({folder / empty[0]}) has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "add some or remove the folder"
        )
    return classes


def list_folder(folder: Path) -> Listing:
    if not folder.is_dir():
        raise DataError(f"imagefolder: data.root {folder} is not a directory; point it at root/<class>/*.jpg")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        train, test = _classes(folder / "train"), _classes(folder / "test")
        if list(train) != list(test):
            raise DataError(f"imagefolder: {folder}/train and {folder}/test hold different classes")
        files = [f for c in train.values() for f in c] + [f for c in test.values() for f in c]
        labels = [i for i, c in enumerate(train.values()) for _ in c] + [i for i, c in enumerate(test.values()) for _ in c]
        n_train = sum(len(c) for c in train.values())
        return Listing(files, labels, n_train, list(train), f"ImageFolder {folder} (train/test)")
    classes = _classes(folder)
    files = [f for c in classes.values() for f in c]
    y = torch.tensor([i for i, c in enumerate(classes.values()) for _ in c])
    keep, held = stratified_split(y, TEST_FRACTION, TEST_SEED)
    order = torch.cat([keep, held]).tolist()
    return Listing(
        [files[i] for i in order], y[order].tolist(), len(keep), list(classes), f"ImageFolder {folder} (fixed 20% test split)"
    )


def _context():
    """Forked decoding processes, as DataLoader's readers are: a spawned one would re-run the user's ``__main__``
    (a script or notebook cell calling bonas without a ``__name__`` guard would start over in every process). They
    only read image files and write rows: a database connection the parent holds is inherited, never used, and
    never closed by them (a multiprocessing child leaves through ``os._exit``)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _fill(listing: Listing, channels: int, size: int):
    def fill(writer: Writer) -> None:
        shape = (channels, size, size)
        file, tasks = str(writer.folder / "images.u8"), []
        for c in writer.todo():
            r = writer.rows(c)
            tasks.append(
                (file, writer.plan.rows, shape, r.start, c, listing.files[r.start : r.stop], listing.labels[r.start : r.stop])
            )
        if tasks:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            with _context().Pool(max(1, min(len(tasks), cores))) as pool:
                for chunk, labels, info in pool.imap_unordered(decode_chunk, tasks):
                    writer.record(chunk, labels, info)
        _report(writer, listing)

    return fill


def _report(writer: Writer, listing: Listing) -> None:
    """Refuse a class none of whose images could be read; say once what was converted and skipped."""
    converted: Counter = Counter()
    skipped: list[str] = []
    for chunk in sorted(writer.infos, key=int):
        converted.update(writer.infos[chunk].get("converted", {}))
        skipped += writer.infos[chunk].get("skipped", [])
    read = set(writer.labels[writer.labels >= 0].tolist())
    for label, name in enumerate(listing.classes):
        if label not in read:
            example = next(f for f, y in zip(listing.files, listing.labels, strict=True) if y == label)
            raise DataError(f"imagefolder: class {name!r}: none of its images could be read (e.g. {example})")
    if converted:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(converted.items()))
        writer.note(f"imagefolder: converted {sum(converted.values())} images to the configured channels: {kinds}")
    if skipped:
        more = f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
        writer.note(f"imagefolder: skipped {len(skipped)} unreadable images: {'; '.join(skipped[:SHOWN])}{more}")


def load_imagefolder(data: DataConfig, root: Path) -> Store:
    folder = Path(data.root).expanduser()
    listing = list_folder(folder)
    size, channels = data.image_size, data.channels
    where = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    key = f"imagefolder-{where}-{size}-{channels}-{fingerprint(listing.files, listing.n_train)}"

    def plan() -> Plan:
        return Plan((channels, size, size), len(listing.files), listing.n_train, listing.classes, listing.source)

    store = build_store(cache_dir(root), key, plan, _fill(listing, channels, size))
    for line in store.notes:
        log.warning("%s", line)
    return store
