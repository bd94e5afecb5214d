"""Multi-fidelity on Fashion-MNIST, arms side by side: no pruning, Optuna's in-trial successive halving and
hyperband, and bonas' asynchronous promotion (ASHA: pause at a rung, resume from the checkpoint when
promoted, through the study database).

Every arm runs the same number of configurations (TPE, the same seed per repeat) through bonas' own worker
loop, with trials of 9 epochs. Reported per arm, median over seeds: epochs trained (all trials, promotions
included, each epoch once), the best validation accuracy of a trial that trained all 9 epochs, and wall
time. The goal (issue 14): at least 3x fewer epochs than no pruning, with the best accuracy within one
standard error of the validation set (sqrt(p(1-p)/n)).

    .venv/bin/python bench/fidelity.py                      # 4 arms x 3 seeds (~50 min on 2 cores)
    .venv/bin/python bench/fidelity.py --seeds 1 --configs 6 --train 500 --val 300   # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402
from bonas.config import parse_config  # noqa: E402
from bonas.core import records as R  # noqa: E402
from bonas.nas.worker import Worker, prepare_worker  # noqa: E402

CONFIG = """
name = "{name}"
dataset = "fashion-mnist"
seed = {seed}
[budget]
n_trials = {configs}
[sampler]
name = "tpe"
n_startup_trials = 8
[pruner]
{pruner}
[training]
max_epochs = 9
batch_sizes = [64, 128]
optimizers = ["adamw", "sgd"]
lr = [1e-3, 3e-2]
weight_decay = [1e-5, 1e-2]
[data]
val_fraction = 0.1
train_subset = {train}
val_subset = {val}
[space]
n_blocks = [1, 3]
convs_per_block = [1, 2]
widths = [16, 32]
kernel_sizes = [3, 5]
pooling = ["max", "avg", "none"]
batch_norm = [true, false]
dropout = [0.0, 0.3]
heads = ["gap", "flatten"]
dense_layers = [0, 1]
dense_units = [32, 128]
dense_dropout = [0.0, 0.5]
block_types = ["plain", "residual", "separable"]
[objective]
latency_time_s = 0
[artifacts]
keep_top_k = 0
"""
ARMS = {
    "none": 'name = "none"',
    "successive-halving": 'name = "successive-halving"\nmin_resource = 1\nreduction_factor = 3',
    "hyperband": 'name = "hyperband"\nmin_resource = 1\nreduction_factor = 3',
    "asha": 'name = "asha"\nmin_resource = 1\nreduction_factor = 3',
}


def run_arm(arm: str, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    name = f"fid-{arm}-{seed}"
    config = parse_config(
        CONFIG.format(name=name, seed=seed, configs=args.configs, pruner=ARMS[arm], train=args.train, val=args.val),
        source=str(folder / f"{name}.toml"),
    )
    url = f"sqlite:///{folder / (name + '.db')}"
    worker = Worker(config, url, prepare_worker(config, url, verbose=False), seed=seed)
    start = time.perf_counter()
    summary = worker.run(args.configs, 0)
    wall = time.perf_counter() - start
    recs = R.records(worker.study.trials)
    full = [r for r in recs if r.state.name == "COMPLETE" and len(r.trial.intermediate_values) == 9 and r.trained]
    roots = [r for r in recs if r.promoted_from is None]
    if len(roots) != args.configs or summary.failed:
        raise SystemExit(
            f"fidelity: arm {arm} seed {seed} ran {len(roots)} configurations ({summary.failed} failed), not {args.configs}"
        )
    epochs = sum(r.epochs or 0 for r in recs)
    if arm != "none" and epochs >= 9 * args.configs:
        raise SystemExit(f"fidelity: arm {arm} seed {seed} trained {epochs} epochs: it stopped nothing")
    best = max((r.values[0] for r in full), default=0.0)
    return {
        "arm": arm,
        "seed": seed,
        "epochs": epochs,
        "best": best,
        "complete_9_epochs": len(full),
        "trials": len(recs),
        "configs": len(roots),
        "promotions": len(recs) - len(roots),
        "wall_s": round(wall, 1),
        "best_arch": max(full, key=lambda r: r.values[0]).arch_line if full else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--configs", type=int, default=27, help="configurations per run (default 27)")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "fidelity.json"))
    args = ap.parse_args()
    arms = args.arms.split(",")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bonas-fidelity-") as tmp:
        for seed in range(args.seeds):
            for arm in arms:  # arms alternate within a seed: they share the machine's state
                runs.append(run_arm(arm, seed, args, Path(tmp)))
                r = runs[-1]
                print(
                    f"seed {seed} {arm:<19} epochs {r['epochs']:>4}  best {r['best']:.4f}  "
                    f"({r['complete_9_epochs']} complete at 9 "
                    f"epochs, {r['promotions']} promotions, {r['wall_s']:.0f}s)",
                    flush=True,
                )
    summary = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {
            "epochs": statistics.median(r["epochs"] for r in mine),
            "best": statistics.median(r["best"] for r in mine),
            "wall_s": statistics.median(r["wall_s"] for r in mine),
        }
    ref = summary.get("none")
    se = math.sqrt(ref["best"] * (1 - ref["best"]) / args.val) if ref else float("nan")
    print(f"\n{'arm':<20}{'epochs':>8}{'fewer':>8}{'best':>8}{'vs none':>9}  (one standard error: {se:.4f})")
    for arm, s in summary.items():
        s["fewer_epochs"] = ref["epochs"] / s["epochs"] if ref else None
        s["vs_none"] = s["best"] - ref["best"] if ref else None
        s["within_one_se"] = abs(s["vs_none"]) <= se if ref else None
        print(f"{arm:<20}{s['epochs']:>8.0f}{s['fewer_epochs']:>7.2f}x{s['best']:>8.4f}{s['vs_none']:>+9.4f}")
    out = write(
        args.out,
        __file__,
        {"bench": "fidelity", "settings": vars(args), "one_standard_error": se, "summary": summary, "runs": runs},
    )
    print(f"wrote {out}")
    print(
        "RESULT "
        + " ".join(f"{a}_fewer={s['fewer_epochs']:.2f} {a}_best={s['best']:.4f}" for a, s in summary.items())
        + f" se={se:.4f}"
    )


if __name__ == "__main__":
    main()
