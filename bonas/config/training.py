"""How networks train: the trials' [training] recipe and knobs, and the final model's [final] settings.

Optimizer and schedule names are registries of bonas.training.recipe, checked there (bonas.nas.choices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bonas.config.checks import Fail, at_least, between, bounds, choices


@dataclass
class TrainingConfig:
    max_epochs: int = 5  # per trial; short on purpose: the search ranks architectures, retrain trains long
    batch_sizes: list[int] = field(default_factory=lambda: [64, 128])  # choices; one value = fixed
    optimizers: list[str] = field(default_factory=lambda: ["adamw", "sgd"])  # sgd has nesterov momentum 0.9
    lr: list[float] = field(default_factory=lambda: [1e-3, 1e-2])  # [min, max], sampled log-uniform
    weight_decay: list[float] = field(default_factory=lambda: [1e-5, 1e-2])  # [min, max], log-uniform
    schedule: str = "cosine"  # cosine: lr decays to 0 over max_epochs; onecycle: up then down (Smith); constant: no decay
    warmup_epochs: float = 0.0  # cosine: linear warm-up from lr/10 over this many epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    ema_decay: float = 0.0  # 0 = off; else an exponential moving average of the weights is validated and kept
    channels_last: bool = True  # on CUDA: channels_last memory format (faster bf16 convolutions); ignored on CPU
    precision: str = "auto"  # auto: bf16-mixed on CUDA, 32-true elsewhere; or any Lightning precision
    eval_batch_size: int = 1024  # validation batches: large, they hold no gradients (fewer for wide layers: EVAL_BATCH_FLOATS)

    def check(self, fail: Fail) -> None:
        at_least(fail, "max_epochs", self.max_epochs, 1)
        choices(fail, "batch_sizes", self.batch_sizes, positive=True)
        choices(fail, "optimizers", self.optimizers)
        bounds(fail, "lr", self.lr, positive=True, lower=1e-12)
        bounds(fail, "weight_decay", self.weight_decay, positive=True, lower=0.0)
        if self.warmup_epochs < 0 or self.warmup_epochs >= self.max_epochs:
            fail("warmup_epochs", f"must be >= 0 and below max_epochs ({self.max_epochs}), got {self.warmup_epochs}")
        if not 0.0 <= self.label_smoothing < 1.0:
            fail("label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if not (self.ema_decay == 0.0 or 0.5 <= self.ema_decay < 1.0):
            fail("ema_decay", f"use 0 (off) or a decay in [0.5, 1), e.g. 0.999, got {self.ema_decay}")
        at_least(fail, "eval_batch_size", self.eval_batch_size, 1)


@dataclass
class FinalConfig:
    # bonas run: the share of --budget spent searching; the rest trains the winner (docs/results.md, results per budget)
    search_share: float = 0.5
    train_subset: int = 0  # images the final model trains on (class-balanced); 0 = the whole training split, train + validation
    # true: the final model trains with crop + flip (where the data set allows), whatever its trial did; false: as its
    # trial did ([data] augment). Off by default: on Fashion-MNIST crop+flip lost 2.5 pt in 4-epoch trials and 1.5 pt
    # in 12 epochs on all 54 000 images (bench/results/recipe.json)
    augment: bool = False
    epochs_multiple: int = 3  # bonas retrain without --epochs: this many times the search's epochs per trial
    # bonas run: the search's best few trials race at the final training's fidelity (the whole training split, equal
    # seconds each, the better half going on each round) for race_share of the time left; the survivor's final
    # training goes on from its state. 1 = no race: the search's best trains (bonas.nas.race)
    finalists: int = 4
    race_share: float = 0.3

    def check(self, fail: Fail) -> None:
        between(fail, "search_share", self.search_share, 0, 1, "(the rest of the budget trains the winner)")
        at_least(fail, "finalists", self.finalists, 1, "(1 = no race)")
        between(fail, "race_share", self.race_share, 0, 1)
        at_least(fail, "train_subset", self.train_subset, 0, "(0 = the whole training split)")
        at_least(fail, "epochs_multiple", self.epochs_multiple, 1)
