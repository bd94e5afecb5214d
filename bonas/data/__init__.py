"""The images a trial sees: the data sources a study may name (one registry), their readers and the cache of
decoded tensors, and the splits, batches and on-device augmentation built from them."""

from bonas.data.raw import RawData
from bonas.data.sources import DATA_SOURCES, DataSource, load_raw
from bonas.data.splits import Splits, load_splits

__all__ = ["DATA_SOURCES", "DataSource", "RawData", "Splits", "load_raw", "load_splits"]
