"""The data a trial sees: train / validation / test splits of a decoded data set, batched by index slices.

Train and validation are a seeded, stratified split of the official training set (optionally subsets,
class-balanced); test is the official test split, touched only by ``bonas retrain``. Batches are index
slices of in-memory uint8 tensors; scaling to float, normalisation (statistics of the training split only)
and augmentation happen batched, on the device that trains (:class:`Preprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bonas.config import DataConfig
from bonas.data.raw import RawData, balanced_subset, stratified_split
from bonas.data.sources import DATA_SOURCES, load_raw

@dataclass
class Splits:
    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, of train_x scaled to [0, 1]
    std: tuple[float, ...]
    crop_pad: int  # augmentation: random crop after padding by this many pixels
    flip: bool  # augmentation: random horizontal flip
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "classes": self.classes,
            "n_train": len(self.train_y),
            "n_val": len(self.val_y),
            "n_test": len(self.test_y),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to(self, device: torch.device | str) -> Splits:
        """The same splits with the tensors on ``device`` (the GPU when training there)."""
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return Splits(**{**self.__dict__, **moved})


def load_splits(name: str, config: DataConfig, seed: int) -> Splits:
    """Load (from the decoded cache when possible) and split a data set."""
    raw = load_raw(name, config)
    return make_splits(name, raw, config, seed)


def make_splits(name: str, raw: RawData, config: DataConfig, seed: int) -> Splits:
    train_idx, val_idx = stratified_split(raw.train_y, config.val_fraction, seed)
    train_idx = train_idx[balanced_subset(raw.train_y[train_idx], config.train_subset, seed + 1)]
    val_idx = val_idx[balanced_subset(raw.train_y[val_idx], config.val_subset, seed + 2)]
    train_x = raw.train_x[train_idx]
    mean, std = channel_stats(train_x)
    source = DATA_SOURCES[name]
    pad, flip = source.crop_pad, source.flip
    if pad is None:
        pad = max(1, raw.train_x.shape[-1] // 8)
    return Splits(
        name=name,
        classes=raw.classes,
        train_x=train_x,
        train_y=raw.train_y[train_idx],
        val_x=raw.train_x[val_idx],
        val_y=raw.train_y[val_idx],
        test_x=raw.test_x,
        test_y=raw.test_y,
        mean=mean,
        std=std,
        crop_pad=pad,
        flip=flip,
        source=raw.source,
    )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1] (float64 sums: exact enough)."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
    std = flat.std(dim=1).clamp_min(1e-3)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


# --- batching and on-device preprocessing ---------------------------------------------------------


class EpochOrder:
    """The shuffled order of an epoch, a function of (seed, epoch) alone: a trial resumed at epoch k draws
    the batches it would have drawn uninterrupted. Lightning calls ``set_epoch`` before each epoch (it
    looks for a ``sampler`` with that method); without it, each pass takes the next epoch."""

    def __init__(self, seed: int):
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, n: int) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        return torch.randperm(n, generator=generator)


class Batches:
    """Batches as index slices of in-memory tensors: no per-sample Python, no DataLoader workers."""

    batch_sampler = None  # what Lightning looks at beside ``sampler`` (an EpochOrder) on a loader

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.sampler = EpochOrder(seed)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n, bs = len(self.y), self.batch_size
        if not self.shuffle:
            for i in range(0, n, bs):
                yield self.x[i : i + bs], self.y[i : i + bs]
            return
        order = self.sampler.permutation(n).to(self.x.device)
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            yield self.x[idx], self.y[idx]


class Preprocess(nn.Module):
    """uint8 batch -> normalised float batch, with optional batched random crop and flip.

    Runs where the batch is (the GPU when training there). Crop offsets and flips are drawn per image,
    which torchvision's batched transforms (one draw per batch) do not do.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], crop_pad: int = 0, flip: bool = False, cutout: int = 0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.crop_pad = crop_pad
        self.flip = flip
        self.cutout = cutout

    def forward(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        if augment and self.crop_pad > 0:
            x = random_crop(x, self.crop_pad)
        if augment and self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x.float().div_(255.0) - self.mean) / self.std
        if augment and self.cutout > 0:
            x = cutout(x, self.cutout)
        return x


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image cutout (DeVries & Taylor 2017): a size x size square at a random centre (it may reach past
    the border) set to 0, the mean after normalisation; one masked multiply for the batch."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch back to its size, in one gather."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + dy).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + dx).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]
