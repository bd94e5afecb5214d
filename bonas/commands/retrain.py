"""`bonas retrain`: a trial's network, rebuilt from its stored params alone, trained on the whole training split
(bonas.training.final), tested once and saved: a checkpoint file, a study artifact and the study's record
``bonas:retrain:<trial>``. ``bonas run`` saves its final model the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import upload_artifact

from bonas.core import records as R
from bonas.core.errors import StudyError
from bonas.data.splits import Splits
from bonas.model.checkpoint import make_checkpoint, save_checkpoint
from bonas.nas.choices import check_choices
from bonas.nas.objective import trial_seed
from bonas.nas.space import specs_from_params
from bonas.study.artifacts import open_store
from bonas.study.studies import Opened, stored_data, trial_of
from bonas.training.final import Final, final_splits, train_final

log = logging.getLogger(__name__)


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        best = R.best(R.records(trials))
        if best is None:
            raise StudyError(
                f"study {study.study_name!r} has no completed trial to retrain; run the search first or pass --trial"
            )
        return best.trial
    t = trial_of(study, number)
    if t.state == optuna.trial.TrialState.RUNNING:
        raise StudyError(f"trial {number} is still running")
    return t


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
    check_choices(config)
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
