"""From a search to a model: retrain the chosen trial on train + validation, test it once, save it.

The architecture and training knobs are rebuilt from the trial's stored params alone; the test split is
touched here and nowhere else. Results go to a checkpoint file, a study artifact, and the study's user
attrs (``bonas:retrain:<trial>``), so a study records what its winner really scores.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import upload_artifact

from bonas import records as R
from bonas.artifacts import open_store
from bonas.checkpoint import make_checkpoint, save_checkpoint
from bonas.data import Batches, Preprocess, channel_stats, load_splits
from bonas.errors import StudyError
from bonas.model import build_model
from bonas.objective import trial_seed
from bonas.space import specs_from_params
from bonas.study import Opened, stored_data
from bonas.train import Classifier, Recipe, accelerator, make_trainer

log = logging.getLogger("bonas.retrain")
EPOCHS_MULTIPLE = 3  # default retraining length: this many times the search's epochs per trial


def evaluate(net: torch.nn.Module, preprocess: Preprocess, x: torch.Tensor, y: torch.Tensor, n_classes: int,
             batch: int = 1024) -> tuple[float, list[float], list[list[int]]]:
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
            raise StudyError(f"study {study.study_name!r} has no completed trial to retrain; run the search first or pass --trial")
        return best.trial
    if not 0 <= number < len(trials):
        raise StudyError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
    t = trials[number]
    if t.state == optuna.trial.TrialState.RUNNING:
        raise StudyError(f"trial {number} is still running")
    return t


def retrain(opened: Opened, number: int | None = None, epochs: int | None = None, full_data: bool = False,
            out: str | None = None, verbose: bool = False) -> dict[str, Any]:
    study, config = opened.study, opened.config
    trial = pick_trial(study, number)
    data_config = dataclasses.replace(config.data, train_subset=0, val_subset=0) if full_data else config.data
    splits = load_splits(config.dataset, data_config, config.seed)
    stored = stored_data(study)
    if stored and list(splits.input_shape) != stored.get("input_shape"):
        raise StudyError(f"the data now has shape {list(splits.input_shape)}, the study was searched on {stored['input_shape']}")
    arch, train = specs_from_params(trial.params, config.space, config.training, config.data, splits.input_shape)
    epochs = epochs or EPOCHS_MULTIPLE * config.training.max_epochs

    x = torch.cat([splits.train_x, splits.val_x])
    y = torch.cat([splits.train_y, splits.val_y])
    mean, std = channel_stats(x)  # the retraining set's own statistics: it is the training split now
    preprocess = Preprocess(mean, std, splits.crop_pad, splits.flip, config.data.cutout)
    torch.manual_seed(trial_seed(config.seed, trial.number))
    net = build_model(arch, splits.input_shape, splits.n_classes)
    recipe = Recipe.of(config.training)
    module = Classifier(net, train, preprocess, epochs, recipe)
    trainer = make_trainer(epochs, [], config.training.precision, verbose, recipe, limit_val_batches=0)
    if torch.cuda.is_available():
        x, y = x.to("cuda"), y.to("cuda")
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=Batches(x, y, train.batch_size, shuffle=True, seed=trial_seed(config.seed, trial.number)))
    seconds = time.perf_counter() - start

    test_acc, per_class, confusion = evaluate(net, preprocess, splits.test_x, splits.test_y, splits.n_classes)
    result = {
        "trial": trial.number,
        "test_acc": test_acc,
        "per_class_acc": dict(zip(splits.classes, per_class, strict=True)),
        "confusion": confusion,
        "val_acc_in_search": trial.values[0] if trial.values else None,
        "epochs": epochs,
        "train_images": len(y),
        "test_images": len(splits.test_y),
        "train_seconds": round(seconds, 2),
        "device": accelerator(),
        "arch": arch.describe(),
    }
    ckpt = make_checkpoint(net, arch, splits.input_shape, splits.classes, mean, std, study=study.study_name, dataset=splits.name,
                           params=trial.params, train=train.to_dict(), **{k: v for k, v in result.items() if k != "arch"})
    path = save_checkpoint(ckpt, out or Path("checkpoints") / f"{study.study_name}-trial{trial.number}.pt")
    result["checkpoint"] = str(path)
    try:
        result["artifact_id"] = upload_artifact(artifact_store=open_store(config, opened.url), file_path=str(path), study_or_trial=study,
                                                mimetype="application/octet-stream")
    except OSError as err:
        log.warning("checkpoint not uploaded as an artifact: %s", err)
    study.set_user_attr(f"{R.RETRAIN_PREFIX}{trial.number}", result)
    return result


def format_result(r: dict[str, Any]) -> str:
    lines = [
        f"trial {r['trial']}: {r['arch']}",
        f"  retrained {r['epochs']} epochs on {r['train_images']} images (train + validation) in {r['train_seconds']:.1f}s on {r['device']}",
        f"  test accuracy {r['test_acc']:.4f} on {r['test_images']} test images"
        + (f" (validation accuracy in the search: {r['val_acc_in_search']:.4f})" if r["val_acc_in_search"] is not None else ""),
        "  per class: " + ", ".join(f"{c} {a:.3f}" for c, a in r["per_class_acc"].items()),
        f"  checkpoint {r['checkpoint']}",
    ]
    return "\n".join(lines)
