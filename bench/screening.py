"""Zero-cost screening at equal compute: the same search for the same wall time, with and without [screen].

Both arms run bonas' worker loop on studies/fashion-mnist.toml's space and trial settings (TPE, the same
seed per repeat) for ``--minutes`` of search each; the screened arm scores every new network at
initialisation (``--proxy``) and stops it before training when it scores below ``--percentile`` of the
earlier trials. Reported per arm, median over seeds: the best validation accuracy reached, trials and
epochs trained. Screening becomes a default only if it wins here; a tie or a loss is reported as such.

    .venv/bin/python bench/screening.py                       # grad_norm: 2 arms x 3 seeds x 6 minutes (~40 min)
    .venv/bin/python bench/screening.py --minutes 5           # what results/screening.json ran (~32 min)

grad_norm is the default proxy: it ranked 100 networks of this space best (bench/results/zero_cost.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402
from bonas.config import WarmStartConfig, load_config  # noqa: E402
from bonas.core import records as R  # noqa: E402
from bonas.nas.worker import Worker, prepare_worker  # noqa: E402
from bonas.training.callbacks import TrialDeadline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_arm(proxy: str, seed: int, args: argparse.Namespace, folder: Path) -> dict:
    config = load_config(ROOT / args.config)
    name = f"screen-{proxy}-{seed}"
    config.name, config.seed, config.path = name, seed, str(folder / f"{name}.toml")
    config.screen = dataclasses.replace(config.screen, proxy=proxy, percentile=args.percentile)
    config.artifacts = dataclasses.replace(config.artifacts, keep_top_k=0)
    config.warm_start = WarmStartConfig()  # as measured: every trial sampled, no hand design as trial 0 of both arms
    url = f"sqlite:///{folder / (name + '.db')}"
    worker = Worker(config, url, prepare_worker(config, url, verbose=False), seed=seed)
    start = time.perf_counter()
    worker.run(10**6, 0, deadline=TrialDeadline(time.monotonic() + 60 * args.minutes, "the arm's time"))
    wall = time.perf_counter() - start
    recs = R.records(worker.study.trials)
    screened = sum(bool(r.screen.get("rejected")) for r in recs)
    if proxy != "none" and not any(r.screen for r in recs):
        raise SystemExit(f"screening: arm {proxy} seed {seed} scored no network")
    top = R.best(recs)
    return {
        "proxy": proxy,
        "seed": seed,
        "best": top.values[0] if top else 0.0,
        "best_arch": top.arch_line if top else None,
        "trials": len(recs),
        "trained": sum(r.trained and (r.epochs or 0) > 0 for r in recs),
        "screened_out": screened,
        "epochs": sum(r.epochs or 0 for r in recs),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="studies/fashion-mnist.toml")
    ap.add_argument("--proxy", default="grad_norm", help="the proxy of the screened arm (bonas.nas.proxies)")
    ap.add_argument("--percentile", type=float, default=25.0)
    ap.add_argument("--minutes", type=float, default=6.0, help="search time per run (default 6)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "screening.json"))
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bonas-screening-") as tmp:
        for seed in range(args.seeds):
            for proxy in ("none", args.proxy):
                runs.append(run_arm(proxy, seed, args, Path(tmp)))
                r = runs[-1]
                print(
                    f"seed {seed} screen={proxy:<8} best {r['best']:.4f}  {r['trials']} trials "
                    f"({r['screened_out']} screened out), "
                    f"{r['epochs']} epochs in {r['wall_s']:.0f}s",
                    flush=True,
                )
    summary = {}
    for proxy in ("none", args.proxy):
        mine = [r for r in runs if r["proxy"] == proxy]
        summary[proxy] = {
            "best": statistics.median(r["best"] for r in mine),
            "trials": statistics.median(r["trials"] for r in mine),
            "epochs": statistics.median(r["epochs"] for r in mine),
        }
    wins = sum(a["best"] > b["best"] for a, b in zip(runs[1::2], runs[0::2], strict=True))
    ties = sum(a["best"] == b["best"] for a, b in zip(runs[1::2], runs[0::2], strict=True))
    out = write(
        args.out,
        __file__,
        {"bench": "screening", "settings": vars(args), "summary": summary, "wins": wins, "ties": ties, "runs": runs},
    )
    print(f"wrote {out}")
    print(
        f"RESULT best_none={summary['none']['best']:.4f} best_{args.proxy}={summary[args.proxy]['best']:.4f} "
        f"screened_wins={wins}/{args.seeds} ties={ties} minutes={args.minutes:g}"
    )


if __name__ == "__main__":
    main()
