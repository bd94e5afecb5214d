"""The commands that make and use models: retrain, export, predict."""

from __future__ import annotations

import argparse

from bonas.cli import argtypes
from bonas.cli.options import add_storage, add_study


class Retrain:
    help = "retrain a trial (default: the best) on the whole training split, test it once, save a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_study(p)
        p.add_argument("--trial", type=int, help="trial number (default: the best completed trial)")
        p.add_argument("--epochs", type=argtypes.positive_int, help="epochs (default: 3x the search's epochs per trial)")
        p.add_argument(
            "--search-data", action="store_true", help="train on the search's train/val subsets, not the whole training split"
        )
        p.add_argument("--out", help="checkpoint path (default checkpoints/<study>-trial<N>.pt)")
        p.add_argument("--data-dir", help="where data sets are found or downloaded")
        add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.commands.retrain import format_result, retrain
        from bonas.study.studies import open_existing
        from bonas.training.module import quiet_lightning, set_threads

        opened = open_existing(args.study, args.storage)
        if args.data_dir:
            opened.config.data.dir = args.data_dir
        set_threads()
        quiet_lightning(args.verbose)
        print(format_result(retrain(opened, args.trial, args.epochs, args.search_data, args.out, args.verbose)))
        return 0


class Export:
    help = "export a checkpoint as TorchScript, torch.export (.pt2) or ONNX; reloads it and checks its outputs"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a checkpoint from bonas retrain (or a kept trial's weights artifact)")
        p.add_argument("--format", required=True, choices=["torchscript", "exported", "onnx"])
        p.add_argument("--out", help="output path (default: beside the checkpoint)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.model.export import export

        path, diff = export(args.checkpoint, args.format, args.out)
        print(f"{args.format}: {path} (reloaded; max |difference| from the checkpoint {diff:.2e}); input: float images in [0, 1]")
        return 0


class Predict:
    help = "classify image files with a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint")
        p.add_argument("images", nargs="+")
        p.add_argument("--top", type=argtypes.positive_int, default=3, help="classes shown per image (default 3)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.model.export import predict

        for path, ranking in predict(args.checkpoint, args.images, args.top):
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranking))
        return 0
