"""Zero-cost proxies against trained accuracy: does a score at initialisation rank a study's architectures?

Samples N architectures (with their training knobs) from a study config's space with Optuna's
RandomSampler through ``bonas.nas.space``, scores each at initialisation with every proxy of
``bonas.proxies.PROXIES`` on one training batch (timed), then trains it with bonas' own training code
(``Classifier`` + ``make_trainer`` on ``Batches``, as a trial does) for E epochs on class-balanced subsets
and records its validation accuracy. Reports Spearman's rank correlation with that accuracy of each proxy,
and of parameters and FLOPs as reference points, with a bootstrap 95% interval and the correlation on each
half of the sample (its stability). An architecture that does not train all E epochs stops the bench with
no result written; one whose loss diverges (NaN, as bonas prunes it) is recorded and left out of the
correlations, and counted in the RESULT line.

    .venv/bin/python bench/zero_cost.py                     # 120 architectures of studies/fashion-mnist.toml, 3 epochs
    .venv/bin/python bench/zero_cost.py --n 6 --epochs 1 --train 300 --val 200 --out /tmp/zc.json   # a smoke run
    .venv/bin/python bench/zero_cost.py --block-types plain,residual,separable   # the space with every block kind
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bonas.config.validate import BLOCK_TYPES  # noqa: E402

from bonas.config import load_config  # noqa: E402
from bonas.data.augment import Preprocess  # noqa: E402
from bonas.data.splits import load_splits  # noqa: E402
from bonas.model.build import build_model, count_params, summarize  # noqa: E402
from bonas.nas.proxies import PROXIES  # noqa: E402
from bonas.nas.space import suggest_arch, suggest_training  # noqa: E402
from bonas.training.module import Classifier, NonFiniteLoss, Recipe, make_trainer, quiet_lightning  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ("params", "flops")  # costs known before training: what a proxy has to beat


def sample(space, training, data, input_shape, n: int, seed: int) -> list[tuple[dict, object, object]]:
    """n (params, ArchSpec, TrainSpec) drawn by Optuna's RandomSampler through the space, define-by-run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        arch, train = suggest_arch(trial, space, input_shape), suggest_training(trial, training, data)
        out.append((dict(trial.params), arch, train))
        study.tell(trial, 0.0)  # the random sampler ignores values; told so the study holds no running trial
    return out


def score_and_train(
    i: int, arch, train, splits, x: torch.Tensor, y: torch.Tensor, args, recipe: Recipe, precision: str, eval_batch: int
) -> dict:
    seed = args.seed * 100_003 + i
    torch.manual_seed(seed)
    net = build_model(arch, splits.input_shape, splits.n_classes)
    row: dict = {
        "i": i,
        "arch": arch.describe(),
        "spec": arch.to_dict(),
        "train": train.to_dict(),
        "seed": seed,
        "params": count_params(net),
        "flops": sum(r.flops for r in summarize(net, splits.input_shape)),
    }
    for name, proxy in PROXIES.items():
        start = time.perf_counter()
        row[name] = proxy(net, x, y)
        row[f"{name}_ms"] = round(1000 * (time.perf_counter() - start), 2)

    preprocess = splits.preprocess()
    module = Classifier(net, train, preprocess, args.epochs, recipe)  # the study's recipe, as its trials train
    trainer = make_trainer(args.epochs, [], precision, False, recipe)
    start = time.perf_counter()
    try:
        trainer.fit(
            module,
            train_dataloaders=splits.loader(splits.train, train.batch_size, shuffle=True, seed=seed),
            val_dataloaders=splits.loader(splits.val, eval_batch, shuffle=False),
        )
        row["diverged"] = None
    except NonFiniteLoss as err:  # the trial would end PRUNED ("diverged"): no accuracy to rank
        row["diverged"] = str(err)
    row["train_s"] = round(time.perf_counter() - start, 2)
    row["curve"] = list(module.history)
    if row["diverged"] is None and (len(module.history) != args.epochs or trainer.current_epoch != args.epochs):
        raise SystemExit(
            f"zero_cost: architecture {i} ({row['arch']}) trained {trainer.current_epoch} epochs with "
            f"{len(module.history)} validations, not {args.epochs}: no result written"
        )
    row["val_acc"] = module.history[-1] if row["diverged"] is None else None
    return row


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant resample has no correlation: nan, left out below
        return float(spearmanr(a, b).statistic)


def correlations(rows: list[dict], keys: list[str], n_boot: int, seed: int) -> dict[str, dict]:
    """Spearman's rho of each key with val_acc over the trained rows, its bootstrap 95% interval and its
    value on the first and the second half of the sample. -inf (a singular NASWOT kernel) ranks lowest."""
    acc = np.array([r["val_acc"] for r in rows], dtype=float)
    half = len(rows) // 2
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, len(rows), len(rows)) for _ in range(n_boot)]
    out = {}
    for key in keys:
        v = np.array([r[key] for r in rows], dtype=float)
        resampled = np.array([spearman(v[idx], acc[idx]) for idx in boots])
        lo, hi = np.nanpercentile(resampled, [2.5, 97.5]) if np.isfinite(resampled).any() else (math.nan, math.nan)
        out[key] = {
            "rho": spearman(v, acc),
            "ci95": [float(lo), float(hi)],
            "halves": [spearman(v[:half], acc[:half]), spearman(v[half:], acc[half:])],
        }
    return out


