"""The training recipe: schedules by step and by the clock, EMA, label smoothing, cutout — each checked on what it does."""

from __future__ import annotations

import math

import pytest
import torch

from bonas.data.augment import cutout
from bonas.training.recipe import SCHEDULES, Recipe


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_schedule_anneals_by_the_end_of_the_training(schedule):
    multiplier = SCHEDULES[schedule]
    ends = [multiplier(p, 0.0) for p in (0.0, 0.5, 1.0, 1.5)]
    assert ends[-1] == ends[-2] and ends[-1] < 1e-3, "annealed at the end (a deadline), and stays there past it"
    assert max(multiplier(p / 100, 0.0) for p in range(101)) == pytest.approx(1.0, abs=1e-3)
    if schedule == "onecycle":
        assert ends[0] == pytest.approx(1 / 25) and multiplier(0.3, 0.0) == pytest.approx(1.0)
    else:
        assert ends[0] == 1.0 and ends[1] == pytest.approx(0.5)


def test_warm_up_then_cosine():
    cosine = SCHEDULES["cosine"]
    assert cosine(0.0, 0.05) == pytest.approx(0.1) and cosine(0.05, 0.05) == pytest.approx(1.0)
    assert cosine(0.55, 0.1) == pytest.approx(0.5) and cosine(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert cosine(0.5, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_ema_is_lightnings_callback_and_only_when_asked():
    assert Recipe().callbacks() == []
    (ema,) = Recipe(ema_decay=0.99).callbacks()
    assert type(ema).__name__ == "EMAWeightAveraging"


def test_cutout_blanks_one_square_per_image_at_most():
    torch.manual_seed(0)
    x = torch.ones(500, 1, 28, 28)
    zeros = (cutout(x, 10) == 0).sum(dim=(1, 2, 3))
    assert zeros.max().item() == 100 and zeros.min().item() >= 25, "10x10 inside, clipped at a border to no less than 5x5"
    assert len(set(zeros.tolist())) > 5, "the square lands at a different place in each image"
