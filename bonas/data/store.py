"""Decoded images on disk: one uint8 file of rows (N, C, H, W) per data set, written once, shared by every worker
of a machine, and read either whole into memory or a batch of rows at a time.

A store is a folder ``<data dir>/cache/<key>/``: ``images.u8`` (the rows, C-contiguous), ``labels.npy`` (int64;
-1 marks a row whose image could not be read) and ``meta.json`` (shape, classes, how many rows are the official
training split, where the data came from). It is built in ``<key>.partial/`` under a file lock, chunk by chunk:
an interrupted build goes on where it stopped (``progress.json`` lists the chunks written), and only a complete
store is renamed into place, so a reader never sees half of one. A build that fails on bad data leaves nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bonas.core.errors import DataError

STORE_VERSION = 2  # bump when a store's layout or any decoding changes: old stores are then rebuilt


@dataclass(frozen=True)
class Plan:
    """What a store will hold, known before its first row is decoded."""

    shape: tuple[int, int, int]  # one image: channels, height, width
    rows: int  # all rows: the official training split first, then its test split
    n_train: int  # rows [0, n_train) are the official training split
    classes: list[str]
    source: str  # where the images came from, for the study's records
    chunk: int = 1024  # rows per chunk: the unit of resuming

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def chunks(self) -> int:
        return (self.rows + self.chunk - 1) // self.chunk


class Store:
    """A complete store, opened for reading."""

    def __init__(self, path: Path):
        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        self.plan = Plan(**{**meta["plan"], "shape": tuple(meta["plan"]["shape"])})
        self.labels = np.load(self.path / "labels.npy")
        self.notes: list[str] = meta.get("notes", [])  # what the build converted or skipped, said once

    @property
    def images_file(self) -> Path:
        return self.path / "images.u8"

    @property
    def nbytes(self) -> int:
        return self.plan.rows * self.plan.row_bytes

    def read_all(self) -> np.ndarray:
        """Every row, in memory (one copy: the fast path)."""
        return np.fromfile(self.images_file, dtype=np.uint8).reshape(self.plan.rows, *self.plan.shape)


def is_complete(path: Path) -> bool:
    try:
        return json.loads((path / "meta.json").read_text()).get("version") == STORE_VERSION
    except (OSError, ValueError):
        return False


class Writer:
    """Fills a store's rows chunk by chunk; chunks written by an interrupted build are not written again."""

    def __init__(self, folder: Path, plan: Plan):
        self.folder, self.plan = folder, plan
        folder.mkdir(parents=True, exist_ok=True)
        progress = folder / "progress.json"
        previous = json.loads(progress.read_text()) if progress.exists() else None
        if previous is None or previous.get("plan") != _plan_json(plan):  # a new build, or another plan: start afresh
            for leftover in folder.iterdir():
                leftover.unlink()
            previous = {"plan": _plan_json(plan), "done": []}
            with open(folder / "images.u8", "wb") as f:
                f.truncate(plan.rows * plan.row_bytes)
            np.save(folder / "labels.npy", np.full(plan.rows, -1, dtype=np.int64))
        self.done: set[int] = set(previous["done"])
        self.infos: dict[str, dict] = previous.get("infos", {})  # per chunk written: what decoding it said
        self.notes: list[str] = previous.get("notes", [])
        self.images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r+", shape=(plan.rows, *plan.shape))
        self.labels = np.load(folder / "labels.npy")

    def todo(self) -> list[int]:
        """The chunks still to write, in order."""
        return [c for c in range(self.plan.chunks) if c not in self.done]

    def rows(self, chunk: int) -> range:
        return range(chunk * self.plan.chunk, min(self.plan.rows, (chunk + 1) * self.plan.chunk))

    def write(self, chunk: int, images: np.ndarray, labels: np.ndarray, info: dict | None = None) -> None:
        """One whole chunk: its rows' images and labels (-1 for a row that could not be read)."""
        rows = self.rows(chunk)
        self.images[rows.start : rows.stop] = images
        self.images.flush()
        self.record(chunk, labels, info)

    def record(self, chunk: int, labels: np.ndarray, info: dict | None = None) -> None:
        """A chunk whose images are in the file (written here, or by another process that flushed them): its labels
        and what decoding it said (``info``, kept with the progress). Durable before it counts as done: a kill
        after this call never loses the chunk, a kill before it only redoes it."""
        rows = self.rows(chunk)
        self.labels[rows.start : rows.stop] = labels
        np.save(self.folder / "labels.npy", self.labels)
        self.done.add(chunk)
        self.infos[str(chunk)] = info or {}
        self._save_progress()

    def note(self, line: str) -> None:
        """A line the store says once to whoever opens it (conversions, skipped files)."""
        self.notes.append(line)
        self._save_progress()

    def _save_progress(self) -> None:
        tmp = self.folder / "progress.json.tmp"
        state = {"plan": _plan_json(self.plan), "done": sorted(self.done), "infos": self.infos, "notes": self.notes}
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / "progress.json")

    def finish(self, final: Path) -> None:
        del self.images  # unmap before the rename
        meta = {"version": STORE_VERSION, "plan": _plan_json(self.plan), "notes": self.notes}
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1))
        (self.folder / "progress.json").unlink()
        if final.exists():  # a store of an older version
            shutil.rmtree(final)
        os.replace(self.folder, final)


def _plan_json(plan: Plan) -> dict:
    return {**asdict(plan), "shape": list(plan.shape)}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_store(cache: Path, key: str, plan: Callable[[], Plan], fill: Callable[[Writer], None]) -> Store:
    """The store ``cache/key``: opened if complete, else built (or its interrupted build resumed) by ``fill``,
    under a lock that makes every other worker of the machine wait and then read it. ``plan`` is asked only when
    a build is needed. A DataError from ``fill`` removes the partial build: bad data leaves nothing behind."""
    final = cache / key
    if is_complete(final):
        return Store(final)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f"{key}.lock"):
        if is_complete(final):  # a peer built it while this one waited
            return Store(final)
        partial = cache / f"{key}.partial"
        writer = Writer(partial, plan())
        try:
            fill(writer)
        except DataError:
            del writer
            shutil.rmtree(partial, ignore_errors=True)
            raise
        missing = writer.todo()
        if missing:
            raise AssertionError(f"store {key}: chunks {missing[:5]} were never written")
        writer.finish(final)
    return Store(final)
