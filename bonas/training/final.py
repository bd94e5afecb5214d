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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bonas.config import StudyConfig
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.data.augment import Preprocess
from bonas.data.raw import balanced_subset
from bonas.data.splits import Splits, load_splits
from bonas.model.build import count_params, measure_latency, widest_activation
from bonas.training import device
from bonas.training.session import Session


def evaluate(
    net: torch.nn.Module, preprocess: Preprocess, splits: Splits, rows: torch.Tensor, batch: int = 1024
) -> tuple[float, list[float], list[list[int]]]:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class) on the images of ``rows``."""
    batch = splits.eval_batch(batch, widest_activation(net, splits.input_shape))
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


def final_rows(config: StudyConfig, splits: Splits) -> torch.Tensor:
    """The final training set: train + validation (the whole official training split, as the search split it), or a
    class-balanced ``[final] train_subset`` of it."""
    rows = torch.cat([splits.train, splits.val])
    if config.final.train_subset:
        rows = rows[balanced_subset(splits.labels_of(rows).cpu(), config.final.train_subset, config.seed + 3)]
    return rows


def on_device(splits: Splits) -> Splits:
    here = device.current()
    return splits.to(here.name) if here.holds_data else splits


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
    splits = on_device(splits)
    rows = final_rows(config, splits)
    session = Session(config, splits, arch, train, seed, rows)
    until = deadline or float("inf")
    session.stretch(
        rows, until, test_images=len(splits.test), epochs=epochs, verbose=verbose, on_epoch=on_epoch, keep_state=False
    )
    return finish(session, rows, until_deadline=epochs is None)


def finish(session: Session, rows: torch.Tensor, until_deadline: bool, **extra: Any) -> Final:
    """Test the session's network once on the test split and say what its training bought."""
    splits, net, here = session.splits, session.net, device.current()
    with session.on_data() as data:
        test_acc, per_class, confusion = evaluate(net, session.preprocess, data, data.test)
    latency = measure_latency(net.to(here.name), splits.input_shape, 1, here.name, 0.2)
    result = {
        "test_acc": test_acc,
        "per_class_acc": dict(zip(splits.classes, per_class, strict=True)),
        "confusion": confusion,
        "epochs": session.epochs,  # a training until a deadline ends mid-epoch
        "until_deadline": until_deadline,
        "train_images": len(rows),
        "test_images": len(splits.test),
        "train_seconds": round(session.seconds, 2),
        "parameters": count_params(net),
        "latency_ms_batch1": round(latency, 4),
        "device": here.accelerator,
        "arch": session.arch.describe(),
        "train": session.train.to_dict(),
        **extra,
    }
    return Final(net.cpu(), session.arch, session.train, session.mean, session.std, result)
