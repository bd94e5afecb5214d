"""The final training's recipe at its real length: which ingredients pay off over 30+ epochs on all 60 000 images.

The final training of a 20-minute to 1-hour CPU budget runs 30-75 epochs of the whole Fashion-MNIST training split;
the recipe bench stopped at 12, where crop + flip lost. Here each arm changes one ingredient of the final training
(``[final] augment``, ``[data] cutout``, ``[training] label_smoothing`` / ``ema_decay``) and trains the same
network through bonas' own final training (bonas.training.final.train_final: train + validation, the cosine
schedule over the epochs), for ``--epochs`` epochs, tested once on the 10 000 test images. Arms run one after the
other, the same seed; the network is the benchmark table's 2 conv + pooling + BN with its hand knobs (the design every
study now starts from).

    .venv/bin/python bench/final_recipe.py --epochs 30          # ~90 minutes on 2 cores, nothing else running
    .venv/bin/python bench/final_recipe.py --arms "all of them" --keep   # one more arm beside the file's others

Each row records the commit and the CPU model it was measured on (an arm trains a fixed number of epochs, so only its
time depends on the machine). ``--keep`` keeps the rows of the results file already there for
the arms not run now — only when they trained the same network and knobs, epochs and seed, and the code their training ran
through (every bonas module this process has loaded, and the config) is unchanged since their commit (``git diff``);
otherwise it stops, before training and again before each write.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.budget import BASELINE_TRAIN, BASELINES  # noqa: E402
from bench.record import git_commit, machine, write  # noqa: E402
from bonas.config import load_config  # noqa: E402
from bonas.training.final import final_splits, train_final  # noqa: E402
from bonas.training.module import quiet_lightning, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# arm -> (the [final] / [data] / [training] settings it changes)
ARMS: dict[str, dict[str, dict]] = {
    "base (no augmentation)": {},
    "crop + flip": {"final": {"augment": True}},
    "crop + flip + cutout 8 px": {"final": {"augment": True}, "data": {"cutout": 8}},
    "label smoothing 0.1": {"training": {"label_smoothing": 0.1}},
    "EMA of the weights 0.999": {"training": {"ema_decay": 0.999}},
    "all of them": {"final": {"augment": True}, "data": {"cutout": 8}, "training": {"label_smoothing": 0.1, "ema_decay": 0.999}},
}


def configured(base, changes: dict[str, dict]):
    sections = {name: dataclasses.replace(getattr(base, name), **values) for name, values in changes.items()}
    return dataclasses.replace(base, **sections)


def loaded_code() -> list[str]:
    """The bonas source files this process has loaded: what its training ran through."""
    files = (getattr(m, "__file__", None) for name, m in list(sys.modules.items()) if name.split(".")[0] == "bonas")
    return sorted(str(Path(f).resolve().relative_to(ROOT)) for f in files if f)


def kept_rows(out: Path, config_path: str, network: str, train: dict, epochs: int, seed: int, arms: list[str]) -> list[dict]:
    """The rows of ``out`` for arms other than ``arms``, if they measured the same thing with the same code (else exit)."""
    if not out.exists():
        return []
    old = json.loads(out.read_text())
    if (old.get("network"), old.get("train"), old.get("epochs"), old.get("seed")) != (network, train, epochs, seed):
        raise SystemExit(f"final_recipe --keep: {out} measured {old.get('network')} ({old.get('train')}), "
                         f"{old.get('epochs')} epochs, seed {old.get('seed')}: not this run's; "
                         "write elsewhere with --out")  # fmt: skip
    rows = [{"git_commit": old["git_commit"], "cpu": old["machine"]["cpu"], **r} for r in old["arms"] if r["arm"] not in arms]
    check_same_code(rows, config_path, out)
    return rows


def check_same_code(rows: list[dict], config_path: str, out: Path) -> None:
    config = str(Path(config_path).resolve().relative_to(ROOT))
    for commit in {r["git_commit"].removesuffix("-dirty") for r in rows}:
        # files added since are left out: reached only through changed files (listed) or this bench's own imports
        diff = ["git", "diff", "--name-only", "--diff-filter=a", commit, "--", *loaded_code(), config]
        changed = subprocess.run(diff, cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        if changed:
            raise SystemExit(f"final_recipe --keep: {', '.join(changed)} changed since {commit[:7]}, where "
                             f"{out.name}'s rows were measured: rerun every arm")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "studies" / "fashion-mnist.toml"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "final_recipe.json"))
    ap.add_argument("--keep", action="store_true", help="keep the results file's rows for the arms not run now (same code)")
    args = ap.parse_args()
    set_threads()
    quiet_lightning(False)
    base = load_config(args.config)
    base = configured(
        base, {"training": {"warmup_epochs": 0.0, "label_smoothing": 0.0, "ema_decay": 0.0}, "final": {"augment": False}}
    )
    splits = final_splits(base)
    arch = BASELINES["2 conv + pool + BN"]
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        ap.error(f"--arms: no arm {unknown[0]!r}; the arms are {', '.join(ARMS)}")
    kept = []
    if args.keep:
        kept = kept_rows(Path(args.out), args.config, arch.describe(), BASELINE_TRAIN.to_dict(), args.epochs, args.seed, arms)
    rows: list[dict] = []
    commit, cpu = git_commit(), machine()["cpu"]
    for arm in arms:
        config = configured(base, ARMS[arm])
        start = time.monotonic()
        final = train_final(config, splits, arch, BASELINE_TRAIN, args.seed, epochs=args.epochs)
        r = final.result
        if r["epochs"] < args.epochs - 0.01:
            raise SystemExit(f"final_recipe: {arm} trained {r['epochs']} of {args.epochs} epochs")
        rows.append({"git_commit": commit, "cpu": cpu, "arm": arm, "changes": ARMS[arm], "test_acc": r["test_acc"],
                     "epochs": r["epochs"], "train_images": r["train_images"],
                     "seconds": round(time.monotonic() - start, 1)})  # fmt: skip
        print(f"{arm}: test {r['test_acc']:.4f} after {r['epochs']} epochs of {r['train_images']} images", flush=True)
        check_same_code(kept, args.config, Path(args.out))  # with every module the training has loaded by now
        # written after every arm: a run stopped early keeps the arms it finished, and says which were asked
        out = write(args.out, __file__, {
            "bench": "final_recipe", "network": arch.describe(), "train": BASELINE_TRAIN.to_dict(), "epochs": args.epochs,
            "seed": args.seed, "test_images": len(splits.test), "arms_asked": [r["arm"] for r in kept] + arms,
            "arms": kept + rows,
        })  # fmt: skip
    print(f"wrote {out}")
    print("RESULT " + " ".join(f"{r['arm'].split(' (')[0].replace(' ', '_')}={r['test_acc']:.4f}" for r in kept + rows))


if __name__ == "__main__":
    main()
