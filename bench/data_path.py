"""The data path, before and after: what bonas does against the usual DataLoader route, in one run.

1. Decoding: the IDX .gz files decoded from scratch vs the store of decoded images that later trials/workers load.
2. One epoch of batches, no model: index slices of one uint8 tensor + batched normalisation (bonas) vs a
   DataLoader over a per-sample Dataset with torchvision transforms (the usual route), num_workers 0 and 2.
3. Augmented epoch: bonas' batched per-image random crop + flip vs torchvision v2 RandomCrop + flip per sample.

    .venv/bin/python bench/data_path.py                 # Fashion-MNIST (Debian's files or --data-dir)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.record import write  # noqa: E402
from bonas.config import DataConfig  # noqa: E402
from bonas.data.augment import Preprocess  # noqa: E402
from bonas.data.sources import from_raw, load_raw  # noqa: E402
from bonas.data.splits import make_splits  # noqa: E402


class PerSample(Dataset):
    """The usual route: one image at a time through torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from torchvision.transforms import v2

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "data_path.json"))
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bonas-datapath-"))
    cold = DataConfig(dir=str(scratch / "cold"))

    def decode_only():
        import shutil

        shutil.rmtree(scratch / "cold", ignore_errors=True)
        load_raw(args.dataset, cold)

    decode_s = timed(decode_only, args.repeats)
    cache_s = timed(lambda: load_raw(args.dataset, cold), args.repeats)  # the cache written by the last decode
    raw = load_raw(args.dataset, cold)
    splits = make_splits(args.dataset, from_raw(raw), DataConfig(val_fraction=0.1), seed=0)
    n = len(splits.train)
    train_x, train_y = splits.take(splits.train)
    mean, std = splits.mean, splits.std
    pre = Preprocess(mean, std, splits.crop_pad or 2, splits.flip)

    def bonas_epoch(augment: bool) -> None:
        for x, _ in splits.loader(splits.train, args.batch, shuffle=True):
            pre(x, augment=augment)

    plain_tf = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    aug_tf = v2.Compose(
        [
            v2.RandomCrop(splits.input_shape[1:], padding=splits.crop_pad or 2),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )

    def loader_epoch(transform, workers: int) -> None:
        loader = DataLoader(
            PerSample(train_x, train_y, transform),
            batch_size=args.batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=False,
        )
        for _ in loader:
            pass

    bonas_s = timed(lambda: bonas_epoch(False), args.repeats)
    loader0_s = timed(lambda: loader_epoch(plain_tf, 0), args.repeats)
    loader2_s = timed(lambda: loader_epoch(plain_tf, 2), args.repeats)
    bonas_aug_s = timed(lambda: bonas_epoch(True), args.repeats)
    loader_aug_s = timed(lambda: loader_epoch(aug_tf, 0), args.repeats)

    print(
        f"{args.dataset}: {n} training images {splits.input_shape}, batch {args.batch}, torch {torch.get_num_threads()} threads"
    )
    print(f"decode IDX/batches from scratch   {decode_s:8.3f} s")
    print(f"load the decoded-tensor cache     {cache_s:8.3f} s   ({decode_s / cache_s:.0f}x faster)")
    print(f"{'epoch of batches, no model':<34}{'s':>8}{'images/s':>12}")
    for name, s in [
        ("bonas index slices", bonas_s),
        ("DataLoader per-sample, 0 workers", loader0_s),
        ("DataLoader per-sample, 2 workers", loader2_s),
        ("bonas + crop/flip (batched)", bonas_aug_s),
        ("DataLoader + v2 crop/flip", loader_aug_s),
    ]:
        print(f"{name:<34}{s:8.3f}{n / s:12.0f}")
    result = (
        f"RESULT decode_s={decode_s:.3f} cache_s={cache_s:.3f} bonas_img_s={n / bonas_s:.0f} loader0_img_s={n / loader0_s:.0f} "
        f"loader2_img_s={n / loader2_s:.0f} slice_vs_loader={loader0_s / bonas_s:.1f} bonas_aug_img_s={n / bonas_aug_s:.0f} "
        f"loader_aug_img_s={n / loader_aug_s:.0f} aug_speedup={loader_aug_s / bonas_aug_s:.1f}"
    )
    print(result)
    seconds = {
        "decode": decode_s,
        "cache": cache_s,
        "bonas_slices": bonas_s,
        "loader_0_workers": loader0_s,
        "loader_2_workers": loader2_s,
        "bonas_crop_flip": bonas_aug_s,
        "loader_crop_flip": loader_aug_s,
    }
    out = write(
        args.out,
        __file__,
        {
            "bench": "data_path",
            "dataset": args.dataset,
            "images": n,
            "batch": args.batch,
            "repeats": args.repeats,
            "seconds": seconds,
            "result": result,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
