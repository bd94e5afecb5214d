"""Multi-objective pruning, measured: hypervolume of the (val_acc, params) Pareto front at equal compute.

Optuna refuses ``trial.report`` in multi-objective studies, so nothing prunes there; bonas' cost-aware
pruner stops a trial whose epoch-k accuracy is below the median of finished trials that cost no more.
Both arms run the same study config (digits, the default conditional space, MOTPE, 6 epochs per trial)
until the same number of epochs has been trained in total; the pruned arm fits more trials into it.

Hypervolume: points (1 - val_acc, log10(params)) of the completed, trained trials, reference point
(1, 7) (10 M parameters), Optuna's own hypervolume routine. Higher is better.

    .venv/bin/python bench/mo_pruning.py [--epochs-budget 180] [--seeds 5]
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

from bench.presets import without_table  # noqa: E402
from bench.record import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def config_text(name: str, seed: int, pruned: bool) -> str:
    """studies/digits.toml with its own [pruner]: none, or the median-style cost-aware pruner as measured."""
    text = (ROOT / "studies" / "digits.toml").read_text()
    text = text.replace('name = "digits"', f'name = "{name}"').replace("seed = 0 ", f"seed = {seed} ")
    text = without_table(text, "pruner")
    pruner = 'name = "median"\nn_startup_trials = 3\nn_warmup_steps = 2\n' if pruned else 'name = "none"\n'
    return (
        text
        + f'\n[pruner]\n{pruner}\n[objective]\nmetrics = ["val_acc", "params"]\nlatency_time_s = 0\n'
        + "\n[artifacts]\nkeep_top_k = 0\n"
    )


def hypervolume(trials) -> float:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    pts = [
        (1 - t.values[0], math.log10(t.values[1]))
        for t in trials
        if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs and t.values[1] > 0
    ]
    if not pts:
        return 0.0
    return float(compute_hypervolume(np.array(pts), np.array([1.0, 7.0])))


def run_arm(seed: int, pruned: bool, budget: int, folder: Path) -> dict:
    from bonas.config import parse_config
    from bonas.nas.worker import RunSummary, SignalGuard, Worker, prepare_worker
    from bonas.study.claims import claim_trial

    name = f"mo-{'pruned' if pruned else 'none'}-{seed}"
    path = folder / f"{name}.toml"
    path.write_text(config_text(name, seed, pruned))
    config = parse_config(path.read_text(), source=str(path))
    url = f"sqlite:///{folder / (name + '.db')}"
    worker = Worker(config, url, prepare_worker(config, url, verbose=False), seed=seed)
    epochs, start = 0, time.perf_counter()
    while epochs < budget:
        trial = claim_trial(worker.study, worker.storage, worker.lock, 10**6, 0).trial
        worker.run_trial(trial, SignalGuard(), RunSummary())
        epochs += worker.study.trials[-1].user_attrs.get("epochs", 0)
    trials = worker.study.trials
    return {
        "seed": seed,
        "pruned": pruned,
        "epochs": epochs,
        "trials": len(trials),
        "pruned_trials": sum(t.state.name == "PRUNED" for t in trials),
        "hypervolume": hypervolume(trials),
        "front": len([t for t in trials if t.state.name == "COMPLETE"]),
        "wall_s": time.perf_counter() - start,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs-budget", type=int, default=180, help="epochs trained per arm (default 180 = 30 full trials)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", default="bench/results/mo_pruning.json")
    args = ap.parse_args()
    from bonas.training.module import quiet_lightning, set_threads

    set_threads()
    quiet_lightning(False)
    folder = Path(tempfile.mkdtemp(prefix="bonas-mo-"))
    rows = []
    for seed in range(args.seeds):
        for pruned in (False, True):
            r = run_arm(seed, pruned, args.epochs_budget, folder)
            rows.append(r)
            print(
                f"seed {seed} {'pruned' if pruned else 'no pruning':<10}: {r['trials']:>3} trials ({r['pruned_trials']} pruned), "
                f"{r['epochs']} epochs, hypervolume {r['hypervolume']:.4f}, {r['wall_s']:.0f}s",
                flush=True,
            )
    hv = {p: [r["hypervolume"] for r in rows if r["pruned"] == p] for p in (False, True)}
    n = {p: statistics.mean(r["trials"] for r in rows if r["pruned"] == p) for p in (False, True)}
    med = {p: statistics.median(v) for p, v in hv.items()}
    wins = sum(a > b for a, b in zip(hv[True], hv[False], strict=True))
    print(f"\nequal compute ({args.epochs_budget} epochs per arm, {args.seeds} seeds, digits, (val_acc, params)):")
    print(
        f"  no pruning      median hypervolume {med[False]:.4f}  (mean {statistics.mean(hv[False]):.4f}), {n[False]:.1f} trials"
    )
    print(f"  cost-aware      median hypervolume {med[True]:.4f}  (mean {statistics.mean(hv[True]):.4f}), {n[True]:.1f} trials")
    print(f"  pruned arm better in {wins} of {args.seeds} seeds")
    summary = {"hv_median_none": med[False], "hv_median_pruned": med[True], "trials_mean": {"none": n[False], "pruned": n[True]}}
    write(args.json, __file__, {"bench": "mo_pruning", "settings": vars(args), "summary": summary, "wins": wins, "runs": rows})
    print(
        f"RESULT hv_pruned={med[True]:.4f} hv_none={med[False]:.4f} hv_ratio={med[True] / med[False]:.3f} "
        f"trials_pruned={n[True]:.1f} trials_none={n[False]:.1f} wins={wins}/{args.seeds} epochs_budget={args.epochs_budget}"
    )


if __name__ == "__main__":
    main()
