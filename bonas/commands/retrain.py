"""From a search to a model: train an architecture on the whole training split, test it once, save it.

The final model trains on train + validation (the official training split; a subset only when
``[final] train_subset`` asks), with the study's recipe, for a number of epochs or until a deadline (then
its learning-rate schedule follows the clock, not the steps: it has annealed when the deadline stops it). The test
split is touched here and nowhere else. ``bonas retrain`` and ``bonas run`` rebuild the architecture from a
trial's stored params alone; the budget bench trains hand-designed baselines through the same function.
Results go to a checkpoint file, a study artifact and the study's user attrs (``bonas:retrain:<trial>``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
import torch
from optuna.artifacts import upload_artifact

from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.core.errors import StudyError
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.data.sources import balanced_subset
from bonas.data.splits import Batches, Preprocess, Splits, channel_stats, load_splits
from bonas.model.build import build_model, count_params, measure_latency
from bonas.model.checkpoint import make_checkpoint, save_checkpoint
from bonas.search.keeper import open_store
from bonas.search.objective import trial_seed
from bonas.search.space import specs_from_params
from bonas.study.studies import Opened, stored_data
from bonas.training.module import Classifier, Recipe, accelerator, make_trainer

log = logging.getLogger("bonas.commands.retrain")
# Testing an image (a forward pass, no augmentation) costs about a third of training on it; a half, to be safe.
TEST_COST_OF_A_TRAINING_IMAGE = 0.5
UNTIL_DEADLINE = 1_000_000  # the epoch count of a training that runs until its deadline (the deadline ends it)


def evaluate(
    net: torch.nn.Module, preprocess: Preprocess, x: torch.Tensor, y: torch.Tensor, n_classes: int, batch: int = 1024
) -> tuple[float, list[float], list[list[int]]]:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class) on (x, y)."""
    device = next(net.parameters()).device
    net.eval()
    preprocess = preprocess.to(device)
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
    with torch.no_grad():
        for xb, yb in Batches(x, y, batch, shuffle=False):
            pred = net(preprocess(xb.to(device))).argmax(1).cpu()
            confusion += torch.bincount(yb.cpu() * n_classes + pred, minlength=n_classes * n_classes).view(n_classes, n_classes)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1).double()).tolist()
    return confusion.diag().sum().item() / max(1, confusion.sum().item()), per_class, confusion.tolist()


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        best = R.best(R.records(trials))
        if best is None:
            raise StudyError(
                f"study {study.study_name!r} has no completed trial to retrain; run the search first or pass --trial"
            )
        return best.trial
    if not 0 <= number < len(trials):
        raise StudyError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state == optuna.trial.TrialState.RUNNING:
        raise StudyError(f"trial {number} is still running")
    return t


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
    x = torch.cat([splits.train_x, splits.val_x])
    y = torch.cat([splits.train_y, splits.val_y])
    if config.final.train_subset:
        keep = balanced_subset(y, config.final.train_subset, config.seed + 3)
        x, y = x[keep], y[keep]
    mean, std = channel_stats(x)  # the final training set's own statistics: it is the training split now
    preprocess = Preprocess(mean, std, splits.crop_pad, splits.flip, config.data.cutout)
    recipe = Recipe.of(config.training)
    torch.manual_seed(seed)
    net = build_model(arch, splits.input_shape, splits.n_classes)
    if torch.cuda.is_available():
        x, y = x.to("cuda"), y.to("cuda")
    start = time.monotonic()
    stop = HardStop(deadline or float("inf"), len(splits.test_y), on_epoch)
    module = Classifier(net, train, preprocess, epochs or UNTIL_DEADLINE, recipe, None if epochs else stop.progress)
    trainer = make_trainer(epochs or UNTIL_DEADLINE, [stop], config.training.precision, verbose, recipe, limit_val_batches=0)
    batches = Batches(x, y, train.batch_size, shuffle=True, seed=seed)
    trainer.fit(module, train_dataloaders=batches)
    fit_seconds = time.monotonic() - start
    test_acc, per_class, confusion = evaluate(net, preprocess, splits.test_x, splits.test_y, splits.n_classes)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    latency = measure_latency(net.to(device), splits.input_shape, 1, device, 0.2)
    result = {
        "test_acc": test_acc,
        "per_class_acc": dict(zip(splits.classes, per_class, strict=True)),
        "confusion": confusion,
        "epochs": round(trainer.global_step / len(batches), 2),  # a training until a deadline ends mid-epoch
        "until_deadline": epochs is None,
        "train_images": len(y),
        "test_images": len(splits.test_y),
        "train_seconds": round(fit_seconds, 2),
        "parameters": count_params(net),
        "latency_ms_batch1": round(latency, 4),
        "device": accelerator(),
        "arch": arch.describe(),
        "train": train.to_dict(),
    }
    return Final(net.cpu(), arch, train, mean, std, result)


