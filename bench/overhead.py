"""What a bonas trial costs around the training itself, against a plain PyTorch loop, in one run.

Same architecture, same data tensors, same batch size, optimizer, schedule and epochs:

  bonas:  claim under the study lock -> space -> ArchSpec -> model -> Lightning with the pruning callback, the
          per-epoch training-state checkpoint and the peer guard -> SQLite writes, note, artifacts -> tell
  plain:  a hand-written loop over the same in-memory tensors (normalise, forward, backward, step, evaluate)

The bonas arm trains one architecture again and again on purpose (equal work with the plain loop), so reuse
of identical trials is off, and every trial is checked to have trained every epoch itself: the bench fails
when one did not. Reports the wall-time ratio (target <= 1.05), images/s of both, the fixed cost per trial
outside training (claim, build and FLOP count, user attrs, Trainer, tell, note: target <= 100 ms), what the
per-epoch callbacks cost, and the training GFLOP/s against a torch matmul timed in the same run (this
machine's compute ceiling). Runs alternate bonas/plain to share the noise.

    .venv/bin/python bench/overhead.py                       # Fashion-MNIST subset (Debian's files or --data-dir)
    .venv/bin/python bench/overhead.py --dataset digits      # anywhere
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402
from bonas.config import parse_config  # noqa: E402
from bonas.data.augment import Preprocess  # noqa: E402
from bonas.model.build import build_model  # noqa: E402
from bonas.nas.objective import Objective  # noqa: E402
from bonas.nas.space import suggest_arch  # noqa: E402
from bonas.nas.worker import Worker, prepare_worker  # noqa: E402
from bonas.training.module import make_trainer  # noqa: E402

CONFIG = """
name = "overhead"
dataset = "{dataset}"
seed = 0
[budget]
n_trials = 1000
[sampler]
name = "random"
[pruner]
name = "median"
n_startup_trials = 1000   # the callback runs and reports every epoch, but never prunes: equal work
n_warmup_steps = 0
[training]
max_epochs = {epochs}
batch_sizes = [{batch}]
optimizers = ["adamw"]
lr = [3e-3, 3e-3]
weight_decay = [1e-4, 1e-4]
[workers]
reuse_duplicates = false  # the same network every trial, on purpose: each must train
[data]
val_fraction = 0.1
train_subset = {train}
val_subset = {val}
[space]
n_blocks = [2, 2]
convs_per_block = [2, 2]
widths = [{width}]
kernel_sizes = [3]
pooling = ["max"]
batch_norm = [true]
dropout = [0.0, 0.0]
heads = ["gap"]
dense_layers = [0, 0]
"""


def plain_loop(splits, arch, batch: int, epochs: int, seed: int) -> float:
    """The reference: a hand-written loop doing exactly the same work; returns wall seconds."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    net = build_model(arch, splits.input_shape, splits.n_classes)
    pre = Preprocess(splits.mean, splits.std)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(splits.train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    batches = splits.loader(splits.train, batch, shuffle=True, seed=seed)
    for _ in range(epochs):
        net.train()
        for x, y in batches:
            loss = F.cross_entropy(net(pre(x)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in splits.loader(splits.val, 1024, shuffle=False):
                correct += (net(pre(x)).argmax(1) == y).sum().item()
    return time.perf_counter() - start


CALLBACK_MS: dict[str, list[float]] = {}


def time_callbacks() -> None:
    """Wrap the per-epoch hooks of bonas' trial callbacks with timers (they run inside every real trial)."""
    from bonas.training import callbacks

    for cls, hook in (
        (callbacks.StateSaver, "on_validation_end"),
        (callbacks.TrialGuard, "on_train_epoch_start"),
        (callbacks.PruningCallback, "on_validation_end"),
    ):
        original = getattr(cls, hook)

        def timed(self, *a, _original=original, _name=cls.__name__, **k):
            t0 = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                CALLBACK_MS.setdefault(_name, []).append(1000 * (time.perf_counter() - t0))

        setattr(cls, hook, timed)


def bonas_trial(worker: Worker, epochs: int) -> tuple[float, float]:
    """One whole bonas trial (claim, space, build, Lightning fit with its callbacks, writes, tell); returns
    (wall seconds, seconds outside Lightning's fit). Fails loudly unless the trial trained every epoch."""
    from optuna.trial import TrialState

    from bonas.core import records as R
    from bonas.nas.worker import RunSummary, SignalGuard
    from bonas.study.claims import claim_trial

    start = time.perf_counter()
    trial = claim_trial(worker.study, worker.storage, worker.lock, n_trials=10**6, timeout=0).trial
    worker.run_trial(trial, SignalGuard(), RunSummary())
    wall = time.perf_counter() - start
    r = R.TrialRecord.of(worker.study.trials[trial.number])
    if r.state != TrialState.COMPLETE or r.epochs != epochs or not r.trained or r.resumed_at:
        raise SystemExit(
            f"overhead: trial {r.number} did not train {epochs} epochs itself ({r.state.name}, {r.epochs}, {r.reason})"
        )
    return wall, wall - r.seconds


def fixed_costs(worker: Worker) -> dict[str, float]:
    """The parts of a trial outside training, each timed alone: median of 5, in milliseconds."""
    from bonas.core import records as R
    from bonas.results.notes import note_markdown, write_note
    from bonas.study.claims import claim_trial

    obj: Objective = worker.objective
    out: dict[str, list[float]] = {"claim_ms": [], "build_ms": [], "attrs_ms": [], "trainer_ms": [], "tell_ms": [], "note_ms": []}
    for _ in range(5):
        t0 = time.perf_counter()
        trial = claim_trial(worker.study, worker.storage, worker.lock, n_trials=10**6, timeout=0).trial
        t1 = time.perf_counter()
        p = obj.prepare(trial, trial.number)
        t2 = time.perf_counter()
        obj.record(trial, p)
        t3 = time.perf_counter()
        make_trainer(2, obj.trial_callbacks(trial, p, None), "auto", False)
        t4 = time.perf_counter()
        worker.study.tell(trial, 0.5)
        t5 = time.perf_counter()
        write_note(trial, note_markdown(R.TrialRecord.of(worker.study.trials[trial.number]), 2))
        t6 = time.perf_counter()
        for key, value in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5), strict=True):
            out[key].append(1000 * value)
    return {k: statistics.median(v) for k, v in out.items()}


def train_flops_per_image(arch, splits, batch: int) -> float:
    """Forward + backward FLOPs of one training step, per image, counted by torch.utils.flop_counter."""
    net = build_model(arch, splits.input_shape, splits.n_classes)
    x = torch.randn(batch, *splits.input_shape)
    y = torch.randint(0, splits.n_classes, (batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(net(x), y).backward()
    return counter.get_total_flops() / batch


def matmul_ceiling(n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a float32 n x n matmul with torch's current threads: what this CPU can do at best."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--train", type=int, default=6000, help="training images (default 6000)")
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="bonas/plain pairs, alternated")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "overhead.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bonas-overhead-"))
    path = work / "overhead.toml"
    path.write_text(
        CONFIG.format(
            dataset=args.dataset, epochs=args.epochs, batch=args.batch, train=args.train, val=args.val, width=args.width
        )
    )
    config = parse_config(path.read_text(), source=str(path))
    url = f"sqlite:///{work / 'overhead.db'}"
    splits = prepare_worker(config, url, verbose=False)
    worker = Worker(config, url, splits)
    import optuna

    arch = suggest_arch(optuna.trial.FixedTrial({}), config.space, splits.input_shape)
    threads = torch.get_num_threads()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {threads} threads"
    )
    print(
        f"data: {args.dataset}, {len(splits.train)} train / {len(splits.val)} val images {splits.input_shape}; "
        f"arch {arch.describe()}; batch {args.batch}; {args.epochs} epochs"
    )

    plain_loop(splits, arch, args.batch, 1, seed=0)  # warm up kernels and allocator once for both
    bonas_trial(worker, args.epochs)  # and bonas' one-time imports (the dashboard's note API, FLOP counter)
    time_callbacks()
    bonas_times, outside, plain_times = [], [], []
    for r in range(args.repeats):
        wall, out_of_fit = bonas_trial(worker, args.epochs)
        bonas_times.append(wall)
        outside.append(out_of_fit)
        plain_times.append(plain_loop(splits, arch, args.batch, args.epochs, seed=r))
        print(f"  pair {r}: bonas {bonas_times[-1]:.2f}s ({1000 * out_of_fit:.0f} ms outside fit)  plain {plain_times[-1]:.2f}s")
    bonas_s, plain_s = statistics.median(bonas_times), statistics.median(plain_times)
    outside_ms = 1000 * statistics.median(outside)
    per_epoch = {k: statistics.median(v) for k, v in CALLBACK_MS.items()}
    images = len(splits.train) * args.epochs
    costs = fixed_costs(worker)
    flops = train_flops_per_image(arch, splits, args.batch)
    ceiling = matmul_ceiling()
    achieved = flops * images / plain_s / 1e9
    achieved_bonas = flops * images / bonas_s / 1e9

    print()
    print(f"{'':<8}{'wall s':>8}{'images/s':>10}{'GFLOP/s':>9}")
    print(f"{'bonas':<8}{bonas_s:>8.2f}{images / bonas_s:>10.0f}{achieved_bonas:>9.1f}")
    print(f"{'plain':<8}{plain_s:>8.2f}{images / plain_s:>10.0f}{achieved:>9.1f}")
    print(f"ratio bonas/plain: {bonas_s / plain_s:.3f} (target <= 1.05)")
    print(
        f"fixed cost per trial outside fit: {outside_ms:.0f} ms (target <= 100); alone: "
        + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in costs.items())
    )
    print("per epoch inside fit (ms, median): " + ", ".join(f"{k} {v:.1f}" for k, v in per_epoch.items()))
    print(
        f"training FLOPs per image (fwd+bwd): {flops / 1e6:.2f} M; matmul ceiling {ceiling:.1f} GFLOP/s; "
        f"bonas reaches {100 * achieved_bonas / ceiling:.0f}%"
    )
    result = (
        f"RESULT ratio={bonas_s / plain_s:.3f} bonas_img_s={images / bonas_s:.0f} plain_img_s={images / plain_s:.0f} "
        f"fixed_ms={outside_ms:.0f} "
        + " ".join(f"{k}={v:.1f}" for k, v in costs.items())
        + " "
        + " ".join(f"epoch_{k}_ms={v:.1f}" for k, v in per_epoch.items())
        + f" gflops={achieved_bonas:.1f} ceiling_gflops={ceiling:.1f} ceiling_frac={achieved_bonas / ceiling:.2f} "
        f"dataset={args.dataset} train={len(splits.train)} epochs={args.epochs}"
    )
    print(result)
    out = write(
        args.out,
        __file__,
        {
            "bench": "overhead",
            "settings": vars(args),
            "arch": arch.describe(),
            "ratio": bonas_s / plain_s,
            "bonas_s": bonas_times,
            "plain_s": plain_times,
            "outside_fit_ms": outside_ms,
            "components_ms": costs,
            "per_epoch_ms": per_epoch,
            "train_flops_per_image": flops,
            "ceiling_gflops": ceiling,
            "gflops_bonas": achieved_bonas,
            "gflops_plain": achieved,
            "result": result,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
