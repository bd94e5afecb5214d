"""One image file into a square uint8 array the way every ImageFolder image and every ``bonas predict`` input is
made: the short side resized to the target size, the centre cropped (the aspect ratio kept), converted to RGB or
greyscale. PIL and numpy only, so the processes that decode a folder in parallel start in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# How a file's PIL mode reaches the wanted one, and what the one-line warning calls it (None: nothing to say).
CONVERSIONS = {
    "1": "black-and-white",
    "L": "greyscale",
    "LA": "with transparency",
    "P": "palette",
    "RGBA": "with transparency",
    "CMYK": "CMYK",
    "YCbCr": None,
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I;16L": "16-bit",
    "I": "32-bit integer",
    "F": "32-bit float",
}


def to_mode(image, mode: str):
    """``image`` as ``mode`` ("RGB" or "L"): transparency composited on white, 16/32-bit pixels scaled to 8 bits."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(1.0, float(pixels.max()))
        image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode in ("LA", "RGBA", "P") and (image.mode != "P" or "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    return image.convert(mode)


def square(image, size: int):
    """The short side to ``size`` (high-quality downsampling), then the centre ``size`` x ``size``."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def decode_image(path: str | Path, size: int, channels: int) -> tuple[np.ndarray, str | None]:
    """(the (channels, size, size) uint8 array, what was converted or None). Raises OSError (or PIL's
    UnidentifiedImageError, an OSError) for a file that is not a readable, complete image."""
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as image:
        if image.format == "JPEG":  # decode at a fraction of the size when the file is far larger than needed
            image.draft(mode, (size * 2, size * 2))
        image.load()  # a truncated file fails here (PIL does not accept truncated images by default)
        native = image.mode
        converted = to_mode(image, mode) if native != mode else image
        array = np.asarray(square(converted, size), dtype=np.uint8)
    what = CONVERSIONS.get(native, native) if native != mode and (channels == 3 or native not in ("RGB",)) else None
    return (array[None] if channels == 1 else array.transpose(2, 0, 1)).copy(), what


def decode_chunk(task: tuple) -> tuple[int, np.ndarray, dict]:
    """In a decoding process: one chunk's files into its rows of a store's file (mapped by every process at once).
    ``task`` = (file, rows in the store, one image's shape, first row, chunk, files, labels). Returns the chunk,
    its labels (-1 for a file that could not be read) and {"converted": {what: count}, "skipped": [file (why)]}."""
    path, n_rows, shape, start, chunk, files, labels = task
    images = np.memmap(path, dtype=np.uint8, mode="r+", shape=(n_rows, *shape))
    out = np.array(labels, dtype=np.int64)
    converted: dict[str, int] = {}
    skipped: list[str] = []
    for i, f in enumerate(files):
        try:
            images[start + i], what = decode_image(f, shape[1], shape[0])
        except (OSError, ValueError, SyntaxError) as err:  # unreadable, truncated, not an image at all
            why = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
            skipped.append(f"{f} ({why})")
            out[i] = -1
            continue
        if what:
            converted[what] = converted.get(what, 0) + 1
    images.flush()
    return chunk, out, {"converted": converted, "skipped": skipped}
