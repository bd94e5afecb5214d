"""Lightning callbacks that tie a trial's training to its study: saving its state, pruning, pausing at a
rung, stopping at a deadline, noticing that a peer failed the trial. Each raises a named exception that
bonas.nas.objective turns into an Outcome.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import optuna
from lightning.pytorch.callbacks import Callback
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from bonas.core import records as R
from bonas.study import promotion
from bonas.study.claims import failed_by_peer
from bonas.study.storage import trial_id
from bonas.training.states import partial_name, state_name


class TrialAbandoned(RuntimeError):
    """The storage no longer lists this trial as RUNNING: drop it without telling anything."""


class Paused(Exception):
    """ASHA: the trial stopped at a rung, below the top 1/eta there; its state is saved for a promotion."""

    def __init__(self, epochs: int, rank: int, peers: int, eta: int):
        super().__init__(
            f"paused at epoch {epochs}: rank {rank} of the {peers} trials at this rung, not in the top 1/{eta} "
            "yet; promoted later if it gets there"
        )
        self.epochs = epochs


class TimeSpent(Exception):
    """The time budget ran out: the trial stops (and is requeued, to go on from its last saved state)."""

    def __init__(self, epochs: int, max_epochs: int, what: str, mid_epoch: bool = False):
        where = f"in epoch {epochs + 1}" if mid_epoch else f"after epoch {epochs}"
        super().__init__(
            f"stopped {where} of {max_epochs}: {what} is spent; requeued, it goes on from its checkpoint "
            f"(epoch {epochs}) when the budget allows"
        )


class TrialDeadline(NamedTuple):
    """When a running trial must stop (time.monotonic() values): at the first epoch boundary past ``at``
    (no finished batch lost), and at once, mid-epoch, at ``wall`` when there is one."""

    at: float
    what: str
    wall: float | None = None


class StateSaver(Callback):
    """After each epoch's validation: the trial's training state, into its one state artifact."""

    def __init__(self, trial: optuna.Trial, store: FileSystemArtifactStore, folder: Path):
        self.trial, self.store, self.folder = trial, store, folder
        self.artifact_id: str | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if self.artifact_id is None:
            with tempfile.TemporaryDirectory(prefix="bonas-state-") as tmp:
                path = Path(tmp) / state_name(self.trial.number)
                trainer.save_checkpoint(path)
                self.artifact_id = upload_artifact(
                    artifact_store=self.store, file_path=str(path), study_or_trial=self.trial, mimetype="application/octet-stream"
                )
            return
        # The same artifact, overwritten (the trial lists one state, not one per epoch) by a rename in the
        # store's folder, where FileSystemArtifactStore keeps artifact <id> as the file <id>: a worker killed
        # mid-write leaves the previous epoch's state whole, never a torn one.
        partial = self.folder / partial_name(self.artifact_id)
        trainer.save_checkpoint(partial)
        os.replace(partial, self.folder / self.artifact_id)


class TrialGuard(Callback):
    """Stops training when the trial was failed behind our back (a stalled worker reaped by a peer)."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        frozen = self.trial.storage.get_trial(trial_id(self.trial))
        if frozen.state != TrialState.RUNNING:
            raise TrialAbandoned(failed_by_peer(frozen))


class PruningCallback(PyTorchLightningPruningCallback):
    """optuna-integration's callback, except that the last epoch only reports: pruning a trial that has
    trained every epoch saves nothing and would hide a finished result behind PRUNED."""

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or pl_module.current_epoch < trainer.max_epochs - 1:
            super().on_validation_end(trainer, pl_module)
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and trainer.is_global_zero:
            self._trial.report(score.item(), step=pl_module.current_epoch)


class RungPause(Callback):
    """ASHA (bonas.study.promotion): at a rung, go on only while in the top 1/eta of the trials that reached it."""

    def __init__(self, trial: optuna.Trial, rungs: list[int], eta: int):
        self.trial, self.rungs, self.eta = trial, set(rungs), eta

    def on_validation_end(self, trainer, pl_module) -> None:
        epochs = len(pl_module.history)
        if trainer.sanity_checking or epochs not in self.rungs or epochs >= trainer.max_epochs:
            return
        recs = R.records(self.trial.study.get_trials(deepcopy=False))
        rank, peers = promotion.rank_at(recs, self.trial.number, epochs)
        if rank > peers // self.eta:
            raise Paused(epochs, rank, peers, self.eta)


class Deadline(Callback):
    """Past ``deadline.at``: stop at the epoch's end; past ``deadline.wall``: stop at once."""

    def __init__(self, deadline: TrialDeadline):
        self.deadline = deadline

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.deadline.wall is not None and time.monotonic() >= self.deadline.wall:
            raise TimeSpent(len(pl_module.history), trainer.max_epochs, self.deadline.what, mid_epoch=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        epochs = len(pl_module.history)
        if not trainer.sanity_checking and epochs < trainer.max_epochs and time.monotonic() >= self.deadline.at:
            raise TimeSpent(epochs, trainer.max_epochs, self.deadline.what)


class CostAwarePruning(Callback):
    """Pruning for multi-objective studies, where Optuna refuses ``trial.report`` (its RFC #3450).

    At epoch k a trial is stopped when its validation accuracy is below the ``percentile`` of the epoch-k
    accuracies of finished trials that cost no more than it does (cost: the secondary objective, known
    before training). A trial that could still reach the Pareto front by being cheap is never compared
    with costlier ones, so it is never pruned for being less accurate than they are.
    """

    def __init__(self, trial: optuna.Trial, cost: float, percentile: float | None, n_startup_trials: int, n_warmup_steps: int):
        self.trial, self.cost, self.percentile = trial, cost, percentile
        self.n_startup, self.n_warmup = n_startup_trials, n_warmup_steps

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.history:
            return
        epoch, acc = len(pl_module.history) - 1, pl_module.history[-1]
        self.trial.set_user_attr(R.CURVE, list(pl_module.history))
        if self.percentile is None or epoch < self.n_warmup or epoch >= trainer.max_epochs - 1:
            return  # the last epoch: pruning now would save nothing
        threshold = self.threshold(R.records(self.trial.study.get_trials(deepcopy=False, states=R.FINISHED)), epoch)
        if threshold is not None and acc < threshold:
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch}: val_acc {acc:.4f} < {threshold:.4f}, the "
                f"{self.percentile:g}th percentile of trials costing <= {self.cost:g}"
            )

    def threshold(self, finished: list[R.TrialRecord], epoch: int) -> float | None:
        peers = [
            r.curve[epoch] for r in finished if r.trained and r.cost is not None and r.cost <= self.cost and len(r.curve) > epoch
        ]
        if len(peers) < max(1, self.n_startup):
            return None
        return float(np.percentile(peers, self.percentile))
