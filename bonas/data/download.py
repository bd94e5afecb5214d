"""Downloads through torchvision, for the data sets it knows, with one line when they fail (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bonas.core.errors import DataError
from bonas.data.raw import RawData


def download_torchvision(name: str, root: Path, looked: list[Path]) -> RawData:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = cls(root=str(root), train=True, download=True)
        test = cls(root=str(root), train=False, download=True)
    except Exception as err:  # URLError, RuntimeError (all mirrors failed), OSError
        where = ", ".join(str(p) for p in looked)
        how = {
            "fashion-mnist": "apt-get install dataset-fashion-mnist, or put the four IDX .gz files in",
            "mnist": "put the four original IDX .gz files in",
            "cifar10": "put the extracted cifar-10-batches-py folder in",
            "cifar100": "put the extracted cifar-100-python folder in",
        }[name]
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"{name}: not found (looked in {where}) and the download failed ({reason}); {how} {looked[0]} or set --data-dir"
        ) from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    train_x, train_y = tensors(train)
    test_x, test_y = tensors(test)
    return RawData(train_x, train_y, test_x, test_y, list(train.classes), f"torchvision.datasets.{cls.__name__} in {root}")