def save_final(opened: Opened, trial: optuna.trial.FrozenTrial, final: Final, splits: Splits, out: str | None) -> dict[str, Any]:
    """The checkpoint (file and study artifact) and the study's record of what the trial really scores."""
    study, result = (
        opened.study,
        {"trial": trial.number, "val_acc_in_search": R.TrialRecord.of(trial).val_acc, **final.result},
    )
    ckpt = make_checkpoint(
        final.net,
        final.arch,
        splits.input_shape,
        splits.classes,
        final.mean,
        final.std,
        study=study.study_name,
        dataset=splits.name,
        params=trial.params,
        **{k: v for k, v in result.items() if k != "arch"},
    )
    path = save_checkpoint(ckpt, out or Path("checkpoints") / f"{study.study_name}-trial{trial.number}.pt")
    result["checkpoint"] = str(path)
    try:
        result["artifact_id"] = upload_artifact(
            artifact_store=open_store(opened.config, opened.url),
            file_path=str(path),
            study_or_trial=study,
            mimetype="application/octet-stream",
        )
    except OSError as err:
        log.warning("checkpoint not uploaded as an artifact: %s", err)
    study.set_user_attr(f"{R.RETRAIN_PREFIX}{trial.number}", result)
    return result


def retrain(
    opened: Opened,
    number: int | None = None,
    epochs: int | None = None,
    search_data: bool = False,
    out: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """`bonas retrain`: the trial (default: the best) on the whole training split, tested once, saved."""
    config = opened.config
    trial = pick_trial(opened.study, number)
    splits = final_splits(config, search_data)
    stored = stored_data(opened.study)
    if stored and list(splits.input_shape) != stored.get("input_shape"):
        raise StudyError(f"the data now has shape {list(splits.input_shape)}, the study was searched on {stored['input_shape']}")
    arch, train = specs_from_params(trial.params, config.space, config.training, config.data, splits.input_shape)
    final = train_final(
        config,
        splits,
        arch,
        train,
        trial_seed(config.seed, trial.number),
        epochs=epochs or config.final.epochs_multiple * config.training.max_epochs,
        verbose=verbose,
    )
    return save_final(opened, trial, final, splits, out)


def format_result(r: dict[str, Any]) -> str:
    early = " (until the budget's deadline; the schedule followed the clock)" if r.get("until_deadline") else ""
    lines = [
        f"trial {r['trial']}: {r['arch']}",
        f"  trained {r['epochs']} epochs on {r['train_images']} images (train + validation) in {r['train_seconds']:.1f}s on "
        f"{r['device']}{early}",
        f"  test accuracy {r['test_acc']:.4f} on {r['test_images']} test images"
        + (
            f" (validation accuracy in the search: {r['val_acc_in_search']:.4f})"
            if r.get("val_acc_in_search") is not None
            else ""
        ),
        f"  {r['parameters']:,} parameters, {r['latency_ms_batch1']:.3g} ms per image at batch 1 on {r['device']}",
        "  per class: " + ", ".join(f"{c} {a:.3f}" for c, a in r["per_class_acc"].items()),
        f"  checkpoint {r['checkpoint']}",
    ]
    return "\n".join(lines)
