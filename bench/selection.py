"""Which rule picks the network that wins the final training? Measured as regret against the final training itself.

A search of the Fashion-MNIST preset (priors on, as shipped) runs for ``--search`` seconds; its best ``--k`` distinct
trials are the finalists. Each finalist is then trained as ``bonas run``'s final training trains (the whole training
split, the clock-following schedule) for ``--final`` seconds and tested once: the ground truth. Each rule picks one
finalist from what it may know, and its regret is the best finalist's test accuracy less its pick's, in points:

- ``search``: the best validation accuracy at the search's fidelity (4 epochs on 10 000 images): bonas before the race;
- ``equal time``: the validation accuracy each trial had reached after the same number of seconds (the time the
  slowest finalist took for its last epoch), read off its learning curve (a fast network gets more epochs);
- ``curve fit``: each learning curve fitted with ``a - b * epochs ** -c`` and read at the epochs the final training
  will give it (its speed in the search, scaled to the whole training split);
- ``race``: bonas.nas.race, rounds of equal time on the whole training split, successive halving (its time counted
  apart; its survivor's ground truth is the finalist's own, trained from scratch like the others).

Then the fidelity question (EcoNAS, Zhou et al. 2020): at equal iterations, do more images and fewer epochs keep the
finalists' ranking closer to the ground truth than fewer images and more epochs? Each finalist trains once at each
setting; Spearman's rho with the ground truth.

    .venv/bin/python bench/selection.py                   # ~70 minutes on 2 cores, nothing else running
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402
from bonas.config import load_config  # noqa: E402
from bonas.core import records as R  # noqa: E402
from bonas.nas.race import finalists, race  # noqa: E402
from bonas.nas.space import specs_from_params  # noqa: E402
from bonas.nas.worker import Worker, prepare_worker  # noqa: E402
from bonas.training.final import final_splits, train_final  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIDELITIES = {"10 000 images x 4 epochs": (10_000, 4), "40 000 images x 1 epoch": (40_000, 1)}


def search(config_path: Path, folder: Path, seconds: float, seed: int) -> Worker:
    text = config_path.read_text().replace('name = "fashion-mnist"', 'name = "selection"').replace("seed = 0", f"seed = {seed}")
    copy = folder / "selection.toml"
    copy.write_text(text)
    config = load_config(copy)
    config.budget.timeout, config.budget.n_trials = seconds, 10_000
    url = f"sqlite:///{folder / 'selection.db'}"
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    worker.run(config.budget.n_trials, config.budget.timeout)
    return worker


def equal_time(recs: list[R.TrialRecord]) -> dict[int, float]:
    """Validation accuracy after the same seconds: as far as the quickest whole trial took, each finalist's accuracy
    at the last epoch it had finished by then (at least its first)."""
    per_epoch = {r.number: r.seconds / max(1, r.epochs) for r in recs}
    horizon = min(per_epoch[r.number] * len(r.trial.intermediate_values) for r in recs)
    out = {}
    for r in recs:
        reached = max(1, min(len(r.trial.intermediate_values), int(horizon / per_epoch[r.number])))
        out[r.number] = r.trial.intermediate_values[reached - 1]
    return out


def curve_fit(recs: list[R.TrialRecord], final_images: int, final_seconds: float, search_images: int) -> dict[int, float]:
    """Each curve's ``a - b * e ** -c`` read at the epochs the final training gives the network at its search speed."""
    from scipy.optimize import curve_fit as fit

    out = {}
    for r in recs:
        epochs = np.arange(1, len(r.trial.intermediate_values) + 1, dtype=float)
        acc = np.array([r.trial.intermediate_values[e] for e in range(len(epochs))])
        speed = search_images * len(epochs) / r.seconds  # images per second in the search
        target = final_seconds * speed / final_images
        try:
            (a, b, c), _ = fit(lambda e, a, b, c: a - b * e ** (-c), epochs, acc, p0=(acc[-1] + 0.02, 0.2, 0.5),
                               bounds=([0, 0, 0.01], [1, 2, 5]), maxfev=20000)  # fmt: skip
            out[r.number] = float(a - b * target ** (-c))
        except RuntimeError:
            out[r.number] = float(acc[-1])
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def fidelity(config, finalists_: list[R.TrialRecord], images: int, epochs: int) -> dict[int, float]:
    """Validation accuracy of each finalist after ``epochs`` on ``images`` class-balanced training images."""
    from bonas.data.splits import load_splits
    from bonas.nas.objective import Objective

    data = dataclasses.replace(config.data, train_subset=images, val_subset=0)
    cfg = dataclasses.replace(config, data=data, training=dataclasses.replace(config.training, max_epochs=epochs))
    objective = Objective(cfg, load_splits(cfg.dataset, data, cfg.seed))
    import optuna

    out = {}
    for r in finalists_:
        prepared = objective.prepare(optuna.trial.FixedTrial(r.trial.params), seed=r.seed or 0)
        out[r.number] = objective.fit(None, prepared).history[-1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "studies" / "fashion-mnist.toml"))
    ap.add_argument("--search", type=float, default=600, help="seconds of search")
    ap.add_argument("--k", type=int, default=8, help="finalists")
    ap.add_argument("--final", type=float, default=300, help="seconds of final training per finalist (the ground truth)")
    ap.add_argument("--race", type=float, default=240, help="seconds of race")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "selection.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bonas-selection-") as tmp:
        start = time.monotonic()
        worker = search(Path(args.config), Path(tmp), args.search, args.seed)
        config = worker.config
        recs = R.records(worker.study.get_trials(deepcopy=False))
        whole = [r for r in recs if len(r.trial.intermediate_values) == config.training.max_epochs]  # a curve to read
        chosen = finalists(whole, args.k)
        print(
            f"search: {len(recs)} trials in {time.monotonic() - start:.0f}s; finalists {[r.number for r in chosen]}", flush=True
        )
        splits = final_splits(config)
        truth, final_epochs = {}, {}
        for r in chosen:
            arch, train = specs_from_params(r.trial.params, config.space, config.training, config.data, splits.input_shape)
            final = train_final(config, splits, arch, train, r.seed or 0, deadline=time.monotonic() + args.final)
            if final.result["epochs"] < 1:
                raise SystemExit(f"selection: finalist {r.number} trained no epoch in {args.final:.0f}s")
            truth[r.number], final_epochs[r.number] = final.result["test_acc"], final.result["epochs"]
            print(
                f"ground truth #{r.number} {r.arch_line}: test {truth[r.number]:.4f} after {final_epochs[r.number]} epochs",
                flush=True,
            )
        race_start = time.monotonic()
        winner, log = race(config, splits, chosen, race_start + args.race, race_start + args.race + args.final)
        scores = {
            "search": {r.number: r.values[0] for r in chosen},
            "equal time": equal_time(chosen),
            "curve fit": curve_fit(chosen, len(splits.train) + len(splits.val), args.final, config.data.train_subset),
        }
        picks = {rule: max(s, key=lambda n: (s[n], -n)) for rule, s in scores.items()}
        picks["race"] = winner.record.number
        best = max(truth.values())
        regret = {rule: round(100 * (best - truth[n]), 2) for rule, n in picks.items()}
        order = [truth[r.number] for r in chosen]
        rho = {rule: spearman([s[r.number] for r in chosen], order) for rule, s in scores.items()}
        fids = {name: fidelity(config, chosen, *setting) for name, setting in FIDELITIES.items()}
        fid_rho = {name: spearman([f[r.number] for r in chosen], order) for name, f in fids.items()}
        print(
            f"picks {picks}\nregret (points) {regret}\nrank correlation with the ground truth {rho}\nfidelities {fid_rho}",
            flush=True,
        )
    out = write(args.out, __file__, {
        "bench": "selection", "settings": vars(args),
        "finalists": [{"trial": r.number, "arch": r.arch_line, "search_val_acc": r.values[0], "test_acc": truth[r.number],
                       "final_epochs": final_epochs[r.number], "search_seconds": r.seconds,
                       **{f"score {rule}": s[r.number] for rule, s in scores.items()},
                       **{f"val {name}": f[r.number] for name, f in fids.items()}} for r in chosen],
        "picks": picks, "regret_points": regret, "rank_correlation": rho, "race": log, "fidelity_rank_correlation": fid_rho,
    })  # fmt: skip
    print(f"wrote {out}")
    print("RESULT " + " ".join(f"regret_{k.replace(' ', '_')}={v}" for k, v in regret.items()))


if __name__ == "__main__":
    main()
