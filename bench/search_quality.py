"""Search quality, measured: TPE against the article's random search, pruners, TPE settings, sampling cost.

Resumable: every finished run is saved to bench/results/search_quality.json and skipped when the script
runs again; figures go to bench/results/*.png. Sizes (about 1.5 hours on 2 cores, all parts):

  data        digits: the bundled 8x8 set, val 20% (~290 images), 6 epochs per trial
              fmnist: Fashion-MNIST, 1000 train / 500 validation images (class-balanced), 3 epochs per trial
  spaces      seed: the article's 27 networks (studies/seed.toml); full: studies/digits.toml's space
              (widths capped at 64 for fmnist, as in studies/fashion-mnist.toml)
  A samplers  TPE (bonas defaults) vs random, 60 trials. On the seed space every network is trained once
              and the runs look results up (a tabular benchmark, like NAS-Bench-101; 20 seeds). On the
              full space every trial trains (5 seeds digits, 3 seeds fmnist), pruning off.
  B pruners   none / median / successive-halving / hyperband, TPE, 60 trials, digits, 5 seeds: total
              epochs trained and best validation accuracy.
  C TPE       multivariate+group vs independent, n_startup_trials 5/10/20 (digits, full space, 3 seeds);
              constant liar on/off with 2 worker processes (2 seeds): best and repeated proposals.
  D sampling  TPE's time per ask() with 100, 500 and 1000 finished trials (a light objective).

    .venv/bin/python bench/search_quality.py [--parts A,B,C,D] [--quick]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
N_TRIALS = 60

DATA = {
    "digits": {"dataset": "digits", "data": "val_fraction = 0.2\n", "epochs": 6},
    "fmnist": {"dataset": "fashion-mnist", "data": "val_fraction = 0.1\ntrain_subset = 1000\nval_subset = 500\n", "epochs": 3},
}


RESULTS_FILE = "search_quality.json"  # --results: a second file for a run beside another one


def load_results() -> dict:
    path = RESULTS / RESULTS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(results: dict) -> None:
    """The results so far, with the provenance of the run that wrote them (runs of several parts accumulate)."""
    from bench.record import provenance

    results = {**results, "provenance": provenance(__file__)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / (RESULTS_FILE + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    tmp.replace(RESULTS / RESULTS_FILE)


def study_text(
    name: str, data: str, space: str, sampler: str, pruner: str, seed: int, extra: str = "", epochs: int | None = None
) -> str:
    """A study config: the seed or digits preset's space and training, on the chosen data."""
    d = DATA[data]
    base = (ROOT / "studies" / ("seed.toml" if space == "seed" else "digits.toml")).read_text()
    lines = []
    skip = True  # the preset's top-level keys (name, dataset, ...) are set here
    for line in base.splitlines():  # keep [training], [space] (+ variants) of the preset; the rest is set here
        if line.startswith("["):
            skip = not (line.startswith("[training]") or line.startswith("[space]") or line.startswith("[[space.variants]]"))
        if not skip:
            lines.append(line)
    body = "\n".join(lines)
    body = re.sub(r"(?m)^max_epochs = .*$", f"max_epochs = {epochs or d['epochs']}", body)
    if space == "seed":  # the seed tables in bench/results were trained with these, before seed.toml took the article's
        body = re.sub(r"(?m)^batch_sizes = .*$", "batch_sizes = [64]", body)
        body = re.sub(r"(?m)^schedule = .*$", 'schedule = "cosine"', body)
    head = f'name = "{name}"\ndataset = "{d["dataset"]}"\nseed = {seed}\n\n[data]\n{d["data"]}\n'
    head += f"[sampler]\n{sampler}\n\n[pruner]\n{pruner}\n\n"
    return head + body + "\n" + extra + "\n[artifacts]\nkeep_top_k = 0\n[objective]\nlatency_time_s = 0\n"


TPE = 'name = "tpe"'
RANDOM = 'name = "random"'
NO_PRUNER = 'name = "none"'


def best_so_far(values: list[float]) -> list[float]:
    out, best = [], float("-inf")
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


# --- real training runs -----------------------------------------------------------------------------------


