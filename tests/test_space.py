"""Space -> ArchSpec -> model, over many sampled trials, for every preset and the input sizes we support."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch

from bonas.config import load_config, parse_config
from bonas.core.spec import ArchSpec
from bonas.model.build import build_model, count_flops, count_params, summarize
from bonas.nas.space import enumerate_params, specs_from_params, suggest_arch, suggest_training
from tests.helpers import ROOT

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
PRESETS = sorted((ROOT / "studies").glob("*.toml"))


def enumerate_archs(space, input_shape):
    """The distinct architectures of an all-categorical space."""
    found = {}
    for params in enumerate_params(space, input_shape):
        spec = suggest_arch(optuna.trial.FixedTrial(params), space, input_shape)
        found.setdefault(spec.to_json(), spec)
    return list(found.values())


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


@pytest.mark.slow
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
    trial = optuna.trial.FixedTrial(
        {f"b{i}_width": 16 for i in range(4)}
        | {f"b{i}_kernel": 3 for i in range(4)}
        | {f"b{i}_convs": 1 for i in range(4)}
        | {f"b{i}_bn": False for i in range(4)}
        | {f"b{i}_dropout": 0.0 for i in range(4)}
        | {"head": "gap", "n_dense": 0}
    )
    arch = suggest_arch(trial, space, (1, 8, 8))  # pooling has one choice: fixed, never a param
    assert [b.pool for b in arch.blocks] == ["max", "max", "max", "none"]


def test_fixed_trial_gives_the_exact_spec():
    config = load_config(ROOT / "studies" / "digits.toml")
    params = {
        "n_blocks": 2,
        "b0_convs": 2,
        "b0_width": 32,
        "b0_kernel": 5,
        "b0_pool": "max",
        "b0_bn": True,
        "b0_dropout": 0.1,
        "b1_convs": 1,
        "b1_width": 64,
        "b1_kernel": 3,
        "b1_pool": "avg",
        "b1_bn": False,
        "b1_dropout": 0.0,
        "head": "flatten",
        "n_dense": 1,
        "d0_units": 64,
        "dense_dropout": 0.2,
        "optimizer": "sgd",
        "lr": 0.01,
        "weight_decay": 1e-4,
        "batch_size": 32,
    }
    arch, train = specs_from_params(params, config.space, config.training, config.data, (1, 8, 8))
    assert arch.describe() == "c32k5x2+bn/max/d0.1 | c64k3/avg | flatten | fc64/d0.2"
    assert (train.optimizer, train.lr, train.batch_size, train.augment) == ("sgd", 0.01, 32, False)
    with pytest.raises(ValueError):  # a missing param is an error, not a silent default
        specs_from_params(
            {k: v for k, v in params.items() if k != "b1_width"}, config.space, config.training, config.data, (1, 8, 8)
        )


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
    text = (
        'name = "x"\n[space]\nwidths = [8, 16]\n[[space.variants]]\nname = "wide"\nwidths = [64, 128]\n'
        '[[space.variants]]\nname = "narrow"\n'
    )
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
    arch = ArchSpec.from_dict(
        {
            "blocks": [{"convs": 1, "width": 8, "kernel": 3, "pool": "max", "batch_norm": False, "dropout": 0.0}],
            "head": "flatten",
            "dense": [16],
            "dense_dropout": 0.0,
        }
    )
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


@pytest.mark.slow
def test_model_module_never_imports_optuna():
    import subprocess
    import sys

    code = "import sys, bonas.model.build, bonas.core.spec; sys.exit(1 if 'optuna' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


KINDS = (
    'name = "k"\n[space]\nn_blocks = [1, 4]\nwidths = [4, 8, 16]\nblock_types = ["plain", "residual", "separable"]\n'
    "width_multipliers = [0.5, 1.5]\n"
)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8x1", "28x28x1", "32x32x3"])
def test_block_types_and_width_multipliers_sample_build_and_run(shape):
    config = parse_config(KINDS)
    kinds = set()
    for params, arch, train in sample_specs(config.space, config.training, config.data, shape, n=25, seed=1):
        for i, b in enumerate(arch.blocks):
            assert b.kind == params[f"b{i}_type"]
            assert b.width == max(1, round(params[f"b{i}_width"] * params["width_mult"])), "the spec holds the final width"
            kinds.add(b.kind)
        assert build_model(arch, shape, n_classes=10)(torch.randn(2, *shape)).shape == (2, 10)
        assert specs_from_params(params, config.space, config.training, config.data, shape) == (arch, train)
        assert ArchSpec.from_json(arch.to_json()) == arch
    assert kinds == {"plain", "residual", "separable"}


def test_configs_without_the_new_fields_keep_their_params_and_specs():
    base = 'name = "x"\n[space]\nwidths = [8, 16]\n'
    explicit = parse_config(base + 'block_types = ["plain"]\nwidth_multipliers = [1.0]\n')
    implicit = parse_config(base)
    a = sample_specs(implicit.space, implicit.training, implicit.data, (1, 28, 28), n=20, seed=5)
    b = sample_specs(explicit.space, explicit.training, explicit.data, (1, 28, 28), n=20, seed=5)
    assert [(p, arch) for p, arch, _ in a] == [(p, arch) for p, arch, _ in b]
    assert not any(k.endswith("type") or k == "width_mult" for p, _, _ in a for k in p)
    assert all('"kind"' not in arch.to_json() for _, arch, _ in a)


def test_tied_blocks_share_one_type_and_a_multiplier_floors_at_one_channel():
    space = parse_config(
        'name = "x"\n[space]\ntie_blocks = true\nwidths = [1, 16]\nblock_types = ["residual", "separable"]\n'
        "width_multipliers = [0.25, 2.0]\n"
    ).space
    params = {
        "n_blocks": 3,
        "width_mult": 0.25,
        "type": "separable",
        "convs": 1,
        "width": 1,
        "kernel": 3,
        "pool": "max",
        "bn": True,
        "dropout": 0.0,
        "head": "gap",
        "n_dense": 0,
    }
    arch = suggest_arch(optuna.trial.FixedTrial(params), space, (1, 28, 28))
    assert [(b.kind, b.width) for b in arch.blocks] == [("separable", 1)] * 3
    arch = suggest_arch(
        optuna.trial.FixedTrial({**params, "width_mult": 2.0, "width": 16, "type": "residual"}), space, (1, 28, 28)
    )
    assert arch.describe() == "r32k3+bn/max | r32k3+bn/max | r32k3+bn/max | gap"


def test_variants_override_block_types_and_multipliers():
    text = (
        'name = "x"\n[space]\nn_blocks = [1, 1]\nwidths = [8]\n[[space.variants]]\nname = "res"\n'
        'block_types = ["residual", "separable"]\n'
        'width_multipliers = [1.0, 2.0]\n[[space.variants]]\nname = "flat"\n'
    )
    config = parse_config(text)
    for params, arch, _ in sample_specs(config.space, config.training, config.data, (1, 8, 8), n=20):
        if params["variant"] == "res":
            assert params["res.b0_type"] == arch.blocks[0].kind != "plain"
            assert arch.blocks[0].width == 8 * params["res.width_mult"]
        else:
            assert not any("type" in k or "mult" in k for k in params) and arch.blocks[0].kind == "plain"


def test_block_types_and_multipliers_enumerate():
    space = parse_config(
        'name = "x"\n[space]\nn_blocks = [1, 1]\nconvs_per_block = [1, 1]\nwidths = [8]\nkernel_sizes = [3]\npooling = ["max"]\n'
        'batch_norm = [true]\ndropout = [0.0, 0.0]\nheads = ["gap"]\ndense_layers = [0, 0]\n'
        'block_types = ["plain", "residual", "separable"]\nwidth_multipliers = [1.0, 2.0]\n'
    ).space
    assert {a.describe() for a in enumerate_archs(space, (1, 8, 8))} == {f"{k}{w}k3+bn/max | gap" for k in "crs" for w in (8, 16)}


@pytest.mark.parametrize(
    "space, message",
    [
        (
            'block_types = ["resnet"]',
            "x.toml: space.block_types: unknown value 'resnet'; choose one of: plain, residual, separable",
        ),
        ("block_types = []", "x.toml: space.block_types: the choice list is empty"),
        ("width_multipliers = [1.0, 0]", "x.toml: space.width_multipliers: multipliers must be > 0"),
        ("width_multipliers = [1.0, 1]", "x.toml: space.width_multipliers: choices must be unique, got [1.0, 1.0]"),
        ('width_multipliers = ["wide"]', "x.toml: space.width_multipliers[0]: expected a number, got string 'wide'"),
        (
            '[[space.variants]]\nname = "v"\nblock_types = ["plain", "sep"]',
            "x.toml: space.variants[0] (v).block_types: unknown value 'sep'",
        ),
    ],
)
def test_bad_block_types_and_multipliers_are_one_line_errors(space, message):
    from bonas.core.errors import ConfigError
    from bonas.nas.choices import check_choices

    with pytest.raises(ConfigError) as err:
        check_choices(parse_config(f'name = "x"\n[space]\n{space}\n', source="x.toml"))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_large_image_gets_a_stem_a_small_one_none():
    """128 px: the stem and its width are params and the blocks see 32 px (stride 4, auto); 32 px: no stem param at
    all, so a small-image study has exactly the params it always had."""
    from bonas.model.build import build_model, resolutions

    space = parse_config('name = "s"\n').space
    for seed in range(6):
        big = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        arch = suggest_arch(big, space, (3, 128, 128))
        assert "stem" in big.params
        if big.params["stem"] == "none":
            assert arch.stem is None and "stem_width" not in big.params
            continue
        assert arch.stem.stride == 4 and arch.stem.width == big.params.get("stem_width", 0)
        assert ("stem_width" in big.params) == (arch.stem.kind != "pool"), "the pool stem has no width of its own"
        assert resolutions(arch, (3, 128, 128))[:2] == [("input", 128, 128), ("stem", 32, 32)]
        net = build_model(arch, (3, 128, 128), 10)
        assert net(torch.zeros(2, 3, 128, 128)).shape == (2, 10)
        first = next(name for name, _ in net.named_children() if name.startswith("b0_"))
        channels = arch.stem.width or 3
        assert tuple(dict(net.named_children())[first](torch.zeros(1, channels, 32, 32)).shape[-2:]) == (32, 32)
    small = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert suggest_arch(small, space, (3, 32, 32)).stem is None and not any("stem" in k for k in small.params)


def test_stem_strides_follow_the_image_and_stored_specs_without_one_stay_the_same():
    from bonas.core.spec import ArchSpec
    from bonas.nas.space import stem_stride

    space = parse_config('name = "s"\n').space
    assert [stem_stride(space, s) for s in (8, 28, 32, 64, 96, 128, 160, 224)] == [1, 1, 1, 2, 4, 4, 4, 8]
    assert stem_stride(dataclasses.replace(space, stem_stride=1), 224) == 1
    plain = suggest_arch(optuna.trial.FixedTrial({"n_blocks": 1, "b0_convs": 1, "b0_width": 16, "b0_kernel": 3,
                                                  "b0_pool": "max", "b0_bn": True, "b0_dropout": 0.0, "head": "gap",
                                                  "n_dense": 0}), space, (1, 28, 28))  # fmt: skip
    assert "stem" not in plain.to_dict() and ArchSpec.from_json(plain.to_json()) == plain


def test_the_auto_flops_limit_is_set_once_per_study_and_holds_every_worker(tmp_path):
    from bonas.core import records as R
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage
    from tests.helpers import write_tiny_config

    path = write_tiny_config(tmp_path, "auto", n_trials=1, epochs=1)
    config = load_config(path)
    assert config.objective.max_flops == -1
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    limits = worker.study.user_attrs[R.STUDY_LIMITS]
    n_train = worker.study.user_attrs[R.STUDY_DATA]["n_train"]
    assert limits["max_flops"] > 0 and f"an epoch of {n_train} images" in limits["why"]
    assert worker.objective.max_flops == limits["max_flops"]
    worker.study.set_user_attr(R.STUDY_LIMITS, {"max_flops": 1.0, "why": "a later worker reads the study's own"})
    again = Worker(config, url, prepare_worker(config, url, verbose=False))
    assert again.objective.max_flops == 1.0
    again.run(n_trials=1, timeout=0)
    (trial,) = again.study.trials
    assert trial.user_attrs[R.INFEASIBLE] and trial.user_attrs[R.EPOCHS] == 0, "over the study's limit: never trained"
