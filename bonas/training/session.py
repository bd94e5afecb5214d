"""One network's training on the final data, in one stretch or in several (a race's rounds, then the final
training): each stretch goes on from the state the last one saved, and a learning-rate schedule that follows the
clock follows one clock over all of them, to the end of the whole.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import lightning.pytorch as pl
import torch

from bonas.config import StudyConfig
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.data.sources import memory_limit
from bonas.data.splits import Splits
from bonas.model.build import build_model, pool_stem, without_pool_stem
from bonas.training.module import Classifier, make_trainer
from bonas.training.recipe import Recipe

# Testing an image (a forward pass, no augmentation) costs about a third of training on it; a half, to be safe.
TEST_COST_OF_A_TRAINING_IMAGE = 0.5
UNTIL_DEADLINE = 1_000_000  # the epoch count of a training that runs until its deadline (the deadline ends it)


@contextmanager
def stem_on_the_data(net: torch.nn.Module, splits: Splits, train: TrainSpec, cutout: int, limit: int) -> Iterator[Splits]:
    """The splits to train and test ``net`` on: where its stem is a pool (nothing learnt) and nothing random happens
    to an image before it (no augmentation, no cutout), the images pooled once (``Splits.pooled``, within ``limit``
    bytes) and the stem taken out meanwhile, so that a 128-px photo costs a step what its 32-px average costs; else
    ``splits`` as they are. Normalising commutes with averaging, so only the pooled images' rounding to whole grey
    levels differs from the stem's output."""
    factor = pool_stem(net)
    pooled = splits.pooled(factor, limit) if factor > 1 and not train.augment and not cutout else None
    if pooled is None:
        yield splits
        return
    with without_pool_stem(net):
        yield pooled


class HardStop(pl.Callback):
    """Stops a stretch mid-epoch at ``until`` (time.monotonic()), less the time a test of ``test_images`` will take
    at the training's own pace."""

    def __init__(self, until: float, test_images: int, on_epoch: Callable[[int], None] | None):
        self.until, self.test_images, self.on_epoch = until, test_images, on_epoch
        self.start, self.images = time.monotonic(), 0

    def end(self) -> float:
        if not self.images:
            return self.until
        per_image = (time.monotonic() - self.start) / self.images
        return self.until - self.test_images * per_image * TEST_COST_OF_A_TRAINING_IMAGE

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.images = time.monotonic(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])
        if time.monotonic() >= self.end() and not trainer.should_stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.on_epoch is not None:
            self.on_epoch(trainer.current_epoch + 1)


class Session:
    """``arch`` trained with ``train`` on rows of ``splits``, normalised by the statistics of ``stats_rows`` (the
    final training set: it is the training split now), with ``config``'s recipe and ``[final] augment``."""

    def __init__(
        self, config: StudyConfig, splits: Splits, arch: ArchSpec, train: TrainSpec, seed: int, stats_rows: torch.Tensor
    ):
        self.config, self.splits, self.arch, self.seed = config, splits, arch, seed
        self.train = dataclasses.replace(train, augment=True) if config.final.augment else train
        self.preprocess = splits.preprocess(config.data.cutout, rows=stats_rows)
        self.recipe = Recipe.of(config.training)
        torch.manual_seed(seed)
        self.net = build_model(arch, splits.input_shape, splits.n_classes)
        self._folder = tempfile.TemporaryDirectory(prefix="bonas-session-")  # removed with the session
        self.folder = Path(self._folder.name)
        self.state: Path | None = None
        self.seconds = 0.0  # trained so far, over every stretch
        self.epochs_done = 0.0  # epochs trained so far, each stretch's counted in its own rows
        self.steps = 0

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.preprocess.mean.flatten().tolist())

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.preprocess.std.flatten().tolist())

    def stretch(
        self,
        rows: torch.Tensor,
        until: float,
        *,
        schedule_end: float | None = None,
        test_images: int = 0,
        epochs: int | None = None,
        verbose: bool = False,
        on_epoch: Callable[[int], None] | None = None,
        keep_state: bool = True,
    ) -> None:
        """Train on ``rows`` until ``until`` (time.monotonic(); less a test of ``test_images``) or for ``epochs``,
        from the last stretch's state. A schedule that follows the clock ends at ``schedule_end`` (default: this
        stretch's end), counting the seconds earlier stretches trained. ``keep_state``: save the state another stretch
        would go on from (not after the last one)."""
        stop = HardStop(until, test_images, on_epoch)
        before = self.seconds

        def progress() -> float:
            elapsed = time.monotonic() - stop.start
            horizon = (schedule_end if schedule_end is not None else stop.end()) - stop.start
            return (before + elapsed) / max(1e-9, before + horizon)

        budget = epochs or UNTIL_DEADLINE
        module = Classifier(self.net, self.train, self.preprocess, budget, self.recipe, None if epochs else progress)
        trainer = make_trainer(budget, [stop], self.config.training.precision, verbose, self.recipe, limit_val_batches=0)
        with self.on_data() as data:
            batches = data.loader(rows, self.train.batch_size, shuffle=True, seed=self.seed)
            start = time.monotonic()
            trainer.fit(module, train_dataloaders=batches, ckpt_path=self.state)
            self.seconds += time.monotonic() - start
        self.epochs_done += (trainer.global_step - self.steps) / max(1, len(batches))
        self.steps = trainer.global_step
        if keep_state:
            self.state = self.folder / "state.ckpt"
            trainer.save_checkpoint(self.state)

    def on_data(self) -> AbstractContextManager[Splits]:
        """The session's splits as its network trains and is tested on them (``stem_on_the_data``)."""
        return stem_on_the_data(self.net, self.splits, self.train, self.config.data.cutout, memory_limit(self.config.data))

    @property
    def epochs(self) -> float:
        """Epochs trained so far, over every stretch (one that ends at a deadline ends mid-epoch)."""
        return round(self.epochs_done, 2)
