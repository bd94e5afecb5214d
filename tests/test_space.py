"""Space -> ArchSpec -> model, over many sampled trials, for every preset and the input sizes we support."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from bonas.config import load_config, parse_config
from bonas.model import build_model, count_flops, count_params, summarize
from bonas.space import enumerate_archs, specs_from_params, suggest_arch, suggest_training
from bonas.spec import ArchSpec
from tests.conftest import ROOT

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
PRESETS = sorted((ROOT / "studies").glob("*.toml"))


def sample_specs(space, training, data, shape, n: int, seed: int = 0):
    """n architectures drawn at random through a real Optuna study (define-by-run)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        arch = suggest_arch(trial, space, shape)
        train = suggest_training(trial, training, data)
        study.tell(trial, 0.0)
        out.append((trial.params, arch, train))
    return out


def final_size(arch: ArchSpec, shape) -> int:
    size = min(shape[1:])
    for b in arch.blocks:
        if b.pool != "none":
            assert size >= 2, f"pooled a {size}x{size} map: {arch.describe()}"
            size //= 2
    return size


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8x1", "28x28x1", "32x32x3"])
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_sampled_architectures_build_and_run(preset, shape):
    config = load_config(preset)
    # Deep variant of the preset's space too, so that pooling limits are exercised on small inputs.
    deep = dataclasses.replace(config.space, n_blocks=[1, 6]) if not config.space.variants else config.space
    for space in (config.space, deep):
        for params, arch, train in sample_specs(space, config.training, config.data, shape, n=25):
            assert final_size(arch, shape) >= 1
            net = build_model(arch, shape, n_classes=10)
            out = net(torch.randn(2, *shape))
            assert out.shape == (2, 10)
            # the stored params alone rebuild the same specs
            assert specs_from_params(params, space, config.training, config.data, shape) == (arch, train)
            # JSON round trip
            assert ArchSpec.from_json(arch.to_json()) == arch


def test_conditional_params_exist_only_where_they_mean_something():
    config = load_config(ROOT / "studies" / "digits.toml")
    for params, arch, _ in sample_specs(config.space, config.training, config.data, (1, 8, 8), n=60, seed=3):
        n = params["n_blocks"]
        assert {f"b{i}_width" for i in range(n)} <= set(params)
        assert not any(k.startswith(f"b{n}_") for k in params), "params of a block that does not exist"
        assert sum(k.endswith("_units") for k in params) == params["n_dense"]
        assert ("dense_dropout" in params) == (params["n_dense"] > 0)
        # 8x8: after three poolings the map is 1x1, so a fourth block could not pool
        assert len(arch.dense) == params["n_dense"]


def test_no_pool_param_below_2x2():
    space = parse_config('name = "x"\n[space]\nn_blocks = [4, 4]\npooling = ["max"]\n').space
    trial = optuna.trial.FixedTrial({f"b{i}_width": 16 for i in range(4)} | {f"b{i}_kernel": 3 for i in range(4)}
                                    | {f"b{i}_convs": 1 for i in range(4)} | {f"b{i}_bn": False for i in range(4)}
                                    | {f"b{i}_dropout": 0.0 for i in range(4)} | {"head": "gap", "n_dense": 0})
    arch = suggest_arch(trial, space, (1, 8, 8))  # pooling has one choice: fixed, never a param
    assert [b.pool for b in arch.blocks] == ["max", "max", "max", "none"]


