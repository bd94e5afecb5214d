"""Warm starts (a TOML list, another study's top k) and identical proposals reused instead of retrained."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.config import load_config
from bonas.nas.space import enumerate_params
from bonas.study.budget import EXHAUSTED_AFTER
from bonas.study.studies import open_existing, read_trials_file
from tests.helpers import ROOT, tiny_config_text

pytestmark = pytest.mark.slow  # real trials: not in make test-fast

PLAIN = dict(sampler="random", sampler_extra="", pruner="none", pruner_extra="")  # every trial runs as enqueued, to the end


def test_the_articles_27_as_a_warm_start_file_match_the_space():
    seed = load_config(ROOT / "studies" / "seed.toml")
    listed = read_trials_file(ROOT / "studies" / "warm-start" / "seed-archs.toml")
    assert listed == enumerate_params(seed.space, (1, 8, 8))
    assert len(listed) == 27


def test_every_preset_starts_from_the_standard_designs_its_space_can_hold():
    """The priors of every preset, rebuilt from their params alone: on Fashion-MNIST the first is exactly the budget
    bench's "2 conv + pool + BN" with its hand knobs (the design no longer comes from a file written for that data)."""
    from bench.budget import BASELINE_TRAIN, BASELINES
    from bonas.nas.priors import priors
    from bonas.nas.space import specs_from_params

    shapes = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "seed": (1, 8, 8)}
    for preset in sorted(ROOT.joinpath("studies").glob("*.toml")):
        config = load_config(preset)
        shape = shapes.get(config.dataset, (3, 32, 32))
        found = dict(priors(config, shape))
        if config.space.variants:
            assert not found, "the seed preset's variants name no standard design"
            continue
        assert "2 conv + pool + BN" in found, preset.stem
        for params in found.values():
            specs_from_params(params, config.space, config.training, config.data, shape)
    config = load_config(ROOT / "studies" / "fashion-mnist.toml")
    arch, train = specs_from_params(dict(priors(config, (1, 28, 28)))["2 conv + pool + BN"], config.space, config.training,
                                    config.data, (1, 28, 28))  # fmt: skip
    assert arch == BASELINES["2 conv + pool + BN"] and train == BASELINE_TRAIN
    assert arch.describe() == "c32k3+bn/max | c64k3+bn/max | flatten | fc128/d0.3"


def test_the_seed_preset_trains_as_the_article():
    """The article's training: Adam at a constant 1e-3 (no decay, no weight decay), batch 32, 10 epochs,
    every network to the end. Fails on the earlier preset (batch 64, 6 epochs, cosine decay)."""
    from bonas.nas.space import suggest_training

    seed = load_config(ROOT / "studies" / "seed.toml")
    t = seed.training
    article = (10, [32], ["adam"], [1e-3, 1e-3], [0.0, 0.0], "constant")
    assert (t.max_epochs, t.batch_sizes, t.optimizers, t.lr, t.weight_decay, t.schedule) == article
    assert (t.warmup_epochs, t.label_smoothing, t.ema_decay) == (0.0, 0.0, 0.0)
    assert (seed.pruner.name, seed.data.augment) == ("none", "none")
    spec = suggest_training(optuna.trial.FixedTrial({}), t, seed.data)  # nothing searched: every knob is fixed
    assert (spec.optimizer, spec.lr, spec.weight_decay, spec.batch_size) == ("adam", 1e-3, 0.0, 32)


def test_warm_start_file_is_enqueued_first(tmp_path):
    (tmp_path / "warm").mkdir()
    listed = "[[trial]]\nn_blocks = 1\nb0_width = 8\nlr = 0.02\n\n[[trial]]\nn_blocks = 2\nb0_width = 4\nb1_width = 8\n"
    (tmp_path / "warm" / "list.toml").write_text(listed)
    path = tmp_path / "w.toml"
    path.write_text(tiny_config_text(name="w", n_trials=3, epochs=1, warm_start='file = "warm/list.toml"'))
    assert main(["search", str(path)]) == 0
    trials = open_existing(str(path)).study.trials
    assert trials[0].params["n_blocks"] == 1 and trials[0].params["b0_width"] == 8 and trials[0].params["lr"] == 0.02
    assert trials[1].params["n_blocks"] == 2 and trials[1].params["b1_width"] == 8
    assert len(trials) == 3


def test_top_k_of_another_study(tmp_path):
    source = tmp_path / "src.toml"
    source.write_text(tiny_config_text(name="src", n_trials=4, epochs=1, pruner="none", pruner_extra=""))
    assert main(["search", str(source)]) == 0
    src = open_existing(str(source)).study
    top = sorted(src.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.values[0])[:2]
    path = tmp_path / "dst.toml"
    path.write_text(tiny_config_text(name="dst", n_trials=2, epochs=1, warm_start=f'from_study = "{source}"\ntop_k = 2'))
    assert main(["search", str(path)]) == 0
    dst = open_existing(str(path)).study.trials
    assert [t.params for t in dst] == [t.params for t in top]


@pytest.mark.parametrize(
    "body, fragment",
    [("[[trial]]\nn_blocks = [1]\n", "must be a number"), ("oops = 1\n", "only [[trial]]"), ("[[trial\n", "TOML syntax")],
)
def test_bad_warm_start_file_is_one_line_and_writes_nothing(tmp_path, capsys, body, fragment):
    (tmp_path / "bad.toml").write_text(body)
    path = tmp_path / "w.toml"
    path.write_text(tiny_config_text(name="w", warm_start='file = "bad.toml"'))
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "bad.toml" in err
    assert not (tmp_path / "w.db").exists()


