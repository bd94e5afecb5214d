"""Where a data set's decoded rows are read from: a tensor in memory (the fast path: index slices, on the device
that trains), or a store's file on disk, a batch of rows at a time (the streaming path, for data sets beyond the
memory limit: no process ever holds the whole set)."""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import torch


class Images(Protocol):
    shape: tuple[int, ...]  # (N, C, H, W)

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """The uint8 images of ``rows`` (int64 row numbers), in that order, as one (len(rows), C, H, W) tensor."""
        ...


class MemoryImages:
    """Every row in one uint8 tensor (on the GPU when training there): a batch is an index slice."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.shape = tuple(x.shape)

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        return self.x[rows.to(self.x.device)]

    def to(self, device: torch.device | str) -> MemoryImages:
        return MemoryImages(self.x.to(device))

    @property
    def device(self) -> torch.device:
        return self.x.device


class DiskImages:
    """The rows of a store's ``images.u8``, read with one ``pread`` per row into the batch (the page cache keeps hot
    rows; the process keeps only the batch). Pickles as its path, so DataLoader workers open the file themselves."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int, int]):
        self.path, self.shape = str(path), tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:]))
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"])

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked reader opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        fd, size = self._file(), self.row_bytes
        for i, row in enumerate(rows.tolist()):
            if os.preadv(fd, [memoryview(out[i])], row * size) != size:
                raise OSError(f"{self.path}: row {row} is short (the store was truncated)")
        return torch.from_numpy(out).view(len(rows), *self.shape[1:])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
