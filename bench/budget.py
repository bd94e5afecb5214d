"""Results per budget: `bonas run` against hand-designed networks, in one run.

For each search share asked, `bonas run <config> --budget B` runs as a user would (a subprocess, a fresh
study database); its record gives the test accuracy of the model it ends with and the seconds its final
training took. Then, unless --no-baselines, two hand-designed networks train with the same final recipe
(the study's [training] recipe and augmentation, on the same whole training split) for the same
final-training time, through the same function (bonas.retrain.train_final), and are tested once:

- "article best": the best of the article's 27 networks on Fashion-MNIST (bench/search_quality.py's table:
  all 27 trained alike) — 2 conv layers of 64 3x3 filters, no pooling, flatten;
- "2 conv + pool + BN": conv 32 3x3 + BN + ReLU + 2x2 max pool, conv 64 3x3 + BN + ReLU + 2x2 max pool,
  flatten, a 128-unit dense layer with dropout 0.3 (the benchmark table's "2 Conv+pooling+BN", 0.934).

Both get the same optimizer knobs (AdamW, lr 2e-3, weight decay 5e-4, batch 128; a good hand default).

    .venv/bin/python bench/budget.py --dataset fashion-mnist --budget 1h           # ~2 h on 2 cores
    .venv/bin/python bench/budget.py --budget 20m --shares 0.3,0.5,0.7 --no-baselines   # choose the share
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.record import write  # noqa: E402
from bonas.commands.retrain import final_splits, train_final  # noqa: E402
from bonas.commands.run import parse_duration  # noqa: E402
from bonas.config import load_config  # noqa: E402
from bonas.core import records as R  # noqa: E402
from bonas.core.spec import ArchSpec, BlockSpec, TrainSpec  # noqa: E402
from bonas.study.studies import warm_start_params  # noqa: E402
from bonas.training.module import quiet_lightning, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASELINE_TRAIN = TrainSpec(
    optimizer="adamw", lr=2e-3, weight_decay=5e-4, batch_size=128, augment=False
)  # [final] augment decides
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


def bonas_run(
    config_path: Path, budget: str, share: float, folder: Path, workers: int = 1, alongside: list | None = None
) -> dict:
    """`bonas run` on a copy of the config with its own database; returns its run record."""
    config = load_config(config_path)
    copy = folder / f"{config.name}-{share:g}.toml"
    text = config_path.read_text().replace(f'name = "{config.name}"', f'name = "{copy.stem}"')
    warm = config.warm_start.file
    if warm and not Path(warm).is_absolute():  # the copy sits elsewhere: point at the preset's own warm-start file
        text = text.replace(f'file = "{warm}"', f'file = "{(config_path.parent / warm).resolve()}"')
    copy.write_text(text)
    cmd = [
        sys.executable,
        "-m",
        "bonas",
        "run",
        "--workers",
        str(workers),
        str(copy),
        "--budget",
        budget,
        "--search-share",
        str(share),
        "--out",
        str(folder / f"{copy.stem}.pt"),
        "--report",
        str(folder / "report"),
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    for launch in alongside or []:
        launch(start)
    stdout, stderr = proc.communicate()
    proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    wall = time.monotonic() - start
    print(proc.stdout[-1500:], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"budget: bonas run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    study = optuna.load_study(study_name=copy.stem, storage=f"sqlite:///{folder / (copy.stem + '.db')}")
    record = next((v for k, v in study.user_attrs.items() if k.startswith(R.RUN_PREFIX)), None)
    if record is None or record["final_epochs"] < 1 or record["trials_this_run"] < 1:
        raise SystemExit(f"budget: bonas run left no usable record: {record}")
    retrained = study.user_attrs[f"{R.RETRAIN_PREFIX}{record['best_trial']}"]
    recs = R.records(study.trials)
    enqueued = len(warm_start_params(config))  # a fresh study: the warm start's trials are numbers 0 .. enqueued-1
    return {
        "warm_start": [
            {"number": r.number, "state": r.state.name, "val_acc": r.val_acc, "epochs": r.epochs, "arch": r.arch_line}
            for r in recs
            if r.number < enqueued
        ],
        "share": share,
        "wall_s": round(wall, 1),
        "record": record,
        "final": retrained,
        "trials": len(recs),
        "trained_epochs_in_search": sum(r.epochs or 0 for r in recs),
        "states": R.state_counts(study.trials),
    }


def baseline(config_path: Path, name: str, seconds: float) -> dict:
    config = load_config(config_path)
    splits = final_splits(config)
    final = train_final(config, splits, BASELINES[name], BASELINE_TRAIN, config.seed, deadline=time.monotonic() + seconds)
    if final.result["epochs"] < 1:
        raise SystemExit(f"budget: baseline {name} trained no epoch in {seconds:.0f}s")
    return {"name": name, "seconds": round(seconds, 1), **final.result}


def concurrent_baseline(config_path: Path, name: str, start_at: float, seconds: float, out: Path) -> subprocess.Popen:
    """A baseline in its own process that waits until ``start_at`` (time.monotonic(), one clock per machine)
    and trains for ``seconds``: beside bonas' final training on the same GPU."""
    argv = [
        sys.executable,
        __file__,
        "--config",
        str(config_path),
        "--baseline",
        name,
        "--start-at",
        str(start_at),
        "--seconds",
        str(seconds),
        "--out",
        str(out),
    ]
    return subprocess.Popen(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist", help="studies/<dataset>.toml unless --config")
    ap.add_argument("--config")
    ap.add_argument("--budget", default="1h")
    ap.add_argument("--shares", default="", help="search shares to run (default: the config's [final] search_share)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="bonas run --workers (several per GPU pay on a large one)")
    ap.add_argument(
        "--concurrent-baselines",
        action="store_true",
        help="train the baselines at the same time as bonas' final training, sharing the device, for its planned "
        "time (on a GPU, where the budget leaves no time to run them after it)",
    )
    ap.add_argument("--baseline", help=argparse.SUPPRESS)  # internal: one concurrent baseline
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", help="results file (default bench/results/budget-<dataset>-<budget>-<device>[-shares].json)")
    args = ap.parse_args()
    config_path = Path(args.config) if args.config else ROOT / "studies" / f"{args.dataset}.toml"
    config = load_config(config_path)
    if args.baseline:  # a concurrent baseline's own process
        set_threads()
        quiet_lightning(False)
        time.sleep(max(0.0, args.start_at - time.monotonic()))
        Path(args.out).write_text(json.dumps({**baseline(config_path, args.baseline, args.seconds), "concurrent": True}))
        return
    budget_s = parse_duration(args.budget)
    shares = [float(s) for s in args.shares.split(",") if s] or [config.final.search_share]
    set_threads()
    quiet_lightning(False)
    import torch

    device = "gpu" if torch.cuda.is_available() else "cpu"
    runs, baselines = [], []
    with tempfile.TemporaryDirectory(prefix="bonas-budget-") as tmp:
        launched = []

        def launch(start: float, share: float) -> None:
            final = (1 - share) * budget_s
            seconds = final - max(3.0, 0.05 * final)  # what bonas run plans for its final training (bonas.commands.run)
            for i, name in enumerate(BASELINES):
                launched.append(
                    (
                        Path(tmp) / f"baseline{i}.json",
                        concurrent_baseline(
                            config_path, name, start + share * budget_s, seconds, Path(tmp) / f"baseline{i}.json"
                        ),
                    )
                )

        for share in shares:
            alongside = (
                [lambda start, share=share: launch(start, share)] if args.concurrent_baselines and not args.no_baselines else []
            )
            runs.append(bonas_run(config_path, args.budget, share, Path(tmp), args.workers, alongside))
            r = runs[-1]
            print(
                f"bonas run, share {share:g}: test {r['final']['test_acc']:.4f} ({r['record']['trials_this_run']} trials, "
                f"final {r['record']['final_epochs']} epochs in {r['record']['final_s']:.0f}s, {r['wall_s']:.0f}s wall)",
                flush=True,
            )
        for path, proc in launched:
            if proc.wait() != 0 or not path.exists():
                raise SystemExit(f"budget: a concurrent baseline failed ({proc.returncode})")
            baselines.append(json.loads(path.read_text()))
    if not args.no_baselines and not args.concurrent_baselines:
        final_s = runs[0]["record"]["final_s"]
        for name in BASELINES:
            baselines.append(baseline(config_path, name, final_s))
    for b in baselines:
        print(
            f"baseline {b['name']}: test {b['test_acc']:.4f} ({b['epochs']} epochs in {b['seconds']:.0f}s, "
            f"{b['parameters']:,} params)",
            flush=True,
        )
    name = (
        args.out
        or ROOT
        / "bench"
        / "results"
        / f"budget-{config.dataset}-{args.budget}-{device}{'-shares' if len(shares) > 1 else ''}.json"
    )
    if not args.no_baselines and len(baselines) != len(BASELINES):
        raise SystemExit(f"budget: {len(baselines)} of {len(BASELINES)} baselines trained")
    out = write(
        name,
        __file__,
        {
            "bench": "budget",
            "dataset": config.dataset,
            "config": os.path.relpath(config_path, ROOT),
            "budget": args.budget,
            "budget_s": budget_s,
            "device": device,
            "runs": runs,
            "baselines": baselines,
            "baseline_train": BASELINE_TRAIN.to_dict(),
        },
    )
    print(f"wrote {out}")
    print(
        "RESULT "
        + " ".join(
            [
                f"budget={args.budget}",
                f"device={device}",
                *(f"bonas_share{r['share']:g}={r['final']['test_acc']:.4f}" for r in runs),
                *(f"{b['name'].split(' (')[0].replace(' ', '_')}={b['test_acc']:.4f}" for b in baselines),
            ]
        )
    )


if __name__ == "__main__":
    main()
