"""The final training: an architecture on the whole training split, for a number of epochs or until a deadline,
tested once on the test split.

The final model trains on train + validation (the official training split; a subset only when ``[final]
train_subset`` asks), with the study's recipe. Until a deadline, its learning-rate schedule follows the clock, not
the steps: it has annealed when the deadline stops it, however many epochs that is. The test split is touched here
and nowhere else. ``bonas retrain``, ``bonas run`` and the budget bench's hand designs all train through
:func:`train_final`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from bonas.config import StudyConfig
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.data.augment import Preprocess
from bonas.data.raw import balanced_subset
from bonas.data.splits import Splits, load_splits
from bonas.model.build import build_model, count_params, measure_latency
from bonas.training import device
from bonas.training.module import Classifier, make_trainer
from bonas.training.recipe import Recipe

# Testing an image (a forward pass, no augmentation) costs about a third of training on it; a half, to be safe.
TEST_COST_OF_A_TRAINING_IMAGE = 0.5
UNTIL_DEADLINE = 1_000_000  # the epoch count of a training that runs until its deadline (the deadline ends it)


def evaluate(
    net: torch.nn.Module, preprocess: Preprocess, splits: Splits, rows: torch.Tensor, batch: int = 1024
) -> tuple[float, list[float], list[list[int]]]:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class) on the images of ``rows``."""
    device, n_classes = next(net.parameters()).device, splits.n_classes
    net.eval()
    preprocess = preprocess.to(device)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    with torch.no_grad():
        for xb, yb in splits.loader(rows, batch, shuffle=False):
            pred = net(preprocess(xb.to(device))).argmax(1).cpu()
            confusion += torch.bincount(yb.cpu() * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1).double()).tolist()
    return confusion.diag().sum().item() / max(1, confusion.sum().item()), per_class, confusion.tolist()


def final_splits(config: StudyConfig, search_data: bool = False) -> Splits:
    """The data of a final model: the whole training split (split as the search split it, so validation
    images are known and join training), or the search's own subsets with ``search_data``."""
    data = config.data if search_data else dataclasses.replace(config.data, train_subset=0, val_subset=0)
    return load_splits(config.dataset, data, config.seed)


@dataclass
class Final:
    """A trained and tested final model."""

    net: torch.nn.Module
    arch: ArchSpec
    train: TrainSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    result: dict[str, Any]


class HardStop(pl.Callback):
    """Stops training mid-epoch in time to test the network by ``deadline`` (time.monotonic()): the
    training's own pace tells how long testing ``test_images`` takes. A schedule that follows the clock
    (``progress``) reaches its end at :meth:`end`."""

    def __init__(self, deadline: float, test_images: int, on_epoch: Callable[[int], None] | None):
        self.deadline, self.test_images, self.on_epoch = deadline, test_images, on_epoch
        self.start, self.images = time.monotonic(), 0

    def end(self) -> float:
        """When training must stop: the deadline less the test's time at this pace."""
        if not self.images:
            return self.deadline
        per_image = (time.monotonic() - self.start) / self.images
        return self.deadline - self.test_images * per_image * TEST_COST_OF_A_TRAINING_IMAGE

    def progress(self) -> float:
        return (time.monotonic() - self.start) / max(1e-9, self.end() - self.start)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.images = time.monotonic(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])
        if time.monotonic() >= self.end() and not trainer.should_stop:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.on_epoch is not None:
            self.on_epoch(trainer.current_epoch + 1)


def train_final(
    config: StudyConfig,
    splits: Splits,
    arch: ArchSpec,
    train: TrainSpec,
    seed: int,
    *,
    epochs: int | None = None,
    deadline: float | None = None,
    verbose: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> Final:
    """Train ``arch`` on train + validation for ``epochs``, or for as many as fit until ``deadline`` (a
    time.monotonic(); training stops there whatever the plan), and test it once. ``[final] augment`` turns
    augmentation on whatever ``train`` says."""
    if config.final.augment:
        train = dataclasses.replace(train, augment=True)
    rows = torch.cat([splits.train, splits.val])
    if config.final.train_subset:
        rows = rows[balanced_subset(splits.labels_of(rows).cpu(), config.final.train_subset, config.seed + 3)]
    # the final training set's own statistics: it is the training split now
    preprocess = splits.preprocess(config.data.cutout, rows=rows)
    mean, std = tuple(preprocess.mean.flatten().tolist()), tuple(preprocess.std.flatten().tolist())
    recipe = Recipe.of(config.training)
    torch.manual_seed(seed)
    net = build_model(arch, splits.input_shape, splits.n_classes)
    here = device.current()
    if here.holds_data:
        splits = splits.to(here.name)
    start = time.monotonic()
    stop = HardStop(deadline or float("inf"), len(splits.test), on_epoch)
    module = Classifier(net, train, preprocess, epochs or UNTIL_DEADLINE, recipe, None if epochs else stop.progress)
    trainer = make_trainer(epochs or UNTIL_DEADLINE, [stop], config.training.precision, verbose, recipe, limit_val_batches=0)
    batches = splits.loader(rows, train.batch_size, shuffle=True, seed=seed)
    trainer.fit(module, train_dataloaders=batches)
    fit_seconds = time.monotonic() - start
    test_acc, per_class, confusion = evaluate(net, preprocess, splits, splits.test)
    latency = measure_latency(net.to(here.name), splits.input_shape, 1, here.name, 0.2)
    result = {
        "test_acc": test_acc,
        "per_class_acc": dict(zip(splits.classes, per_class, strict=True)),
        "confusion": confusion,
        "epochs": round(trainer.global_step / len(batches), 2),  # a training until a deadline ends mid-epoch
        "until_deadline": epochs is None,
        "train_images": len(rows),
        "test_images": len(splits.test),
        "train_seconds": round(fit_seconds, 2),
        "parameters": count_params(net),
        "latency_ms_batch1": round(latency, 4),
        "device": here.accelerator,
        "arch": arch.describe(),
        "train": train.to_dict(),
    }
    return Final(net.cpu(), arch, train, mean, std, result)
