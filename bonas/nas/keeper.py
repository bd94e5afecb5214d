"""Trial artifacts through Optuna's artifact store: weights, ArchSpec and learning curve of the best k.

The store is a file-system store beside the study (``<name>.artifacts``). A trial that completes within
the current top k uploads a checkpoint (see :mod:`bonas.model.checkpoint`), its ArchSpec as JSON and a
learning-curve PNG; trials that fall out of the top k lose their files, so the disk stays bounded
(k + one per worker at most). Only PNG, JSON and binary checkpoints are ever written.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import upload_artifact
from optuna.trial import TrialState

from bonas.config import StudyConfig
from bonas.core import records as R
from bonas.study.artifacts import artifact_dir, open_store, trial_artifacts
from bonas.training.states import remove_states

log = logging.getLogger("bonas.nas.keeper")

KIND_PREFIX = "trial-"  # file names: trial-<n>-weights.pt, trial-<n>-arch.json, trial-<n>-curve.png


def rank_among_rankable(study: optuna.Study, value: float) -> int:
    """1-based rank ``value`` would take among the study's rankable trials (ties: the newcomer last)."""
    recs = R.records(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return sum(1 for r in recs if r.rankable and r.values[0] >= value) + 1


class Keeper:
    """Uploads the artifacts of trials in the top k and removes those that drop out of it."""

    def __init__(self, config: StudyConfig, url: str):
        self.k = config.artifacts.keep_top_k
        self.curves = config.artifacts.curves
        self.config = config
        self.folder = artifact_dir(config, url)
        self.store = open_store(config, url) if self.k > 0 or config.workers.checkpoint else None

    def keep(self, study: optuna.Study, trial: optuna.Trial, value: float, prepared, module, splits) -> bool:
        """Before tell: upload this trial's artifacts if it ranks within the top k."""
        if self.store is None or self.k == 0 or rank_among_rankable(study, value) > self.k:
            return False
        from bonas.model.checkpoint import make_checkpoint, save_checkpoint

        ckpt = make_checkpoint(
            module.net,
            prepared.arch,
            splits.input_shape,
            splits.classes,
            splits.mean,
            splits.std,
            study=study.study_name,
            trial=trial.number,
            params=trial.params,
            val_acc=value,
            epochs=len(module.history),
            train=prepared.train.to_dict(),
            dataset=splits.name,
        )
        with tempfile.TemporaryDirectory(prefix="bonas-artifacts-") as tmp:
            stem = Path(tmp) / f"{KIND_PREFIX}{trial.number}"
            weights = save_checkpoint(ckpt, f"{stem}-weights.pt")
            upload_artifact(
                artifact_store=self.store, file_path=str(weights), study_or_trial=trial, mimetype="application/octet-stream"
            )
            arch = Path(f"{stem}-arch.json")
            arch.write_text(
                json.dumps(
                    {"arch": prepared.arch.to_dict(), "train": prepared.train.to_dict(), "line": prepared.arch.describe()},
                    indent=1,
                )
            )
            upload_artifact(artifact_store=self.store, file_path=str(arch), study_or_trial=trial, mimetype="application/json")
            if self.curves and module.history:
                curve = learning_curve_png(module.history, module.loss_history, Path(f"{stem}-curve.png"), trial.number)
                upload_artifact(artifact_store=self.store, file_path=str(curve), study_or_trial=trial, mimetype="image/png")
        return True

    def prune(self, study: optuna.Study) -> int:
        """Remove the files of completed trials outside the top k, and the training states no retry or
        promotion will go on from (bonas.training.states); returns how many were removed."""
        if self.store is None:
            return 0
        keep = {r.number for r in R.top_k(R.records(study.get_trials(deepcopy=False)), self.k)}
        removed = remove_states(study, self.store, self.folder, self.k)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in keep:
                continue
            for artifact_id in trial_artifacts(t).values():
                if (self.folder / artifact_id).exists():
                    try:
                        self.store.remove(artifact_id)
                        removed += 1
                    except Exception:  # a peer removed it first
                        pass
        return removed


def learning_curve_png(acc: list[float], loss: list[float], path: Path, number: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    epochs = list(range(1, len(acc) + 1))
    ax.plot(epochs, acc, "o-", color="tab:blue", label="val_acc")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy", color="tab:blue")
    if loss:
        ax2 = ax.twinx()
        ax2.plot(epochs[: len(loss)], loss, "s--", color="tab:red", label="val_loss")
        ax2.set_ylabel("validation loss", color="tab:red")
    ax.set_title(f"trial {number}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
