"""Training a network: the optimizers and schedules a recipe may name (one registry each), the LightningModule and
Trainer, the callbacks that tie a trial's training to its study, training states a trial resumes from, and the
final training on the whole training split."""

from bonas.training.final import train_final
from bonas.training.recipe import OPTIMIZERS, SCHEDULES, Recipe

__all__ = ["OPTIMIZERS", "SCHEDULES", "Recipe", "train_final"]
