"""Augmentation and normalisation of a uint8 batch, batched, on the device that trains: a random crop of the padded
image (or, for photos, a random-resized crop), a horizontal flip where the data set allows, cutout; then the
training split's statistics. Every draw is per image, which torchvision's batched transforms (one draw per
batch) do not do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

RESIZED_CROP_SCALE = (0.25, 1.0)  # the crop's share of the image's area (torchvision's RandomResizedCrop: 0.08-1)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio


class Preprocess(nn.Module):
    """uint8 batch -> normalised float batch, with optional batched random crop and flip.

    Runs where the batch is (the GPU when training there). Crop offsets and flips are drawn per image,
    which torchvision's batched transforms (one draw per batch) do not do.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_pad: int = 0,
        flip: bool = False,
        cutout: int = 0,
        resized_crop: bool = False,
    ):
        super().__init__()
        self.resized_crop = resized_crop
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        # (x / 255 - mean) / std as one multiply and one add, in place on the batch's float copy: at 128 px the
        # three broadcast passes took 17 ms of a 64-image batch on 2 CPU cores, these 0.5 ms
        self.register_buffer("scale", 1.0 / (255.0 * self.std), persistent=False)
        self.register_buffer("shift", -self.mean / self.std, persistent=False)
        self.crop_pad = crop_pad
        self.flip = flip
        self.cutout = cutout

    def forward(self, x: torch.Tensor, augment: bool = False) -> torch.Tensor:
        if augment and self.resized_crop:
            x = resized_crop(x)
        elif augment and self.crop_pad > 0:
            x = random_crop(x, self.crop_pad)
        if augment and self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = (x.float() if x.dtype == torch.uint8 else x.clone()).mul_(self.scale).add_(self.shift)
        if augment and self.cutout > 0:
            x = cutout(x, self.cutout)
        return x


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Per-image cutout (DeVries & Taylor 2017): a size x size square at a random centre (it may reach past
    the border) set to 0, the mean after normalisation; one masked multiply for the batch."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image random crop of a zero-padded batch back to its size, in one gather."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + dy).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + dx).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


def resized_crop(x: torch.Tensor) -> torch.Tensor:
    """Per-image random-resized crop (Szegedy et al. 2015; torchvision's RandomResizedCrop) of a uint8 batch back to
    its size, bilinear, in one batched call (torchvision.ops.roi_align): a box of a random share of the area and a
    random aspect ratio, at a random place. Returns floats in [0, 255].

    The box is never larger than the image, so every output pixel is smaller than an input pixel: one bilinear
    sample per output pixel (sampling_ratio=1) is the bilinear resize; four took 3x the time (57 against 18 ms for
    64 images at 128 px on 2 CPU cores), most of a photo trial's step."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    area = torch.empty(n, device=x.device).uniform_(*RESIZED_CROP_SCALE) * h * w
    log_ratio = torch.empty(n, device=x.device).uniform_(math.log(RESIZED_CROP_RATIO[0]), math.log(RESIZED_CROP_RATIO[1]))
    ratio = log_ratio.exp()
    bw = (area * ratio).sqrt().clamp(1, w)
    bh = (area / ratio).sqrt().clamp(1, h)
    left = torch.rand(n, device=x.device) * (w - bw)
    top = torch.rand(n, device=x.device) * (h - bh)
    boxes = torch.stack([torch.arange(n, device=x.device, dtype=torch.float32), left, top, left + bw, top + bh], dim=1)
    return roi_align(x.float(), boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)
