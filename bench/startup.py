"""How fast the read side answers: `bonas --help`, `bonas trials` and `bonas best` on a real study, and
whether they load the training stack (torch, Lightning) at all.

Builds a small digits study first (a few trials), then times each command as a user runs it (a new
process each time, median of --repeats), records which heavy packages each one imported, and the largest
cumulative imports from ``python -X importtime``.

    .venv/bin/python bench/startup.py          # ~1 minute
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "lightning", "optuna_dashboard", "matplotlib")
PROBE = (
    "import sys; from bonas.cli import main; code = main(sys.argv[1:]); "
    "print('MODULES', *sorted({m.split('.')[0] for m in sys.modules}))"
)


def timed(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"startup: {' '.join(argv)} failed: {proc.stderr[-500:]}")
    return statistics.median(times)


def heavy_imports(args: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True).stdout
    modules = next((line.split()[1:] for line in out.splitlines() if line.startswith("MODULES")), [])
    return [m for m in HEAVY if m in modules]


def top_imports(args: list[str], n: int = 6) -> list[tuple[str, float]]:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", PROBE, *args], capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m[2]) <= 2:  # top-level imports only
            rows.append((m[3], int(m[1]) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "startup.json"))
    args = ap.parse_args()
    bonas = str(Path(sys.executable).parent / "bonas")
    with tempfile.TemporaryDirectory(prefix="bonas-startup-") as tmp:
        config = Path(tmp) / "startup.toml"
        config.write_text(
            'name = "startup"\ndataset = "digits"\n[budget]\nn_trials = 6\n[training]\nmax_epochs = 1\n'
            "[data]\ntrain_subset = 300\nval_subset = 100\n"
        )
        subprocess.run([bonas, "search", str(config)], capture_output=True, check=True, env={**os.environ, "BONAS_DATA_DIR": tmp})
        commands = {"--help": ["--help"], "trials": ["trials", str(config)], "best": ["best", str(config)]}
        results = {}
        for name, argv in commands.items():
            results[name] = {
                "seconds": timed([bonas, *argv], args.repeats),
                "heavy_imports": heavy_imports(argv),
                "top_imports_s": top_imports(argv),
            }
            r = results[name]
            print(
                f"bonas {name:<7} {r['seconds']:.2f} s (median of {args.repeats}); "
                f"loads {', '.join(r['heavy_imports']) or 'none of'} "
                f"{'' if r['heavy_imports'] else ', '.join(HEAVY)}; slowest imports: "
                + ", ".join(f"{m} {s:.2f}s" for m, s in r["top_imports_s"][:3]),
                flush=True,
            )
    out = write(args.out, __file__, {"bench": "startup", "repeats": args.repeats, "results": results})
    print(f"wrote {out}")
    print(
        "RESULT "
        + " ".join(f"{k.strip('-')}_s={v['seconds']:.2f}" for k, v in results.items())
        + " "
        + " ".join(f"{k.strip('-')}_heavy={'+'.join(v['heavy_imports']) or 'none'}" for k, v in results.items())
    )


if __name__ == "__main__":
    main()
