"""Which training recipe a study should default to, measured on Fashion-MNIST, arms side by side.

Each arm changes one ingredient of the recipe (bonas.train.Recipe and [data] augmentation) and trains the
same architectures with bonas' own trial path (Objective.prepare + Objective.fit: the network, the data,
the Lightning module a trial uses), validation accuracy after the last epoch. Two regimes:

- search: a short trial on a subset (what every search trial does): 2 architectures x 2 seeds per arm;
- long: the whole training split for 12 epochs (the scale of a final training), one architecture, one seed,
  for the ingredients that may pay off only there; longer: 30 epochs of a wider residual network, with and
  without augmentation (the final training of a 1-hour budget runs ~30-50 epochs).

    .venv/bin/python bench/recipe.py                    # both regimes (~40 min on 2 cores)
    .venv/bin/python bench/recipe.py --regimes search
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.record import write  # noqa: E402
from bonas.config import parse_config  # noqa: E402
from bonas.data.splits import load_splits  # noqa: E402
from bonas.nas.objective import Objective  # noqa: E402
from bonas.training.module import quiet_lightning, set_threads  # noqa: E402

BASE = """
name = "recipe"
dataset = "fashion-mnist"
seed = {seed}
[training]
max_epochs = {epochs}
batch_sizes = [128]
optimizers = ["adamw"]
lr = [3e-3, 3e-3]
weight_decay = [5e-4, 5e-4]
[data]
val_fraction = 0.1
train_subset = {train}
val_subset = {val}
[space]
n_blocks = [2, 2]
convs_per_block = [2, 2]
widths = [{width}]
kernel_sizes = [3]
pooling = ["max"]
batch_norm = [true]
dropout = [0.0, 0.0]
heads = ["gap"]
dense_layers = [0, 0]
block_types = ["{kind}"]
"""
ARCHS = [("plain", 24), ("residual", 24)]  # c24k3x2+bn/max twice + gap; the same with residual blocks
# search: what every trial does (a subset, a few epochs); long: a final training's scale (the whole training
# split, many epochs), on one architecture and one seed, for the ingredients that may only pay off there.
REGIMES = {
    "search": {"epochs": 4, "train": 10000, "val": 2000, "archs": ARCHS, "seeds": 2},
    "long": {"epochs": 12, "train": 0, "val": 0, "archs": ARCHS[:1], "seeds": 1},
    "longer": {"epochs": 30, "train": 0, "val": 0, "archs": [("residual", 32)], "seeds": 1},
    "smoke": {"epochs": 1, "train": 300, "val": 200, "archs": ARCHS, "seeds": 1},
}
# Each arm: (name, [training] changes, [data] changes). "base" has no augmentation, cosine, no smoothing, no EMA.
ARMS = [
    ("base", {}, {"augment": "none"}),
    ("crop+flip", {}, {"augment": "auto"}),
    ("crop+flip+cutout", {}, {"augment": "auto", "cutout": 10}),
    ("label smoothing 0.1", {"label_smoothing": 0.1}, {"augment": "none"}),
    ("EMA 0.999", {"ema_decay": 0.999}, {"augment": "none"}),
    ("one-cycle", {"schedule": "onecycle"}, {"augment": "none"}),
    ("warm-up 1 epoch", {"warmup_epochs": 1.0}, {"augment": "none"}),
]
LONG_ARMS = ("base", "crop+flip", "label smoothing 0.1", "EMA 0.999")
LONGER_ARMS = ("base", "crop+flip")


def train_once(regime: dict, kind: str, width: int, seed: int, training: dict, data: dict, splits_cache: dict) -> dict:
    sizes = {k: regime[k] for k in ("epochs", "train", "val")}
    config = parse_config(BASE.format(seed=seed, kind=kind, width=width, **sizes), source="<recipe>")
    config.training = dataclasses.replace(config.training, **training)
    config.data = dataclasses.replace(config.data, **data)
    key = (config.data.train_subset, config.data.val_subset, seed)
    if key not in splits_cache:
        splits_cache[key] = load_splits(config.dataset, config.data, seed)
    objective = Objective(config, splits_cache[key])
    p = objective.prepare(optuna.trial.FixedTrial({}), seed)
    start = time.perf_counter()
    module = objective.fit(None, p)
    if len(module.history) != config.training.max_epochs:
        raise SystemExit(f"recipe: {p.arch.describe()} trained {len(module.history)} epochs, not {config.training.max_epochs}")
    return {
        "arch": p.arch.describe(),
        "seed": seed,
        "val_acc": module.history[-1],
        "curve": module.history,
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regimes", default="search,long")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "recipe.json"))
    args = ap.parse_args()
    set_threads()
    quiet_lightning(False)
    results, cache, start = {}, {}, time.perf_counter()
    for regime_name in args.regimes.split(","):
        regime = REGIMES[regime_name]
        only = {"long": LONG_ARMS, "longer": LONGER_ARMS}.get(regime_name)
        arms = [a for a in ARMS if only is None or a[0] in only]
        for name, training, data in arms:
            runs = [
                train_once(regime, kind, width, seed, training, data, cache)
                for kind, width in regime["archs"]
                for seed in range(regime["seeds"])
            ]
            accs = [r["val_acc"] for r in runs]
            results[f"{regime_name}/{name}"] = {
                "regime": regime_name,
                "arm": name,
                "median_val_acc": statistics.median(accs),
                "mean_val_acc": statistics.fmean(accs),
                "runs": runs,
                **regime,
            }
            print(
                f"{regime_name:<7} {name:<32} median val_acc {statistics.median(accs):.4f}  "
                + "  ".join(f"{r['arch'].split(' |')[0]}/s{r['seed']} {r['val_acc']:.4f}" for r in runs),
                flush=True,
            )
    minutes = (time.perf_counter() - start) / 60
    out = write(
        args.out,
        __file__,
        {
            "bench": "recipe",
            "regimes": REGIMES,
            "minutes": round(minutes, 1),
            "results": results,
        },
    )
    print(f"wrote {out} ({minutes:.0f} min)")
    base = {r: results[f"{r}/base"]["median_val_acc"] for r in args.regimes.split(",")}
    print(
        "RESULT "
        + " ".join(
            f"{k.replace(' ', '_').replace(',', '')}={v['median_val_acc']:.4f}({v['median_val_acc'] - base[v['regime']]:+.4f})"
            for k, v in results.items()
        )
    )


if __name__ == "__main__":
    main()
