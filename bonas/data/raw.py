"""A decoded data set as tensors (what a data source's reader returns), where data lives, stratified splits, and
the cache that lets a second trial or worker skip the decoding (a store: bonas.data.store).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bonas.config import DataConfig
from bonas.data.store import STORE_VERSION, Plan, Store, Writer, build_store


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


# --- the cache of decoded data sets ---------------------------------------------------------------


def fingerprint(files: list[Path], *extra: object) -> str:
    """What the cache key of data read from ``files`` depends on: their paths, sizes and modification times."""
    h = hashlib.sha256(repr((STORE_VERSION, extra)).encode())
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_dir(root: Path) -> Path:
    return root / "cache"


def cached(root: Path, key: str, files: list[Path], decode: Callable[[], RawData]) -> Store | RawData:
    """Decode once into a store (bonas.data.store); later calls (other trials, other workers) read the store.
    A data dir that cannot be written only costs the decoding again: the decoded tensors come back as they are."""
    decoded: list[RawData] = []

    def plan() -> Plan:
        decoded.append(decode())
        raw = decoded[0]
        rows = len(raw.train_y) + len(raw.test_y)
        return Plan(tuple(raw.train_x.shape[1:]), rows, len(raw.train_y), list(raw.classes), raw.source)

    def fill(writer: Writer) -> None:
        raw = decoded[0]
        images = torch.cat([raw.train_x, raw.test_x]).numpy()
        labels = torch.cat([raw.train_y, raw.test_y]).numpy()
        for chunk in writer.todo():
            rows = writer.rows(chunk)
            writer.write(chunk, images[rows.start : rows.stop], labels[rows.start : rows.stop])

    try:
        return build_store(cache_dir(root), f"{key}-{fingerprint(files)}", plan, fill)
    except OSError:
        return decoded[0] if decoded else decode()