def test_identical_proposals_reuse_the_result_and_an_exhausted_space_ends_the_search(tmp_path, capsys):
    """A 4-architecture space with fixed knobs and a random sampler: repeats are certain and cost nothing; they do
    not count against n_trials (10), so all 4 architectures are trained, and once the sampler only repeats
    itself (EXHAUSTED_AFTER proposals in a row) the search ends."""
    path = tmp_path / "dup.toml"
    text = tiny_config_text(name="dup", n_trials=10, sampler="random", sampler_extra="", pruner="none", pruner_extra="", epochs=1)
    text = text.replace("lr = [3e-3, 3e-2]", "lr = [0.01, 0.01]")
    text = text.replace("weight_decay = [1e-5, 1e-3]", "weight_decay = [1e-4, 1e-4]")
    text = text.replace("n_blocks = [1, 2]", "n_blocks = [1, 1]").replace('heads = ["gap", "flatten"]', 'heads = ["flatten"]')
    text = text.replace("batch_norm = [true, false]", "batch_norm = [true]")
    text = text.replace("dense_layers = [0, 1]", "dense_layers = [0, 0]")
    path.write_text(text)  # widths {4, 8} x pooling {max, none}: 4 architectures
    assert main(["search", str(path)]) == 0
    out = capsys.readouterr().out
    study = open_existing(str(path)).study
    trials = study.trials
    reused = [t for t in trials if "reused_from" in t.user_attrs]
    trained = [t for t in trials if "reused_from" not in t.user_attrs]
    assert len(trained) == 4, "every architecture of the space measured once, whatever the sampler repeats"
    assert trials[-EXHAUSTED_AFTER:] == reused[-EXHAUSTED_AFTER:] and len(reused) >= EXHAUSTED_AFTER
    assert "the space looks exhausted" in out
    by_number = {t.number: t for t in trials}
    for t in reused:
        src = by_number[t.user_attrs["reused_from"]]
        assert "reused_from" not in src.user_attrs and src.params == t.params
        assert t.values == src.values and t.user_attrs["epochs"] == 0 and "train_seconds" not in t.user_attrs
        assert t.user_attrs["end_reason"].startswith(f"reused trial {src.number}")
    assert out.count("[reused #") == min(10 - len(trained), len(reused)), (
        "the leaderboard (top 10) says which results were reused"
    )
    assert len({t.user_attrs["spec_key"] for t in trained}) == len(trained)


def test_same_architecture_with_other_training_knobs_is_trained_not_reused(tmp_path):
    """One architecture five times: with another lr, another batch size (searched: batch_sizes = [32, 64]) or
    another weight decay it trains; only the exact repeat of trial 0 reuses its result. Fails if the reuse
    key forgot the training knobs (a reused result would then stand for a network trained differently)."""
    path = tmp_path / "knobs.toml"
    text = tiny_config_text(name="knobs", n_trials=5, epochs=1, **PLAIN)
    path.write_text(text.replace("batch_sizes = [64]", "batch_sizes = [32, 64]"))
    config = load_config(path)
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage

    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    base = {
        "n_blocks": 1,
        "b0_width": 8,
        "b0_pool": "max",
        "b0_bn": True,
        "head": "flatten",
        "n_dense": 0,
        "lr": 0.01,
        "weight_decay": 1e-4,
        "batch_size": 32,
    }
    variants = [base, {**base, "lr": 0.02}, {**base, "batch_size": 64}, {**base, "weight_decay": 1e-5}, base]
    for params in variants:
        worker.study.enqueue_trial(params)
    worker.run(n_trials=5, timeout=0)
    trials, extra = worker.study.trials[:5], worker.study.trials[5:]
    assert [t.params for t in trials] == variants and all(t.state == TrialState.COMPLETE for t in trials)
    assert len(extra) == 1 and "reused_from" not in extra[0].user_attrs, "the free repeat left room for a fifth trained trial"
    assert len({t.user_attrs["arch_line"] for t in trials}) == 1, "one architecture throughout"
    for t in trials[:4]:
        assert "reused_from" not in t.user_attrs and t.user_attrs["epochs"] == 1 and t.user_attrs["train_seconds"] > 0, t.number
    assert [t.user_attrs["train"]["batch_size"] for t in trials[:3]] == [32, 32, 64]
    repeat = trials[4]
    assert repeat.user_attrs["reused_from"] == 0 and repeat.user_attrs["epochs"] == 0 and repeat.values == trials[0].values


def test_reuse_can_be_switched_off(tmp_path):
    path = tmp_path / "nodup.toml"
    text = tiny_config_text(name="nodup", n_trials=3, epochs=1, **PLAIN)
    path.write_text(text + "\n[workers]\nreuse_duplicates = false\n")
    config = load_config(path)
    from bonas.nas.worker import Worker, prepare_worker
    from bonas.study.urls import resolve_storage

    url = resolve_storage(config)
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    same = {
        "n_blocks": 1,
        "b0_width": 8,
        "b0_pool": "max",
        "b0_bn": True,
        "head": "flatten",
        "n_dense": 0,
        "lr": 0.02,
        "weight_decay": 1e-5,
    }
    for _ in range(3):
        worker.study.enqueue_trial(same)
    worker.run(n_trials=3, timeout=0)
    assert all("reused_from" not in t.user_attrs and t.user_attrs["epochs"] == 1 for t in worker.study.trials)
