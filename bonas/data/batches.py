"""Batches of a split's rows: index slices of the images held in memory (the fast path, no per-sample Python), or
rows read from the store's file by DataLoader workers (the streaming path). Either way the order of an epoch is a
function of (seed, epoch) alone, so a trial resumed at epoch k draws the batches it would have drawn."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bonas.data.images import DiskImages, Images

# The streaming path's readers: processes that read rows from the page cache while the network trains, a quarter of
# the cores (at least one, at most four). On this project's 2-core machine one reader trained 1.13x faster than two,
# which competed with the training for the cores (bench/own_data.py; 128 px photos, a small network).
STREAM_READERS_PER_CORE = 0.25
MAX_STREAM_WORKERS = 4
STREAM_PREFETCH = 4  # batches each reader keeps ready


class EpochOrder:
    """The shuffled order of an epoch, a function of (seed, epoch) alone: a trial resumed at epoch k draws the
    batches it would have drawn uninterrupted. Lightning calls ``set_epoch`` before each epoch (it looks for a
    ``sampler`` with that method); without it, each pass takes the next epoch."""

    def __init__(self, seed: int):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, n: int) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return torch.randperm(n, generator=generator)


class RowBatches(Sampler):
    """The row numbers of each batch of an epoch, in order (shuffled by :class:`EpochOrder`)."""

    def __init__(self, rows: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        self.rows, self.batch_size, self.shuffle = rows.cpu(), batch_size, shuffle
        self.order = EpochOrder(seed)

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return (len(self.rows) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        rows = self.rows[self.order.permutation(len(self.rows))] if self.shuffle else self.rows
        for i in range(0, len(rows), self.batch_size):
            yield rows[i : i + self.batch_size]


class Batches:
    """Batches as index slices of images in memory: no per-sample Python, no DataLoader workers."""

    batch_sampler = None  # what Lightning looks at beside ``sampler`` (which has set_epoch) on a loader

    def __init__(self, images: Images, labels: torch.Tensor, rows: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        self.images, self.labels = images, labels
        self.sampler = RowBatches(rows, batch_size, shuffle, seed)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for rows in self.sampler:
            rows = rows.to(self.labels.device)
            yield self.images.take(rows), self.labels[rows]


class _Rows(Dataset):
    """A DataLoader reader's view of the store: a batch's rows in, its images and labels out."""

    def __init__(self, images: DiskImages, labels: torch.Tensor):
        self.images, self.labels = images, labels.cpu()

    def __getitem__(self, rows: torch.Tensor):
        return self.images.take(rows), self.labels[rows]

    def __len__(self) -> int:
        return self.images.shape[0]


def stream(images: DiskImages, labels: torch.Tensor, rows: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
    """Batches of rows read from the store's file by reader processes (a quarter of the cores), a few batches ahead.

    The readers are DataLoader's own (forked, on Linux): they only read the store's file. This process may hold
    database connections, which a forked reader inherits but never uses, and leaves by ``os._exit`` as every
    multiprocessing child does, so no connection is closed behind the worker's back. (A fork server or spawn
    would re-import the user's ``__main__``: a script without a ``__name__`` guard would start over.)"""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(MAX_STREAM_WORKERS, int(cores * STREAM_READERS_PER_CORE)))
    return DataLoader(
        _Rows(images, labels),
        batch_size=None,
        sampler=RowBatches(rows, batch_size, shuffle, seed),
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=STREAM_PREFETCH if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
