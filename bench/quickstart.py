"""The README's quick start, timed: `bonas search studies/digits.toml` as `make search` runs it, on a fresh database.

Each repeat runs the default study from a new process into a scratch SQLite file (the preset's budget, its
seed), and records the wall time from the command's start to its exit (imports and data loading included;
creating the virtual environment is not), the trials by state, and the best validation accuracy read back
from the study database. The bench fails when a run does not finish the preset's budget.

    .venv/bin/python bench/quickstart.py            # 3 repeats, ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.record import write  # noqa: E402
from bonas.config import load_config  # noqa: E402
from bonas.core import records as R  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "studies" / "digits.toml"


def run_once(bonas: str, folder: Path, n_trials: int) -> dict:
    url = f"sqlite:///{folder / 'digits.db'}"
    start = time.perf_counter()
    proc = subprocess.run([bonas, "search", str(CONFIG), "--storage", url], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"quickstart: bonas search exited {proc.returncode}: {proc.stderr[-500:]}")
    study = optuna.load_study(study_name="digits", storage=url)
    recs = R.records(study.trials)
    trained = [r for r in recs if r.trained and r.state.name in ("COMPLETE", "PRUNED")]
    if len(trained) != n_trials:
        raise SystemExit(f"quickstart: {len(trained)} trained trials, not the preset's {n_trials}")
    best = R.best(recs)
    return {
        "wall_s": round(wall, 2),
        "states": dict(Counter(r.state.name for r in recs)),
        "best_val_acc": best.values[0] if best else None,
        "best_arch": best.arch_line if best else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quickstart.json"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_trials = load_config(CONFIG).budget.n_trials
    bonas = str(Path(sys.executable).parent / "bonas")
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bonas-quickstart-") as tmp:
            runs.append(run_once(bonas, Path(tmp), n_trials))
        r = runs[-1]
        print(f"run {i}: {r['wall_s']:.1f}s, {r['states']}, best {r['best_val_acc']:.4f} ({r['best_arch']})", flush=True)
    wall = statistics.median(r["wall_s"] for r in runs)
    best = statistics.median(r["best_val_acc"] for r in runs)
    payload = {"bench": "quickstart", "n_trials": n_trials, "median_wall_s": wall, "median_best": best, "runs": runs}
    out = write(args.out, __file__, payload)
    print(f"wrote {out}")
    print(f"RESULT wall_s={wall:.1f} best={best:.4f} n_trials={n_trials} repeats={args.repeats}")


if __name__ == "__main__":
    main()
