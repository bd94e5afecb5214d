"""Export a checkpoint for deployment and classify images with it.

Exported models take float images in [0, 1], shape (N, C, H, W), and return logits: the normalisation
is inside, so a deployment only has to resize and scale pixels. Every export is reloaded and checked
against the checkpoint's own network on random inputs before it is reported as done.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bonas.core.errors import BonasError
from bonas.model.checkpoint import load_checkpoint

FORMATS = {"torchscript": ".ts.pt", "exported": ".pt2", "onnx": ".onnx"}
TOLERANCE = 1e-4


class Deployed(nn.Module):
    """[0, 1] floats -> normalised -> the network -> logits."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def deployed_from_checkpoint(path: str | Path) -> tuple[Deployed, dict]:
    net, ckpt = load_checkpoint(path)
    return Deployed(net, ckpt["mean"], ckpt["std"]).eval(), ckpt


def export(checkpoint: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, float]:
    """Write the export, reload it, and return (path, max |difference| from the checkpoint's outputs)."""
    if fmt not in FORMATS:
        raise BonasError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model, ckpt = deployed_from_checkpoint(checkpoint)
    shape = tuple(ckpt["input_shape"])
    path = Path(out) if out else Path(checkpoint).with_suffix(FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    if fmt == "torchscript":  # deprecated by PyTorch in favour of torch.export, still asked for by deployments
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(model, example), str(path))
            run = torch.jit.load(str(path)).eval()
    elif fmt == "exported":
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}}), str(path))
        run = torch.export.load(str(path)).module()
    else:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise BonasError("ONNX export needs the onnx package: pip install 'bonas[onnx]'") from None
        torch.onnx.export(
            model, (example,), str(path), dynamo=True, dynamic_shapes={"x": {0: batch}}, external_data=False, verbose=False
        )
        run = _onnx_runner(path)
    check = torch.rand(5, *shape)
    with torch.no_grad():
        expected = model(check)
        got = run(check)
    diff = (expected - got).abs().max().item()
    if not diff <= TOLERANCE:
        raise BonasError(
            f"{path}: the reloaded {fmt} model differs from the checkpoint by {diff:.3g} (> {TOLERANCE}); do not use it"
        )
    return path, diff


def _onnx_runner(path: Path):
    """onnxruntime when installed, else ONNX's own reference evaluator (slow, exact enough)."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        name = evaluator.input_names[0]
        return lambda x: torch.from_numpy(evaluator.run(None, {name: x.numpy()})[0])


def load_image(path: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file as a (C, H, W) float tensor in [0, 1], made as the training images were: converted, its short
    side resized, the centre cropped (bonas.data.decode)."""
    from PIL import UnidentifiedImageError

    from bonas.data.decode import decode_image

    try:
        array, _ = decode_image(path, shape[1], shape[0])
    except FileNotFoundError:
        raise BonasError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BonasError(f"{path}: not an image ({err})") from None
    return torch.from_numpy(array).float() / 255.0


class Preprocessor:
    """What turns images into a trained network's input: ``preprocess(images)`` -> a normalised (N, C, H, W)
    batch. ``images``: file paths, PIL images, or uint8 (0..255) or float (0..1) tensors of (C, H, W) or (N, C, H,
    W) — resized and cropped as the training images were when their size differs. ``classes`` names the outputs."""

    def __init__(self, shape: tuple[int, int, int], mean, std, classes: list[str]):
        self.shape, self.classes = tuple(shape), classes
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def _one(self, image) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            return load_image(image, self.shape)
        from PIL import Image

        if isinstance(image, Image.Image):
            from bonas.data.decode import square, to_mode

            mode = "RGB" if self.shape[0] == 3 else "L"
            array = torch.from_numpy(np.asarray(square(to_mode(image, mode), self.shape[1])).copy())
            return (array.unsqueeze(0) if array.ndim == 2 else array.permute(2, 0, 1)).float() / 255.0
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if tuple(x.shape[-2:]) != self.shape[1:]:
            from torchvision.transforms import v2

            x = v2.CenterCrop(self.shape[1:])(v2.Resize(min(self.shape[1:]), antialias=True)(x))
        return x

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.dim() == 4:
            batch = torch.stack([self._one(x) for x in images])
        elif isinstance(images, (list, tuple)):
            batch = torch.stack([self._one(x) for x in images])
        else:
            batch = self._one(images).unsqueeze(0)
        return (batch - self.mean) / self.std


def predict(checkpoint: str | Path, images: list[str], top: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    model, ckpt = deployed_from_checkpoint(checkpoint)
    shape = tuple(ckpt["input_shape"])
    x = torch.stack([load_image(p, shape) for p in images])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    classes = ckpt["classes"]
    out = []
    for path, p in zip(images, probs, strict=True):
        values, idx = p.topk(min(top, len(classes)))
        out.append((path, [(classes[i], v) for i, v in zip(idx.tolist(), values.tolist(), strict=True)]))
    return out
