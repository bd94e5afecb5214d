"""Repeated proposals, measured: what a trial budget buys when the sampler repeats itself, and whether
constant liar keeps parallel workers from training the same architecture twice.

A. The article's 27 networks (studies/seed.toml, on digits), TPE, one worker. A repeated proposal reuses the
   earlier result and costs nothing; the question is what ``n_trials = 27`` should count. One run gives
   both rules, since the sampler's proposals do not depend on the rule: at the 27th trial of any kind (the
   old rule: reused trials count) and at the 27th trained network (bonas' rule now; an exhausted space ends
   it). Reported per rule, medians over seeds: distinct networks trained, the best validation accuracy,
   epochs trained.
B. studies/digits.toml's conditional space (continuous knobs too), 4 worker processes (`bonas search
   --workers 4`), constant liar on and off: trials whose architecture (the ArchSpec, whatever the knobs)
   repeats an earlier trial's — exploration spent twice — and the best validation accuracy.

    .venv/bin/python bench/repeats.py                 # A: 5 seeds, B: 2 seeds per arm (~25 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from bench.presets import without_table  # noqa: E402
from bench.record import write  # noqa: E402
from bonas.core import records as R  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BONAS = str(Path(sys.executable).parent / "bonas")


def search(config_text: str, name: str, folder: Path, workers: int = 1) -> list[R.TrialRecord]:
    path = folder / f"{name}.toml"
    path.write_text(config_text)
    argv = [BONAS, "search", str(path)] + (["--workers", str(workers)] if workers > 1 else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"repeats: {name} failed: {proc.stderr[-1500:]}")
    return R.records(optuna.load_study(study_name=name, storage=f"sqlite:///{folder / (name + '.db')}").trials)


def with_seed(text: str, name: str, seed: int, extra: str = "") -> str:
    text = text.replace('name = "seed"', f'name = "{name}"').replace('name = "digits"', f'name = "{name}"')
    return text.replace("seed = 0", f"seed = {seed}", 1) + extra


def at(recs: list[R.TrialRecord]) -> dict:
    trained = [r for r in recs if r.trained]
    top = R.best(recs)
    return {
        "trials": len(recs),
        "networks_trained": len(trained),
        "best": top.values[0] if top else None,
        "epochs": sum(r.epochs or 0 for r in recs),
    }


def part_a(seeds: int, folder: Path) -> dict:
    text = (ROOT / "studies" / "seed.toml").read_text().replace('name = "random"', 'name = "tpe"')
    runs = []
    for seed in range(seeds):
        recs = search(with_seed(text, f"a{seed}", seed), f"a{seed}", folder)
        by_number = sorted(recs, key=lambda r: r.number)
        old = at(by_number[:27])  # the old rule stopped at the 27th trial, reused ones included
        new = at(by_number)
        if new["networks_trained"] < min(27, old["networks_trained"]):
            raise SystemExit(f"repeats: seed {seed} trained {new['networks_trained']} networks under the new rule")
        runs.append({"seed": seed, "old_rule": old, "new_rule": new})
        print(
            f"A seed {seed}: reused-count rule {old['networks_trained']} networks, best {old['best']:.4f}; "
            f"trained-count rule {new['networks_trained']} networks in {new['trials']} trials, best {new['best']:.4f}",
            flush=True,
        )
    summary = {
        rule: {k: statistics.median(r[rule][k] for r in runs) for k in ("networks_trained", "best", "epochs", "trials")}
        for rule in ("old_rule", "new_rule")
    }
    return {"runs": runs, "summary": summary}


def arch_repeats(recs: list[R.TrialRecord]) -> int:
    seen, repeats = set(), 0
    for r in sorted(recs, key=lambda r: r.number):
        key = json.dumps(r.trial.user_attrs.get(R.ARCH), sort_keys=True)
        repeats += key in seen
        seen.add(key)
    return repeats


def part_b(seeds: int, trials: int, folder: Path) -> dict:
    base = without_table((ROOT / "studies" / "digits.toml").read_text(), "budget")
    runs = []
    for liar in (True, False):
        for seed in range(seeds):
            name = f"b{'liar' if liar else 'noliar'}{seed}"
            text = with_seed(base, name, seed, f"\n[budget]\nn_trials = {trials}\n")
            if "constant_liar = true" not in text:
                raise SystemExit("repeats: studies/digits.toml no longer sets constant_liar = true; the arms would be the same")
            text = text.replace("constant_liar = true", f"constant_liar = {'true' if liar else 'false'}")
            start = time.perf_counter()
            recs = search(text, name, folder, workers=4)
            runs.append(
                {
                    "constant_liar": liar,
                    "seed": seed,
                    "arch_repeats": arch_repeats(recs),
                    **at(recs),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
            r = runs[-1]
            print(
                f"B liar={liar} seed {seed}: {r['arch_repeats']} architecture repeats in {r['trials']} trials, "
                f"best {r['best']:.4f}",
                flush=True,
            )
    summary = {
        str(liar): {k: statistics.median(r[k] for r in runs if r["constant_liar"] == liar) for k in ("arch_repeats", "best")}
        for liar in (True, False)
    }
    return {"runs": runs, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="A,B")
    ap.add_argument("--seeds-a", type=int, default=5)
    ap.add_argument("--seeds-b", type=int, default=2)
    ap.add_argument("--trials-b", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "repeats.json"))
    args = ap.parse_args()
    result = {}
    with tempfile.TemporaryDirectory(prefix="bonas-repeats-") as tmp:
        if "A" in args.parts:
            result["A"] = part_a(args.seeds_a, Path(tmp))
        if "B" in args.parts:
            result["B"] = part_b(args.seeds_b, args.trials_b, Path(tmp))
    out = write(args.out, __file__, {"bench": "repeats", "settings": vars(args), **result})
    print(f"wrote {out}")
    line = []
    if "A" in result:
        s = result["A"]["summary"]
        line += [
            f"a_old_networks={s['old_rule']['networks_trained']:g} a_old_best={s['old_rule']['best']:.4f}",
            f"a_new_networks={s['new_rule']['networks_trained']:g} a_new_best={s['new_rule']['best']:.4f}",
        ]
    if "B" in result:
        s = result["B"]["summary"]
        line += [
            f"b_liar_repeats={s['True']['arch_repeats']:g} b_noliar_repeats={s['False']['arch_repeats']:g}",
            f"b_liar_best={s['True']['best']:.4f} b_noliar_best={s['False']['best']:.4f}",
        ]
    print("RESULT " + " ".join(line))


if __name__ == "__main__":
    main()
