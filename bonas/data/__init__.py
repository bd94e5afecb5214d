"""The images a trial sees: the data sources a study may name (one registry), their readers and the stores of
decoded images, and the splits, batches and on-device augmentation built from them.

Names are imported on first use: a process that only decodes images (bonas.data.decode, in the processes that
decode a folder in parallel) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DATA_SOURCES": "bonas.data.sources",
    "DataSource": "bonas.data.sources",
    "RawData": "bonas.data.raw",
    "Splits": "bonas.data.splits",
    "load_splits": "bonas.data.splits",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bonas.data' has no attribute {name!r}")