def test_fixed_trial_gives_the_exact_spec():
    config = load_config(ROOT / "studies" / "digits.toml")
    params = {
        "n_blocks": 2, "b0_convs": 2, "b0_width": 32, "b0_kernel": 5, "b0_pool": "max", "b0_bn": True, "b0_dropout": 0.1,
        "b1_convs": 1, "b1_width": 64, "b1_kernel": 3, "b1_pool": "avg", "b1_bn": False, "b1_dropout": 0.0,
        "head": "flatten", "n_dense": 1, "d0_units": 64, "dense_dropout": 0.2,
        "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4, "batch_size": 32,
    }
    arch, train = specs_from_params(params, config.space, config.training, config.data, (1, 8, 8))
    assert arch.describe() == "c32k5x2+bn/max/d0.1 | c64k3/avg | flatten | fc64/d0.2"
    assert (train.optimizer, train.lr, train.batch_size, train.augment) == ("sgd", 0.01, 32, False)
    with pytest.raises(ValueError):  # a missing param is an error, not a silent default
        specs_from_params({k: v for k, v in params.items() if k != "b1_width"}, config.space, config.training, config.data, (1, 8, 8))


def test_seed_preset_is_exactly_the_articles_27_networks():
    config = load_config(ROOT / "studies" / "seed.toml")
    archs = enumerate_archs(config.space, (3, 32, 32))
    assert len(archs) == 27
    lines = {a.describe() for a in archs}
    for width in (32, 64, 128):
        for layers in (1, 2, 3):
            assert " | ".join([f"c{width}k3"] * layers + ["flatten"]) in lines
            assert " | ".join([f"c{width}k3/max"] * layers + ["flatten"]) in lines
            assert " | ".join([f"c{width}k3/max"] * layers + ["flatten", "fc128"]) in lines
    # and sampling only ever draws from those 27, with three real parameters
    for params, arch, _ in sample_specs(config.space, config.training, config.data, (3, 32, 32), n=40):
        assert set(params) == {"variant", "n_blocks", "width"}
        assert arch.describe() in lines


def test_variant_fields_get_their_own_param_names():
    text = 'name = "x"\n[space]\nwidths = [8, 16]\n[[space.variants]]\nname = "wide"\nwidths = [64, 128]\n[[space.variants]]\nname = "narrow"\n'
    config = parse_config(text)
    seen = set()
    for params, arch, _ in sample_specs(config.space, config.training, config.data, (1, 28, 28), n=30):
        seen.add(params["variant"])
        widths = {b.width for b in arch.blocks}
        if params["variant"] == "wide":
            assert any(k.startswith("wide.") for k in params) and widths <= {64, 128}
        else:
            assert not any("." in k for k in params) and widths <= {8, 16}
    assert seen == {"wide", "narrow"}


def test_width_range_is_log_int():
    config = parse_config('name = "x"\n[space]\nwidths = []\nwidth_range = [8, 256]\n')
    widths = {b.width for _, a, _ in sample_specs(config.space, config.training, config.data, (1, 8, 8), 40) for b in a.blocks}
    assert min(widths) >= 8 and max(widths) <= 256 and len(widths) > 5


def test_params_and_flops_match_hand_counts():
    arch = ArchSpec.from_dict({"blocks": [{"convs": 1, "width": 8, "kernel": 3, "pool": "max", "batch_norm": False, "dropout": 0.0}],
                               "head": "flatten", "dense": [16], "dense_dropout": 0.0})
    net = build_model(arch, (1, 8, 8), 10)
    conv = 8 * (1 * 3 * 3) + 8
    fc = (8 * 4 * 4) * 16 + 16
    out = 16 * 10 + 10
    assert count_params(net) == conv + fc + out
    # a multiply-add is 2 FLOPs: conv over 8x8 outputs, then the two linear layers
    assert count_flops(net, (1, 8, 8)) == 2 * (8 * 8 * 8 * 9) + 2 * (128 * 16) + 2 * (16 * 10)
    rows = summarize(net, (1, 8, 8))
    assert [r.output_shape for r in rows][:3] == [(8, 8, 8), (8, 8, 8), (8, 4, 4)]
    assert sum(r.params for r in rows) == count_params(net)
    assert sum(r.flops for r in rows) == count_flops(net, (1, 8, 8))


def test_model_module_never_imports_optuna():
    import subprocess
    import sys

    code = "import sys, bonas.model, bonas.spec; sys.exit(1 if 'optuna' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
