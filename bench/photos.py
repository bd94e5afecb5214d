"""A folder of photo-like JPEG files no preset was written for: Fashion-MNIST's clothes, coloured, scaled, turned and
placed on cluttered 160x120 backgrounds, one class folder each (``root/<class>/<n>.jpg``).

What a user's own photos look like to bonas: tens of thousands of files, RGB, larger than the networks need, the
object small and anywhere in a busy frame. Made offline from Debian's dataset-fashion-mnist (or the IDX files in
``--data-dir``), deterministic for a seed.

    .venv/bin/python bench/photos.py bench/results/work/photos --n 20000
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZE = (160, 120)  # width, height of every photo
OBJECT_PX = (56, 104)  # the garment's side in pixels, drawn uniformly
CLUTTER = (0, 3)  # shapes drawn on the background, from min to max
MARGIN = 20  # the garment stays inside the centre 120x120 (what a square crop of the short side keeps)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A two-colour gradient at a random angle, low-frequency colour noise, and a few translucent shapes."""
    from PIL import Image, ImageDraw

    w, h = SIZE
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = ((xx * np.cos(angle) + yy * np.sin(angle)) - (-w - h)) / (2 * (w + h))
    image = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    noise = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR), float)
    image = np.clip(0.75 * image + 0.25 * noise, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(image).convert("RGBA")
    layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(CLUTTER[0], CLUTTER[1] + 1)):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        box = [x0, y0, x0 + rng.integers(10, 70), y0 + rng.integers(10, 50)]
        colour = (*rng.integers(0, 256, 3).tolist(), int(rng.integers(60, 180)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return np.asarray(Image.alpha_composite(canvas, layer).convert("RGB"), dtype=float)


def compose(item: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 160x120 RGB photo of a 28x28 garment: coloured, scaled, turned, mirrored, placed anywhere in the frame's
    centre square (as a product photo has its product)."""
    from PIL import Image

    side = int(rng.integers(OBJECT_PX[0], OBJECT_PX[1] + 1))
    mask = Image.fromarray(item).resize((side, side), Image.BICUBIC).rotate(rng.uniform(-20, 20), Image.BILINEAR)
    if rng.random() < 0.5:
        mask = mask.transpose(Image.FLIP_LEFT_RIGHT)
    m = np.asarray(mask, dtype=float)[..., None] / 255.0
    colour = rng.integers(0, 256, 3).astype(float)
    shade = 0.55 + 0.45 * m  # the garment's own light and dark parts stay visible
    photo = _background(rng)
    x, y = int(rng.integers(MARGIN, SIZE[0] - MARGIN - side + 1)), int(rng.integers(0, SIZE[1] - side + 1))
    region = photo[y : y + side, x : x + side]
    alpha = np.clip(m * 1.6, 0, 1)
    photo[y : y + side, x : x + side] = region * (1 - alpha) + colour * shade * alpha
    return np.clip(photo, 0, 255).astype(np.uint8)


def _write(task: tuple) -> int:
    from PIL import Image

    root, start, items, labels, names, seed = task
    for i, (item, label) in enumerate(zip(items, labels, strict=True)):
        rng = np.random.default_rng([seed, start + i])
        folder = Path(root) / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(compose(item, rng)).save(folder / f"{start + i:06d}.jpg", quality=int(rng.integers(75, 96)))
    return len(items)


def make_folder(root: Path, n: int, seed: int = 0, data_dir: str = "", processes: int = 2) -> Path:
    """Write ``n`` photos (class-balanced, the first ``n`` of Fashion-MNIST's training images) under ``root``."""
    from bonas.config import DataConfig
    from bonas.data.idx import FASHION_CLASSES
    from bonas.data.sources import load_raw

    raw = load_raw("fashion-mnist", DataConfig(dir=data_dir))
    items, labels = raw.train_x[:n, 0].numpy(), raw.train_y[:n].numpy()
    names = [c.replace("/", "-") for c in FASHION_CLASSES]
    step = 500
    tasks = [(str(root), s, items[s : s + step], labels[s : s + step], names, seed) for s in range(0, n, step)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write, tasks))
    assert written == n, (written, n)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="")
    args = ap.parse_args()
    make_folder(Path(args.root), args.n, args.seed, args.data_dir)
    print(f"wrote {args.n} photos under {args.root}")


if __name__ == "__main__":
    main()