def real_run(folder: Path, name: str, text: str, n_trials: int = N_TRIALS, workers: int = 1) -> dict:
    """Run a study for n_trials with bonas itself; returns the value curve, epochs trained, wall time."""
    import optuna

    path = folder / f"{name}.toml"
    path.write_text(text)
    url = f"sqlite:///{folder / (name + '.db')}"
    start = time.perf_counter()
    cmd = [str(Path(sys.executable).parent / "bonas"), "search", str(path), "--n-trials", str(n_trials), "--storage", url]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {proc.stderr[-1500:]}")
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=url)
    trials = sorted(study.trials, key=lambda t: t.number)
    values = [t.values[0] if t.state.name == "COMPLETE" else None for t in trials]  # pruned: not a candidate
    keys = [json.dumps(t.params, sort_keys=True) for t in trials]
    return {
        "values": values,
        "best": max(v for v in values if v is not None),
        "epochs": sum(t.user_attrs.get("epochs", 0) for t in trials),
        "states": {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "repeats": len(keys) - len(set(keys)),
        "wall_s": wall,
    }


# --- the seed space as a table ----------------------------------------------------------------------------


def seed_table(folder: Path, data: str, results: dict) -> dict[str, float]:
    """Train each of the article's 27 networks once (bonas, seed 0); key: the params as JSON."""
    key = f"table/{data}"
    if key in results:
        return results[key]
    from bonas.config import load_config
    from bonas.nas.space import enumerate_params

    seed = load_config(ROOT / "studies" / "seed.toml")
    all_params = enumerate_params(seed.space, (1, 8, 8))
    warm = folder / "seed-all.toml"
    tables = ("[[trial]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in p.items()) + "\n" for p in all_params)
    warm.write_text("\n".join(tables))
    name = f"table-{data}"
    text = study_text(name, data, "seed", RANDOM, NO_PRUNER, 0, extra=f'[warm_start]\nfile = "{warm}"\n')
    run = real_run(folder, name, text, n_trials=len(all_params))
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / (name + '.db')}")
    table = {json.dumps(t.params, sort_keys=True): t.values[0] for t in study.trials if t.state.name == "COMPLETE"}
    assert len(table) == 27, len(table)
    results[key] = table
    results[f"table_wall/{data}"] = run["wall_s"]
    save_results(results)
    return table


def tabular_run(table: dict[str, float], sampler_text: str, seed: int, n_trials: int = N_TRIALS) -> list[float]:
    """Optuna's sampler (as bonas makes it) over the seed space, values looked up in the table."""
    import optuna

    from bonas.config import load_config, parse_config
    from bonas.nas.space import suggest_arch
    from bonas.study.samplers import make_sampler

    seed_cfg = load_config(ROOT / "studies" / "seed.toml")
    cfg = parse_config(f'name = "t"\nseed = {seed}\n[sampler]\n{sampler_text}\n')
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg, seed))
    values = []
    for _ in range(n_trials):
        t = study.ask()
        suggest_arch(t, seed_cfg.space, (1, 8, 8))
        v = table[json.dumps(t.params, sort_keys=True)]
        study.tell(t, v)
        values.append(v)
    return values


# --- analysis ---------------------------------------------------------------------------------------------


def median_curve(curves: list[list[float]]) -> list[float]:
    return [statistics.median(c[i] for c in curves) for i in range(min(len(c) for c in curves))]


def trials_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), None)


def compare_samplers(tpe_curves: list[list[float]], random_curves: list[list[float]]) -> dict:
    t, r = median_curve(tpe_curves), median_curve(random_curves)
    target = r[-1]
    needed = trials_to_reach(t, target)
    pairs = zip(tpe_curves, random_curves, strict=False)
    per_seed = [trials_to_reach(best_so_far_clean(c), best_so_far_clean(rc)[-1]) for c, rc in pairs]
    return {
        "tpe_median_best": t[-1],
        "random_median_best": target,
        "tpe_trials_to_random_best": needed,
        "ratio": (needed / len(r)) if needed else None,
        "per_seed_trials": per_seed,
        "tpe_at_20": t[19] if len(t) >= 20 else None,
        "random_at_20": r[19] if len(r) >= 20 else None,
    }


def best_so_far_clean(values: list[float | None]) -> list[float]:
    return best_so_far([v if v is not None else float("-inf") for v in values])


