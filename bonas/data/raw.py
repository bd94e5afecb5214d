"""A decoded data set (uint8 images, int64 labels, its official split), where data lives, stratified splits,
and the cache of decoded tensors that lets a second trial or worker skip the decoding.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bonas.config import DataConfig

CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused


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


# --- the decoded-tensor cache --------------------------------------------------------------------


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    for f in sorted(files):
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached(root: Path, key: str, files: list[Path], decode: Callable[[], RawData]) -> RawData:
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


