"""Results per budget: `bonas run` against hand-designed networks given the same whole budget, over several seeds.

For each seed, `bonas run <config> --budget B` runs as a user would (a subprocess, a fresh study database, the
config's seed set to the run's): its record gives the test accuracy of the model it ends with. Each hand design
then trains through bonas' own final training (bonas.training.final.train_final: the same whole training split,
train + validation, the config's final recipe — the one measured best at length, bench/final_recipe.py) for the
**whole budget**, start-up aside, with the same seed, and is tested once:

- "article best": the best of the article's 27 networks on Fashion-MNIST — 2 conv layers of 64 3x3 filters, no
  pooling, flatten;
- "2 conv + pool + BN": conv 32 3x3 + BN + ReLU + 2x2 max pool, conv 64 3x3 + BN + ReLU + 2x2 max pool, flatten, a
  128-unit dense layer with dropout 0.3 (the benchmark table's "2 Conv+pooling+BN", 0.934).

Both with AdamW, lr 2e-3, weight decay 5e-4, batch 128 (a good hand default). A hand design's run does not depend on
bonas' search: it is cached per (budget, seed, CPU model, design, and the training code and recipe it ran) in
``bench/results/hand-designs.json`` and reused while those are unchanged; the results say which were reused.
The results give every seed, the medians, and the margin in standard errors of the difference of two accuracies.

    .venv/bin/python bench/budget.py --budget 20m --seeds 0,1,2     # ~3 hours on 2 cores with the hand designs
    .venv/bin/python bench/budget.py --budget 1h --seeds 0,1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.record import machine, write  # noqa: E402
from bonas.config import load_config  # noqa: E402
from bonas.core import records as R  # noqa: E402
from bonas.core.durations import parse_duration  # noqa: E402
from bonas.core.spec import ArchSpec, BlockSpec, TrainSpec  # noqa: E402
from bonas.training.final import final_splits, train_final  # noqa: E402
from bonas.training.module import quiet_lightning, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "results" / "hand-designs.json"
TRAINING_CODE = ("bonas/training", "bonas/data", "bonas/model")  # what a hand design's run depends on
BASELINE_TRAIN = TrainSpec(optimizer="adamw", lr=2e-3, weight_decay=5e-4, batch_size=128, augment=False)
BASELINES = {
    "article best (2 conv x 64, no pooling)": ArchSpec(
        blocks=(BlockSpec(1, 64, 3, "none", False, 0.0), BlockSpec(1, 64, 3, "none", False, 0.0)),
        head="flatten",
        dense=(),
        dense_dropout=0.0,
    ),
    "2 conv + pool + BN": ArchSpec(
        blocks=(BlockSpec(1, 32, 3, "max", True, 0.0), BlockSpec(1, 64, 3, "max", True, 0.0)),
        head="flatten",
        dense=(128,),
        dense_dropout=0.3,
    ),
}


def seeded_copy(config_path: Path, folder: Path, seed: int) -> Path:
    """The config under its own name, with the run's seed, relative paths made absolute."""
    config = load_config(config_path)
    name = f"{config.name}-seed{seed}"
    text = config_path.read_text().replace(f'name = "{config.name}"', f'name = "{name}"')
    text = text.replace(f"seed = {config.seed}", f"seed = {seed}", 1)
    warm = config.warm_start.file
    if warm and not Path(warm).is_absolute():
        text = text.replace(f'file = "{warm}"', f'file = "{(config_path.parent / warm).resolve()}"')
    copy = folder / f"{name}.toml"
    copy.write_text(text)
    if load_config(copy).seed != seed:
        raise SystemExit(f"budget: {config_path} does not say `seed = {config.seed}` on a line of its own")
    return copy


def bonas_run(copy: Path, budget: str, folder: Path, workers: int) -> dict:
    """`bonas run` as a user runs it; its record, final result and what the search did."""
    name = copy.stem
    cmd = [sys.executable, "-m", "bonas", "run", "--workers", str(workers), str(copy), "--budget", budget,
           "--out", str(folder / f"{name}.pt"), "--report", str(folder / "report")]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.monotonic() - start
    print(proc.stdout[-1500:], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"budget: bonas run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / (name + '.db')}")
    record = next((v for k, v in study.user_attrs.items() if k.startswith(R.RUN_PREFIX)), None)
    if record is None or record["final_epochs"] < 1 or record["trials_this_run"] < 1:
        raise SystemExit(f"budget: bonas run left no usable record: {record}")
    recs = R.records(study.trials)
    return {
        "wall_s": round(wall, 1),
        "record": record,
        "final": study.user_attrs[f"{R.RETRAIN_PREFIX}{record['best_trial']}"],
        "priors": [{"number": r.number, "prior": r.prior, "state": r.state.name, "val_acc": r.val_acc} for r in recs if r.prior],
        "trials": len(recs),
        "trained_epochs_in_search": sum(r.epochs or 0 for r in recs),
        "states": R.state_counts(study.trials),
    }


