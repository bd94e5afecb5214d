"""Standard designs as the first trials of every study: shaped to the input and the space, left out in one line
where the space cannot hold them, enqueued first in a new study and marked in the leaderboard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bonas.config import parse_config
from bonas.model.build import build_model, count_flops, resolutions
from bonas.nas.priors import DESIGNS, design_params, priors
from bonas.nas.space import specs_from_params


def describe(config, params, shape):
    return specs_from_params(params, config.space, config.training, config.data, shape)[0].describe()


def test_the_default_space_holds_every_design_on_small_images():
    config = parse_config('name = "d"\n[space]\nblock_types = ["plain", "residual"]\n')
    found = dict(priors(config, (3, 32, 32)))
    assert list(found) == list(DESIGNS)
    assert describe(config, found["2 conv + pool + BN"], (3, 32, 32)) == "c32k3+bn/max | c64k3+bn/max | flatten | fc128/d0.3"
    assert describe(config, found["VGG-style"], (3, 32, 32)) == "c32k3x2+bn/max | c64k3x2+bn/max | c128k3x2+bn/max | gap"
    assert describe(config, found["small ResNet"], (3, 32, 32)) == "r32k3x2+bn | r64k3x2+bn/max | r128k3x2+bn/max | gap"
    assert found["VGG-style"]["optimizer"] == "adamw" and found["VGG-style"]["lr"] == pytest.approx(2e-3)


def test_photos_get_the_spaces_stem_and_the_designs_see_a_resized_image():
    """An ImageFolder at 128 px: each design behind the pool stem, its blocks at 32 px as on a small image."""
    config = parse_config('name = "p"\ndataset = "imagefolder"\n[data]\nroot = "x"\nimage_size = 128\n')
    for name, params in priors(config, (3, 128, 128)):
        arch = specs_from_params(params, config.space, config.training, config.data, (3, 128, 128))[0]
        assert arch.stem is not None and arch.stem.kind == "pool" and params["stem"] == "pool", name
        assert resolutions(arch, (3, 128, 128))[1] == ("stem", 32, 32)
        build_model(arch, (3, 128, 128), 10)


def test_a_design_outside_the_space_is_left_out_in_one_line(caplog):
    """Two blocks at most and no residual blocks: the VGG-style and ResNet designs have no place; widths are
    snapped to the space's, the learning rate into its range, SGD stands in for AdamW."""
    config = parse_config(
        'name = "n"\n[training]\noptimizers = ["sgd"]\nlr = [0.01, 0.1]\n[space]\nn_blocks = [1, 2]\nwidths = [16, 48]\n'
    )
    with caplog.at_level(logging.WARNING):
        found = dict(priors(config, (1, 28, 28)))
    assert list(found) == ["2 conv + pool + BN"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "priors: VGG-style left out: n_blocks = 3 is outside [1, 2]",
        "priors: small ResNet left out: n_blocks = 3 is outside [1, 2]",
    ]
    params = found["2 conv + pool + BN"]
    arch, train = specs_from_params(params, config.space, config.training, config.data, (1, 28, 28))
    assert ([b.width for b in arch.blocks], train.optimizer, train.lr) == ([48, 48], "sgd", 0.01)
    fixed = parse_config('name = "f"\n[space]\nconvs_per_block = [1, 1]\nn_blocks = [1, 3]\n')  # no param to ask: compared
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert list(dict(priors(fixed, (1, 28, 28)))) == ["2 conv + pool + BN"]
    assert "VGG-style left out: the space makes block 0 plain x1, the design plain x2" in caplog.records[0].getMessage()


