"""Which images a study sees: the split, subsets, augmentation, and where files live.

The data set's name is a registry of bonas.data.sources (each source checks its own settings there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bonas.config.checks import Fail, at_least, between


@dataclass
class DataConfig:
    dir: str = ""  # downloads and decoded caches; "" = $BONAS_DATA_DIR, else ~/.cache/bonas
    val_fraction: float = 0.15  # of the training split, held out (seeded, stratified) for validation
    train_subset: int = 0  # use only this many training images (class-balanced); 0 = all
    val_subset: int = 0  # likewise for validation; 0 = all
    augment: str = "none"  # none | auto (crop+flip where the data set allows) | search (a trial param)
    cutout: int = 0  # with augmentation: a random square of this many pixels a side blanked per image; 0 = off
    root: str = ""  # imagefolder: the root/<class>/*.jpg tree (or root/train/<class>, root/test/<class>)
    image_size: int = 32  # imagefolder: the short side resized to this, then the centre image_size x image_size
    channels: int = 3  # imagefolder: 1 (grey) or 3 (RGB); files of other modes are converted, with a warning
    arrays: list[str] = field(default_factory=list)  # arrays: ["data.npz"] or ["images.npy", "labels.npy"]
    test_arrays: list[str] = field(default_factory=list)  # arrays: the test split, same form; [] = the npz's or 20 %
    store: str = ""  # python: the store bonas.search(..., data=...) decoded the Python data into (set by the API)
    flip: bool = True  # imagefolder, arrays: augmentation may mirror images (built-in data sets know their own)
    # Data sets up to this size are held in memory (on the GPU when training there), larger ones stream from their
    # decoded file on disk; 0 = auto: half a GiB (an eighth of the GPU's memory on a GPU), shared by local workers
    memory_limit_mb: float = 0.0

    def check(self, fail: Fail) -> None:
        between(fail, "val_fraction", self.val_fraction, 0, 1, "(exclusive)")
        at_least(fail, "train_subset", self.train_subset, 0, "(0 = all)")
        at_least(fail, "val_subset", self.val_subset, 0, "(0 = all)")
        at_least(fail, "cutout", self.cutout, 0, "pixels (0 = off)")
        if self.channels not in (1, 3):
            fail("channels", f"must be 1 or 3, got {self.channels}")
        at_least(fail, "image_size", self.image_size, 4, "pixels")
        at_least(fail, "memory_limit_mb", self.memory_limit_mb, 0, "(0 = auto)")