def code_hash(config) -> str:
    """The training code a hand design's run went through, and the recipe it trained with."""
    h = hashlib.sha256(json.dumps([config.training.__dict__, config.final.__dict__, config.data.cutout], default=str).encode())
    for folder in TRAINING_CODE:
        for f in sorted((ROOT / folder).rglob("*.py")):
            h.update(f.relative_to(ROOT).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def hand_design(copy: Path, name: str, seconds: float, seed: int, cache: dict) -> dict:
    """A hand design trained for ``seconds`` (the whole budget), or its cached run of the same code and recipe."""
    config = load_config(copy)
    key = json.dumps([seconds, seed, machine()["cpu"], name, code_hash(config)])
    if key in cache:
        return {**cache[key], "reused": True}
    splits = final_splits(config)
    final = train_final(config, splits, BASELINES[name], BASELINE_TRAIN, seed, deadline=time.monotonic() + seconds)
    if final.result["epochs"] < 1:
        raise SystemExit(f"budget: hand design {name} trained no epoch in {seconds:.0f}s")
    result = {"name": name, "seconds": round(seconds, 1), "seed": seed, **final.result, "measured": time.strftime("%Y-%m-%d")}
    cache[key] = result
    CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return {**result, "reused": False}


def margin(a: float, b: float, n: int) -> float:
    """(a - b) in standard errors of the difference of two accuracies measured on ``n`` images each."""
    se = math.sqrt(a * (1 - a) / n + b * (1 - b) / n)
    return (a - b) / se if se else 0.0


def summary(seeds: list[dict], n_test: int) -> dict:
    out = {"bonas_median": statistics.median(s["bonas"]["final"]["test_acc"] for s in seeds)}
    for name in BASELINES:
        accs = [
            next(h["test_acc"] for h in s["hand"] if h["name"] == name)
            for s in seeds
            if any(h["name"] == name for h in s["hand"])
        ]
        if not accs:
            continue
        wins = sum(s["bonas"]["final"]["test_acc"] > next(h["test_acc"] for h in s["hand"] if h["name"] == name) for s in seeds)
        out[name] = {"median": statistics.median(accs), "bonas_wins": wins, "seeds": len(accs),
                     "margin_se_of_medians": round(margin(out["bonas_median"], statistics.median(accs), n_test), 2)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "studies" / "fashion-mnist.toml"))
    ap.add_argument("--budget", default="20m")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--designs", default=",".join(BASELINES), help="hand designs (names of BASELINES), comma-separated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", help="results file (default bench/results/budget-<dataset>-<budget>-<device>-seeds.json)")
    args = ap.parse_args()
    set_threads()
    quiet_lightning(False)
    budget_s = parse_duration(args.budget)
    designs = [d for d in args.designs.split(",") if d]
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    config = load_config(args.config)
    device = machine()["device"]
    out = Path(
        args.out
        or ROOT / "bench" / "results" / f"budget-{config.dataset}-{args.budget}-{'gpu' if device == 'cuda' else 'cpu'}-seeds.json"
    )
    asked = [int(s) for s in args.seeds.split(",")]
    seeds = []
    with tempfile.TemporaryDirectory(prefix="bonas-budget-") as tmp:
        for seed in asked:
            copy = seeded_copy(Path(args.config), Path(tmp), seed)
            run = bonas_run(copy, args.budget, Path(tmp), args.workers)
            print(f"seed {seed}: bonas run {run['final']['test_acc']:.4f} ({run['record']['arch']})", flush=True)
            hands = [hand_design(copy, name, budget_s, seed, cache) for name in designs]
            for h in hands:
                print(
                    f"seed {seed}: {h['name']} {h['test_acc']:.4f} ({h['epochs']} epochs{', reused' if h['reused'] else ''})",
                    flush=True,
                )
            seeds.append({"seed": seed, "bonas": run, "hand": hands})
            n_test = seeds[0]["bonas"]["final"]["test_images"]
            total = summary(seeds, n_test)
            # written after every seed, so a run stopped early keeps what it measured (seeds_asked says what is missing)
            write(out, __file__, {"bench": "budget", "dataset": config.dataset, "config": os.path.relpath(args.config, ROOT),
                                  "budget": args.budget, "budget_s": budget_s, "device": device,
                                  "hand_train": BASELINE_TRAIN.to_dict(), "hand_budget": "the whole budget",
                                  "designs": designs, "seeds_asked": asked, "seeds": seeds, "summary": total})  # fmt: skip
    print(f"wrote {out}")
    print("RESULT " + json.dumps(total))


if __name__ == "__main__":
    main()