def test_priors_can_be_switched_off_and_are_narrowed_to_the_flops_limit(caplog):
    config = parse_config('name = "o"\n[warm_start]\npriors = false\n')
    assert priors(config, (3, 32, 32)) == []
    config = parse_config('name = "o"\n[space]\nblock_types = ["plain", "residual"]\n')
    with caplog.at_level(logging.INFO):
        found = dict(priors(config, (3, 32, 32), max_flops=30e6))
    assert list(found) == ["2 conv + pool + BN", "VGG-style (16-32-64)", "small ResNet (16-16-32)"]
    for name, params in found.items():
        arch = specs_from_params(params, config.space, config.training, config.data, (3, 32, 32))[0]
        assert count_flops(build_model(arch, (3, 32, 32), 10), (3, 32, 32)) <= 30e6, name
    assert "priors: VGG-style narrowed to widths 16-32-64 for the FLOPs limit of 3e+07" in caplog.messages
    caplog.clear()
    narrow = 'name = "o"\n[space]\nwidths = [32, 64]\nblock_types = ["plain", "residual"]\n'
    with caplog.at_level(logging.WARNING):  # the space's narrowest is 32 wide: the ResNet cannot fit
        found = dict(priors(parse_config(narrow), (3, 32, 32), max_flops=30e6))
    assert list(found) == ["2 conv + pool + BN"] and any(
        m.startswith("priors: small ResNet left out:") and "at its narrowest in this space, over the limit" in m
        for m in caplog.messages
    )
    with pytest.raises(Exception, match="variants"):
        design_params(DESIGNS["VGG-style"], parse_config('name = "v"\n[[space.variants]]\nname = "a"\n'), (1, 8, 8))


@pytest.mark.slow
def test_a_new_study_starts_with_the_priors_marked_in_the_leaderboard(tmp_path):
    from bonas.config import load_config
    from bonas.core import records as R
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.results.leaderboard import leaderboard
    from bonas.study.urls import resolve_storage
    from tests.helpers import write_tiny_config

    path = write_tiny_config(tmp_path, "pr", n_trials=2, epochs=1, pruner="none", pruner_extra="", priors="true")
    path.write_text(
        path.read_text().replace("widths = [4, 8]", "widths = [8, 32]").replace("n_blocks = [1, 2]", "n_blocks = [1, 3]")
    )
    config = load_config(path)
    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    queued = worker.study.trials
    assert [t.user_attrs[R.PRIOR] for t in queued] == ["2 conv + pool + BN"], "the tiny space holds one design"
    worker.run(n_trials=2, timeout=0)
    board = leaderboard(worker.study)
    assert "[prior: 2 conv + pool + BN]" in board
    assert worker.study.trials[0].user_attrs[R.PRIOR] == "2 conv + pool + BN"


SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


@pytest.mark.parametrize("preset", sorted(p.stem for p in Path("studies").glob("*.toml")))
def test_every_preset_gets_the_priors_its_space_holds(preset, caplog):
    """Each shipped preset, at its data's shape and its FLOPs limit: every design is enqueued (narrowed where the
    limit asks) or said left out in one line; only the article's 27 fixed networks (variants) hold none."""
    from bonas.config import load_config

    config = load_config(Path("studies") / f"{preset}.toml")
    shape, limit = SHAPES[config.dataset], max(0.0, config.objective.max_flops)  # auto (-1): the machine's; none here
    with caplog.at_level(logging.WARNING):
        found = dict(priors(config, shape, limit))
    left_out = [m for m in caplog.messages if m.startswith("priors: ") and " left out: " in m]
    assert len(found) + len(left_out) == len(DESIGNS), (found.keys(), left_out)
    assert (not found) == bool(config.space.variants), preset
    for name, params in found.items():
        arch = specs_from_params(params, config.space, config.training, config.data, shape)[0]
        flops = count_flops(build_model(arch, shape, 10), shape)
        assert not limit or flops <= limit, (preset, name, flops)


def test_a_fixed_block_count_that_leaves_out_a_design_is_a_line_not_a_crash(caplog):
    """n_blocks = [2, 2] is asked nothing (bench/overhead.py's space): a three-block design is left out in one line."""
    config = parse_config('name = "two"\n[space]\nn_blocks = [2, 2]\nblock_types = ["plain", "residual"]\n')
    with caplog.at_level(logging.WARNING):
        found = dict(priors(config, (1, 28, 28)))
    assert list(found) == ["2 conv + pool + BN"]
    assert [m for m in caplog.messages if m.startswith("priors: ")] == [
        "priors: VGG-style left out: the space makes 2 blocks, the design 3",
        "priors: small ResNet left out: the space makes 2 blocks, the design 3",
    ]
