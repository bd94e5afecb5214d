"""Your own photos, measured: a folder of 20 000 160x120 JPEG files (bench/photos.py) through bonas as a new user
runs it, everything but the folder and the image size left at its default.

1. ``speed``: training images per second of one fixed network at 128 px with the images held in memory and
   streamed from the store's file by DataLoader readers (the same batches through bonas' trial path), 3 epochs each,
   alternating; and the process's peak resident memory in each.
2. ``run``: ``bonas run --budget 6m`` on the folder at image_size 128 and at 32, one after the other, every
   process's peak resident memory sampled every 0.2 s (the run, its DataLoader readers, its decoding processes);
   the test accuracy each reached.

    .venv/bin/python bench/own_data.py                        # ~16 minutes on 2 cores, nothing else running
    .venv/bin/python bench/own_data.py --parts speed --n 4000  # the speed part on a smaller folder
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.photos import make_folder  # noqa: E402
from bench.record import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "results" / "work"
NETWORK = {  # the speed part's network: a patchify stem to 32 px, two blocks, as the default space proposes them
    "stem": "patch", "stem_width": 32, "n_blocks": 2, "width_mult": 1.0,
    "b0_convs": 1, "b0_width": 32, "b0_kernel": 3, "b0_pool": "max", "b0_bn": True, "b0_dropout": 0.0,
    "b1_convs": 1, "b1_width": 64, "b1_kernel": 3, "b1_pool": "max", "b1_bn": True, "b1_dropout": 0.0,
    "head": "gap", "n_dense": 0, "optimizer": "adamw", "lr": 0.002, "weight_decay": 0.0005, "batch_size": 64,
}  # fmt: skip


def rss_tree(pid: int) -> dict[int, tuple[str, int]]:
    """{pid: (command, resident bytes)} of ``pid`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            name = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
            out[p] = (name, rss)
        except (OSError, StopIteration):
            pass
        todo += children.get(p, [])
    return out


class PeakMemory:
    """Samples a process tree's resident memory every 0.2 s: the peak of each process, and of the tree at once."""

    def __init__(self, pid: int):
        self.pid, self.peaks, self.tree_peak = pid, {}, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            tree = rss_tree(self.pid)
            self.tree_peak = max(self.tree_peak, sum(r for _, r in tree.values()))
            for p, (name, rss) in tree.items():
                if rss > self.peaks.get(p, ("", 0))[1]:
                    self.peaks[p] = (name, rss)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        top = max(self.peaks.values(), key=lambda v: v[1], default=("", 0))
        return {
            "processes": len(self.peaks),
            "peak_per_process_mb": {str(p): round(r / 2**20) for p, (_, r) in sorted(self.peaks.items())},
            "largest_process_mb": round(top[1] / 2**20),
            "largest_process": top[0],
            "tree_peak_mb": round(self.tree_peak / 2**20),
        }


def config_text(name: str, folder: Path, size: int, **data) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())
    return f'name = "{name}"\ndataset = "imagefolder"\n\n[data]\nroot = "{folder}"\nimage_size = {size}\n{extra}'


SPEED = """
import json, resource, sys, time
from bonas.config import load_config
from bonas.nas.objective import Objective
from bonas.nas.worker import prepare_worker
config = load_config(sys.argv[1])
splits = prepare_worker(config, "sqlite:///unused.db", verbose=False)
objective = Objective(config, splits)
trial = __import__("optuna").trial.FixedTrial(json.loads(sys.argv[2]))
prepared = objective.prepare(trial, seed=0)
start = time.perf_counter()
module = objective.fit(None, prepared)
seconds = time.perf_counter() - start
print(json.dumps({"streamed": splits.streamed, "images": len(splits.train) * config.training.max_epochs,
                  "seconds": seconds, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "val_acc": module.history[-1]}))
"""


def speed(folder: Path, work: Path, repeats: int) -> dict:
    """Training images/s of NETWORK at 128 px, images in memory and streamed, each in a fresh process."""
    rows = {"in memory": [], "streamed": []}
    for r in range(repeats):
        for arm, limit in (("in memory", 4096), ("streamed", 1)):  # MB: all of it held, or nothing
            path = work / f"speed-{r}-{arm.replace(' ', '-')}.toml"
            text = config_text(path.stem, folder, 128, memory_limit_mb=limit, train_subset=4000, val_subset=500)
            path.write_text(text + "\n[training]\nmax_epochs = 3\n[objective]\nmax_flops = 0\n")
            cmd = [sys.executable, "-c", SPEED, str(path), json.dumps(NETWORK)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BONAS_DATA_DIR": str(work / "data")})
            if proc.returncode != 0:
                raise SystemExit(f"own_data speed: {arm} failed: {proc.stderr[-2000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            if got["streamed"] != (arm == "streamed"):
                raise SystemExit(f"own_data speed: the {arm} arm did not take its path: {got}")
            rows[arm].append({**got, "images_per_s": round(got["images"] / got["seconds"], 1)})
            print(f"speed {arm}: {rows[arm][-1]}", flush=True)
    medians = {arm: sorted(x["images_per_s"] for x in runs)[len(runs) // 2] for arm, runs in rows.items()}
    return {"network": NETWORK, "runs": rows, "median_images_per_s": medians, "ratio": medians["streamed"] / medians["in memory"]}


def bonas_run(folder: Path, work: Path, size: int, budget: str) -> dict:
    """`bonas run --budget` on the folder at ``size`` px, as a user runs it; the peak memory of every process."""
    import optuna

    name = f"photos{size}"
    path = work / f"{name}.toml"
    path.write_text(config_text(name, folder, size))
    cmd = [sys.executable, "-m", "bonas", "run", str(path), "--budget", budget, "--out", str(work / f"{name}.pt"), "--report",
           str(work / f"{name}-report")]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "BONAS_DATA_DIR": str(work / "data"), "PYTHONUNBUFFERED": "1"})  # fmt: skip
    with PeakMemory(proc.pid) as memory:
        out, err = proc.communicate()
    wall = time.monotonic() - start
    print(out[-1500:], flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"own_data: bonas run at {size} px failed ({proc.returncode}): {err[-2000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{work / (name + '.db')}")
    record = next(v for k, v in study.user_attrs.items() if k.startswith("bonas:run:"))
    trials = study.get_trials(deepcopy=False)
    return {
        "image_size": size,
        "budget": budget,
        "wall_s": round(wall, 1),
        "record": record,
        "trials": len(trials),
        "states": {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
        "limits": study.user_attrs.get("bonas:limits"),
        "data": study.user_attrs.get("bonas:data"),
        "memory": memory.summary(),
        "warnings": [line for line in err.splitlines() if "imagefolder:" in line],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="speed,run")
    ap.add_argument("--n", type=int, default=20000, help="photos in the folder")
    ap.add_argument("--budget", default="6m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "own_data.json"))
    args = ap.parse_args()
    folder = WORK / f"photos-{args.n}"
    if not folder.is_dir():
        print(f"writing {args.n} photos to {folder} ...", flush=True)
        make_folder(folder, args.n)
    results: dict = {"bench": "own_data", "photos": args.n, "folder": "bench/photos.py output", "parts": args.parts}
    with tempfile.TemporaryDirectory(prefix="bonas-own-data-", dir=WORK) as tmp:
        work = Path(tmp)
        if "speed" in args.parts:
            results["speed"] = speed(folder, work, args.repeats)
        if "run" in args.parts:
            results["runs"] = [bonas_run(folder, work, size, args.budget) for size in (128, 32)]
    out = write(args.out, __file__, results)
    summary = [f"n={args.n}"]
    if "speed" in results:
        s = results["speed"]
        medians = s["median_images_per_s"]
        summary += [
            f"inmemory_img_s={medians['in memory']}",
            f"streamed_img_s={medians['streamed']}",
            f"stream_ratio={s['ratio']:.2f}",
        ]
    for r in results.get("runs", []):
        px = r["image_size"]
        summary += [f"test_acc_{px}px={r['record']['test_acc']:.4f}", f"max_rss_{px}px_mb={r['memory']['largest_process_mb']}"]
    print(f"wrote {out}\nRESULT " + " ".join(summary))


if __name__ == "__main__":
    main()