def finite(value):
    """JSON without NaN/Infinity (not JSON): non-finite numbers become null, everywhere."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "studies" / "fashion-mnist.toml"), help="study config whose space is sampled")
    ap.add_argument("--n", type=int, default=120, help="architectures (default 120)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs per architecture (default 3)")
    ap.add_argument("--train", type=int, default=2000, help="class-balanced training images (default 2000)")
    ap.add_argument("--val", type=int, default=1000, help="class-balanced validation images (default 1000)")
    ap.add_argument("--batch", type=int, default=128, help="images in the proxies' batch (default 128, NASWOT's)")
    ap.add_argument(
        "--block-types", default="", help="comma list replacing the space's block_types, e.g. plain,residual,separable"
    )
    ap.add_argument("--seed", type=int, default=0, help="sampler, weights and bootstrap seed")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "zero_cost.json"))
    args = ap.parse_args()
    if min(args.n, args.epochs, args.train, args.val, args.batch) < 1 or args.n < 4:
        ap.error("--n must be >= 4 and --epochs, --train, --val, --batch >= 1")
    kinds = [k for k in args.block_types.split(",") if k]
    if any(k not in BLOCK_TYPES for k in kinds):
        ap.error(f"--block-types: choose from {', '.join(BLOCK_TYPES)}, got {args.block_types!r}")

    quiet_lightning(False)
    config = load_config(args.config)
    data = dataclasses.replace(config.data, train_subset=args.train, val_subset=args.val)
    space = dataclasses.replace(config.space, block_types=kinds) if kinds else config.space
    splits = load_splits(config.dataset, data, config.seed)
    shape, threads = splits.input_shape, torch.get_num_threads()
    command = shlex.join([Path(sys.executable).name, os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(),
    }
    print(f"machine: {machine['processor']}, {machine['cores']} cores, {threads} threads, torch {torch.__version__}")
    print(
        f"data: {config.dataset}, {len(splits.train)} train / {len(splits.val)} val images {shape}; "
        f"space of {args.config}{' with block_types ' + ','.join(kinds) if kinds else ''}; "
        f"{args.n} architectures, {args.epochs} epochs"
    )

    xb, y = next(iter(splits.loader(splits.train, args.batch, shuffle=True, seed=args.seed)))
    x = Preprocess(splits.mean, splits.std)(xb)  # the proxies' batch: normalised, not augmented, the same for all
    t = config.training
    start = time.perf_counter()
    rows = []
    for i, (params, arch, train) in enumerate(sample(space, t, data, shape, args.n, args.seed)):
        rows.append(
            {
                **score_and_train(i, arch, train, splits, x, y, args, Recipe.of(t), t.precision, t.eval_batch_size),
                "params_sampled": params,
            }
        )
        r = rows[-1]
        acc = "diverged" if r["val_acc"] is None else f"val_acc {r['val_acc']:.4f}"
        print(
            f"[{i + 1}/{args.n}] {r['arch']}: {acc} in {r['train_s']:.1f}s; "
            + ", ".join(f"{k} {r[k]:.4g} ({r[k + '_ms']:.0f} ms)" for k in PROXIES),
            flush=True,
        )
    minutes = (time.perf_counter() - start) / 60

    trained = [r for r in rows if r["val_acc"] is not None]
    if len(trained) < 4:
        raise SystemExit(
            f"zero_cost: only {len(trained)} of {args.n} architectures trained without diverging: no correlation to report"
        )
    keys = [*PROXIES, *REFERENCES]
    corr = correlations(trained, keys, args.bootstrap, args.seed)
    proxy_ms = {k: statistics.median(r[f"{k}_ms"] for r in rows) for k in PROXIES}
    print(
        f"\nSpearman rho with validation accuracy after {args.epochs} epochs ({len(trained)} architectures; "
        f"{args.n - len(trained)} diverged, left out):"
    )
    print(f"{'':<11}{'rho':>7}{'95% bootstrap':>18}{'1st half':>10}{'2nd half':>10}{'median ms':>11}")
    for k in keys:
        c = corr[k]
        ms = f"{proxy_ms[k]:>11.0f}" if k in proxy_ms else f"{'-':>11}"
        ci = f"[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
        print(f"{k:<11}{c['rho']:>7.3f}{ci:>18}{c['halves'][0]:>10.3f}{c['halves'][1]:>10.3f}{ms}")

    result = {
        "bench": "zero_cost",
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine,
        "torch": torch.__version__,
        "settings": vars(args),
        "dataset": config.dataset,
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "input_shape": list(shape),
        "minutes": round(minutes, 2),
        "proxy_median_ms": proxy_ms,
        "correlations": corr,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(finite(result), indent=1) + "\n")
    print(f"wrote {out}")
    best = max(PROXIES, key=lambda k: corr[k]["rho"] if math.isfinite(corr[k]["rho"]) else -math.inf)
    print(
        "RESULT "
        + " ".join(
            [
                f"n={args.n}",
                f"trained={len(trained)}",
                f"diverged={args.n - len(trained)}",
                f"epochs={args.epochs}",
                f"train={len(splits.train)}",
                f"val={len(splits.val)}",
                *(f"rho_{k}={corr[k]['rho']:.3f}" for k in keys),
                f"best_proxy={best}",
                *(f"{k}_ms={proxy_ms[k]:.0f}" for k in PROXIES),
                f"minutes={minutes:.1f}",
            ]
        )
    )


if __name__ == "__main__":
    main()
