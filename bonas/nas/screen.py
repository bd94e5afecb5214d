"""Zero-cost pre-screening: a trial's network scored at initialisation on one batch (bonas.nas.proxies), and
stopped before its first epoch when it scores below a percentile of the earlier trials' scores.

The screened trial ends PRUNED with no epoch trained, its score and the threshold recorded (user attr
``screen``), so TPE learns to avoid what the proxy rejects. Whether a proxy ranks a study's space at all
is measured by bench/zero_cost.py; whether screening pays is measured at equal compute by
bench/screening.py — it is off unless a study's [screen] section turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bonas.core import records as R
from bonas.data.augment import Preprocess
from bonas.data.splits import Splits
from bonas.nas.proxies import PROXIES


@dataclass(frozen=True)
class Screened:
    proxy: str
    score: float
    threshold: float | None  # None while fewer than n_startup trials have a score
    peers: int

    @property
    def rejected(self) -> bool:
        return self.threshold is not None and not self.score >= self.threshold  # NaN and -inf are rejected too

    def to_attr(self) -> dict:
        return {"proxy": self.proxy, "score": self.score, "threshold": self.threshold, "peers": self.peers}

    def reason(self, percentile: float) -> str:
        return (
            f"screened out before training: {self.proxy} {self.score:.4g} < {self.threshold:.4g}, the {percentile:g}th "
            f"percentile of {self.peers} earlier trials"
        )


def screen_batch(splits: Splits, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same n training images for every trial of a study (a seeded draw), normalised, not augmented."""
    g = torch.Generator().manual_seed(seed)
    rows = splits.train[torch.randperm(len(splits.train), generator=g)[:n].to(splits.train.device)]
    x, y = splits.take(rows)
    return Preprocess(splits.mean, splits.std).to(x.device)(x), y.to(x.device)


def score(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, proxy: str) -> float:
    value = PROXIES[proxy](net.to(x.device), x, y)
    net.to("cpu")
    return float(value)


def judge(value: float, proxy: str, recs: list[R.TrialRecord], percentile: float, n_startup: int) -> Screened:
    """The threshold from the scores of earlier trials (finite ones, any state), once there are enough."""
    peers = [r.screen["score"] for r in recs if r.screen.get("proxy") == proxy and np.isfinite(r.screen.get("score", np.nan))]
    threshold = float(np.percentile(peers, percentile)) if len(peers) >= max(1, n_startup) else None
    return Screened(proxy, value, threshold, len(peers))
