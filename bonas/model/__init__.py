"""Networks from ArchSpecs: the block types a space may choose (one registry), the one builder, what a network
costs (parameters, FLOPs, latency), checkpoints and exports. Plain PyTorch: no Optuna, no Lightning."""

from bonas.model.blocks import BLOCK_TYPES
from bonas.model.build import build_model, count_flops, count_params

__all__ = ["BLOCK_TYPES", "build_model", "count_flops", "count_params"]