def plot_curves(path: Path, title: str, series: dict[str, list[list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, curves in series.items():
        m = median_curve(curves)
        lo = [sorted(c[i] for c in curves)[len(curves) // 4] for i in range(len(m))]
        hi = [sorted(c[i] for c in curves)[(3 * len(curves)) // 4] for i in range(len(m))]
        xs = list(range(1, len(m) + 1))
        ax.plot(xs, m, label=f"{label} (median of {len(curves)})")
        ax.fill_between(xs, lo, hi, alpha=0.2)
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- parts ------------------------------------------------------------------------------------------------


def part_a(folder: Path, results: dict, quick: bool) -> dict:
    out = {}
    for data in ("digits", "fmnist"):
        table = seed_table(folder, data, results)
        seeds = range(5 if quick else 20)
        tpe = [best_so_far(tabular_run(table, TPE, s)) for s in seeds]
        rnd = [best_so_far(tabular_run(table, RANDOM, s)) for s in seeds]
        out[f"seed/{data}"] = compare_samplers(tpe, rnd) | {"best_possible": max(table.values()), "n_seeds": len(seeds)}
        plot_curves(RESULTS / f"sampler_seed_{data}.png", f"article's 27 networks, {data}", {"TPE": tpe, "random": rnd})
    for data, n_seeds in (("digits", 5), ("fmnist", 3)):
        curves = {}
        for sampler, text in (("tpe", TPE), ("random", RANDOM)):
            curves[sampler] = []
            for s in range(2 if quick else n_seeds):
                key = f"A/full/{data}/{sampler}/{s}"
                if key not in results:
                    name = f"a-{data}-{sampler}-{s}"
                    results[key] = real_run(folder, name, study_text(name, data, "full", text, NO_PRUNER, s))
                    save_results(results)
                    print(f"  {key}: best {results[key]['best']:.4f} in {results[key]['wall_s']:.0f}s", flush=True)
                curves[sampler].append(best_so_far_clean(results[key]["values"]))
        out[f"full/{data}"] = compare_samplers(curves["tpe"], curves["random"]) | {"n_seeds": len(curves["tpe"])}
        plot_curves(
            RESULTS / f"sampler_full_{data}.png", f"full bonas space, {data}", {"TPE": curves["tpe"], "random": curves["random"]}
        )
    return out


PRUNERS = {
    "none": NO_PRUNER,
    "median": 'name = "median"\nn_startup_trials = 5\nn_warmup_steps = 2',
    "successive-halving": 'name = "successive-halving"\nmin_resource = 1\nreduction_factor = 3',
    "hyperband": 'name = "hyperband"\nmin_resource = 1\nreduction_factor = 3',
}


def part_b(
    folder: Path, results: dict, quick: bool, epochs: int = 6, pruners: tuple[str, ...] = tuple(PRUNERS), seeds: int = 5
) -> dict:
    """Pruners on digits; epochs=6 is the preset (part B), longer trials are part L."""
    out = {}
    part = "B" if epochs == 6 else f"L{epochs}"
    for pruner in pruners:
        text = PRUNERS[pruner]
        runs = []
        for s in range(2 if quick else seeds):
            key = f"{part}/digits/{pruner}/{s}"
            if key not in results:
                name = f"{part.lower()}-{pruner}-{s}"
                results[key] = real_run(folder, name, study_text(name, "digits", "full", TPE, text, s, epochs=epochs))
                save_results(results)
                print(f"  {key}: best {results[key]['best']:.4f}, {results[key]['epochs']} epochs", flush=True)
            runs.append(results[key])
        out[pruner] = {
            "median_epochs": statistics.median(r["epochs"] for r in runs),
            "median_best": statistics.median(r["best"] for r in runs),
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        }
    base = out["none"]
    for p in out.values():
        p["epoch_saving"] = base["median_epochs"] / p["median_epochs"]
        p["best_delta_points"] = 100 * (p["median_best"] - base["median_best"])
    return out


TPE_VARIANTS = {  # label: (file-name slug, [sampler] body); "A": part A's TPE runs are this variant
    "mv+group, startup 10 (default)": ("default", "A"),
    "independent, startup 10": ("indep10", 'name = "tpe"\nmultivariate = false\ngroup = false\nn_startup_trials = 10'),
    "mv+group, startup 5": ("group5", 'name = "tpe"\nn_startup_trials = 5'),
    "mv+group, startup 20": ("group20", 'name = "tpe"\nn_startup_trials = 20'),
}


def part_c(folder: Path, results: dict, quick: bool) -> dict:
    out = {}
    for label, (slug, text) in TPE_VARIANTS.items():
        runs = []
        for s in range(2 if quick else 3):
            key = f"A/full/digits/tpe/{s}" if text == "A" else f"C/{label}/{s}"
            if key not in results:
                if text == "A":
                    name = f"a-digits-tpe-{s}"
                    results[key] = real_run(folder, name, study_text(name, "digits", "full", TPE, NO_PRUNER, s))
                else:
                    name = f"c-{slug}-{s}"
                    results[key] = real_run(folder, name, study_text(name, "digits", "full", text, NO_PRUNER, s))
                save_results(results)
                print(f"  {key}: best {results[key]['best']:.4f}", flush=True)
            runs.append(results[key])
        curves = [best_so_far_clean(r["values"]) for r in runs]
        m = median_curve(curves)
        out[label] = {"median_best_60": m[-1], "median_best_20": m[19], "median_best_40": m[39]}
    for liar in (True, False):
        runs = []
        for s in range(2):
            key = f"C/liar={liar}/{s}"
            if key not in results:
                name = f"c-liar{int(liar)}-{s}"
                text = f'name = "tpe"\nconstant_liar = {str(liar).lower()}'
                results[key] = real_run(folder, name, study_text(name, "digits", "full", text, NO_PRUNER, s), workers=2)
                save_results(results)
                print(f"  {key}: best {results[key]['best']:.4f}, repeats {results[key]['repeats']}", flush=True)
            runs.append(results[key])
        curves = [best_so_far_clean(r["values"]) for r in runs]
        m = median_curve(curves)
        out[f"2 workers, constant_liar={liar}"] = {
            "median_best_60": m[-1],
            "median_best_20": m[19],
            "median_best_40": m[39],
            "repeats": [r["repeats"] for r in runs],
            "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        }
    return out


def part_d(results: dict) -> dict:
    """Seconds per ask() (with the full space's suggestions) as the study grows; InMemory and SQLite."""
    import optuna

    from bonas.config import load_config
    from bonas.nas.space import suggest_arch, suggest_training
    from bonas.study.samplers import make_sampler
    from bonas.study.storage import open_storage

    cfg = load_config(ROOT / "studies" / "digits.toml")
    out = {}
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for storage_kind in ("inmemory", "sqlite"):
        folder = Path(tempfile.mkdtemp())
        storage = None if storage_kind == "inmemory" else open_storage(f"sqlite:///{folder / 'd.db'}")
        study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg), storage=storage)
        timings = {}
        import random

        rng = random.Random(0)
        for n in range(1, 1001):
            t0 = time.perf_counter()
            t = study.ask()
            suggest_arch(t, cfg.space, (1, 8, 8))
            suggest_training(t, cfg.training, cfg.data)
            dt = time.perf_counter() - t0
            study.tell(t, rng.random())
            if n in (100, 500, 1000) or n in range(96, 101) or n in range(496, 501) or n in range(996, 1001):
                timings.setdefault(100 if n <= 100 else 500 if n <= 500 else 1000, []).append(dt)
        out[storage_kind] = {str(k): statistics.median(v) for k, v in timings.items()}
    return out


def plot_pruners(path: Path, results: dict, part: str) -> None:
    """Total epochs against best validation accuracy, one point per seed and pruner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for pruner in PRUNERS:
        runs = [v for k, v in sorted(results.items()) if k.startswith(f"{part}/digits/{pruner}/")]
        if runs:
            ax.scatter([r["epochs"] for r in runs], [r["best"] for r in runs], label=pruner, alpha=0.7)
    ax.set_xlabel("epochs trained in the study (60 trials)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title(f"pruners, digits ({part})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict) -> str:
    """The README's Results tables, from the summary."""
    out = []
    if "A" in summary:
        out += [
            "| space | data | seeds | TPE best @60 | random best @60 | TPE trials to random's 60-trial best "
            "| ratio (goal <= 0.33) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for k, v in summary["A"].items():
            space, data = k.split("/")
            ratio = "never" if v["ratio"] is None else f"{v['ratio']:.2f}"
            out.append(
                f"| {space} | {data} | {v['n_seeds']} | {v['tpe_median_best']:.4f} | {v['random_median_best']:.4f} | "
                f"{v['tpe_trials_to_random_best'] or 'never'} | {ratio} |"
            )
        out.append("")
    for part in ("B", "L"):
        if part in summary:
            out += [
                f"| pruner ({part}) | epochs (median) | fewer epochs | best (median) | best vs none | wall s (median) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for k, v in summary[part].items():
                out.append(
                    f"| {k} | {v['median_epochs']:.0f} | {v['epoch_saving']:.2f}x | {v['median_best']:.4f} | "
                    f"{v['best_delta_points']:+.2f} pt | {v['median_wall_s']:.0f} |"
                )
            out.append("")
    if "C" in summary:
        out += ["| TPE setting (digits, full space) | best @20 | best @40 | best @60 |", "|---|---:|---:|---:|"]
        for k, v in summary["C"].items():
            cells = [f"{v[c]:.4f}" if c in v else "" for c in ("median_best_20", "median_best_40", "median_best_60")]
            wall = f" (repeated proposals {v['repeats']})" if "repeats" in v else ""
            out.append(f"| {k}{wall} | " + " | ".join(cells) + " |")
        out.append("")
    if "D" in summary:
        out += ["| finished trials in the study | ask() + suggestions, in memory | SQLite |", "|---:|---:|---:|"]
        for n in ("100", "500", "1000"):
            out.append(f"| {n} | {1000 * summary['D']['inmemory'][n]:.0f} ms | {1000 * summary['D']['sqlite'][n]:.0f} ms |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    global RESULTS_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="A,B,C,D")
    ap.add_argument("--quick", action="store_true", help="2 seeds each: a smoke run of the whole script")
    ap.add_argument("--markdown", action="store_true", help="print the README's tables from the saved results and stop")
    ap.add_argument("--results", default=RESULTS_FILE, help="results file in bench/results (for a run beside another)")
    args = ap.parse_args()
    RESULTS_FILE = args.results
    folder = Path(tempfile.mkdtemp(prefix="bonas-quality-"))
    results = load_results()
    summary = results.setdefault("summary", {})
    if args.markdown:
        print(markdown(summary))
        return
    parts = args.parts.split(",")
    if "A" in parts:
        summary["A"] = part_a(folder, results, args.quick)
        save_results(results)
    if "B" in parts:
        summary["B"] = part_b(folder, results, args.quick)
        plot_pruners(RESULTS / "pruners.png", results, "B")
        save_results(results)
    if "L" in parts:  # longer trials (18 epochs): where pruning has room to save
        summary["L"] = part_b(folder, results, args.quick, epochs=18, pruners=("none", "successive-halving", "median"), seeds=2)
        plot_pruners(RESULTS / "pruners_18_epochs.png", results, "L18")
        save_results(results)
    if "C" in parts:
        summary["C"] = part_c(folder, results, args.quick)
        save_results(results)
    if "D" in parts:
        summary["D"] = part_d(results)
        save_results(results)
    print(json.dumps(summary, indent=1))
    bits = []
    for k, v in summary.get("A", {}).items():
        bits.append(f"{k.replace('/', '_')}_ratio={v['ratio'] if v['ratio'] is None else round(v['ratio'], 3)}")
    for part in ("B", "L"):
        for k, v in summary.get(part, {}).items():
            bits.append(f"{part}_{k}_saving={v['epoch_saving']:.2f}x {part}_{k}_delta={v['best_delta_points']:+.2f}pt")
    for k, v in summary.get("C", {}).items():
        slug = TPE_VARIANTS[k][0] if k in TPE_VARIANTS else "liar_" + ("on" if k.endswith("True") else "off")
        bits.append(f"C_{slug}_best20={v['median_best_20']:.4f}")
    for k, v in summary.get("D", {}).get("inmemory", {}).items():
        bits.append(f"D_ask_ms_at_{k}={1000 * v:.0f}")
    print("RESULT " + " ".join(bits))


if __name__ == "__main__":
    main()
