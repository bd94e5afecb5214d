"""Study configs: every preset loads; every bad input gives one line, exit 2, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bonas.cli import main
from bonas.config import COMPARABLE_SECTIONS, config_from_dict, load_config, parse_config
from bonas.core.errors import ConfigError
from tests.helpers import ROOT, tiny_config_text

PRESETS = sorted((ROOT / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_and_round_trips(path):
    config = load_config(path)
    assert config.name == path.stem
    again = config_from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


def test_defaults_fill_a_minimal_config():
    config = parse_config('name = "x"\n', source="x.toml")
    assert config.dataset == "digits"
    assert config.sampler.name == "tpe" and config.sampler.multivariate and config.sampler.group
    assert config.pruner.name == "successive-halving"
    assert config.budget.n_trials >= 1
    assert set(COMPARABLE_SECTIONS) <= set(config.to_dict())


def test_name_defaults_to_file_stem(tmp_path):
    path = tmp_path / "my-study.toml"
    path.write_text('dataset = "digits"\n')
    assert load_config(path).name == "my-study"


def run_bad(tmp_path: Path, capsys, argv: list[str]) -> str:
    """Run the CLI on bad input: exit 2, one line on stderr, no traceback, nothing written."""
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bonas: ")
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "bad input must not write anything"
    return lines[0]


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


BAD_CONFIGS = {
    "toml syntax": ("name = 'x'\n[budget\nn_trials = 3\n", ["TOML syntax error", "line 2"]),
    "unknown key": (
        tiny_config_text().replace("max_epochs = 2", "max_epoch = 2"),
        ["training.max_epoch", "did you mean 'max_epochs'"],
    ),
    "unknown table": (tiny_config_text() + "\n[sampelr]\nname = 'tpe'\n", ["unknown key 'sampelr'", "did you mean 'sampler'"]),
    "wrong type": (
        tiny_config_text().replace("n_trials = 3", 'n_trials = "3"'),
        ["budget.n_trials", "expected an integer", "string '3'"],
    ),
    "bool for int": (tiny_config_text().replace("n_trials = 3", "n_trials = true"), ["budget.n_trials", "expected an integer"]),
    "min > max": (
        tiny_config_text().replace("n_blocks = [1, 2]", "n_blocks = [3, 1]"),
        ["space.n_blocks", "min > max", "min=3, max=1"],
    ),
    "empty choices": (tiny_config_text().replace("widths = [4, 8]", "widths = []"), ["space.widths", "empty"]),
    "unknown dataset": (
        tiny_config_text().replace('dataset = "digits"', 'dataset = "digit"'),
        ["dataset", "'digit'", "did you mean 'digits'"],
    ),
    "unknown sampler": (tiny_config_text(sampler="tpee", sampler_extra=""), ["sampler.name", "'tpee'", "tpe, random, gp, nsga2"]),
    "unknown pruner": (tiny_config_text(pruner="medain", pruner_extra=""), ["pruner.name", "did you mean 'median'"]),
    "pruner arg of another pruner": (
        tiny_config_text(pruner_extra="reduction_factor = 3"),
        ["pruner.reduction_factor", "does not apply to pruner 'median'"],
    ),
    "even kernel": (tiny_config_text().replace("kernel_sizes = [3]", "kernel_sizes = [4]"), ["space.kernel_sizes", "odd"]),
    "range of one": (tiny_config_text().replace("lr = [3e-3, 3e-2]", "lr = [3e-3]"), ["training.lr", "expected [min, max]"]),
    "unknown optimizer": (
        tiny_config_text().replace('optimizers = ["adamw"]', 'optimizers = ["adamw", "lion"]'),
        ["training.optimizers", "'lion'"],
    ),
    "bad variant key": (
        tiny_config_text() + "\n[[space.variants]]\nname = 'a'\npoolng = ['max']\n",
        ["space.variants[0].poolng", "did you mean 'pooling'"],
    ),
    "variant without name": (tiny_config_text() + "\n[[space.variants]]\npooling = ['max']\n", ["space.variants[0].name"]),
    "bad study name": (tiny_config_text(name="a b"), ["name", "letters, digits"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    text, fragments = BAD_CONFIGS[case]
    path = write(tmp_path, text)
    line = run_bad(tmp_path, capsys, ["search", path])
    assert path in line
    for fragment in fragments:
        assert fragment in line, line


def test_missing_config(tmp_path, capsys):
    line = run_bad(tmp_path, capsys, ["search", str(tmp_path / "nope.toml")])
    assert "nope.toml: no such config file" in line


def test_unknown_study_name_lists_known_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main(["search", "no-such-study"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no study config named 'no-such-study'" in err and "digits" in err


def test_unreadable_config(tmp_path, capsys):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"name = \xff\xfe\n")
    line = run_bad(tmp_path, capsys, ["search", str(path)])
    assert "cannot read config" in line
    line = run_bad(tmp_path, capsys, ["search", str(tmp_path)])
    assert "is a directory" in line or "no such config" in line


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("postgresql//user@host/db", "malformed storage URL"),
        ("oracle://u@h/db", "unsupported storage 'oracle'"),
        ("sqlite://", "needs a file path"),
        ("postgresql://user@/db", "names no host"),
        ("mysql+nosuchdriver://u@h/db", "not installed"),
    ],
)
def test_bad_storage_url(tmp_path, capsys, tiny_config, url, fragment):
    path = tiny_config()
    line = run_bad(tmp_path, capsys, ["search", str(path), "--storage", url])
    assert fragment in line and "--storage" in line


def test_bad_storage_url_in_config(tmp_path, capsys):
    path = write(tmp_path, tiny_config_text(extra="").replace("seed = 0", 'seed = 0\nstorage = "postgres ql://x"'))
    line = run_bad(tmp_path, capsys, ["search", path])
    assert path in line and "storage" in line


def test_password_never_echoed(tmp_path, capsys, tiny_config):
    line = run_bad(tmp_path, capsys, ["search", str(tiny_config()), "--storage", "oracle://bob:s3cret@h/db"])
    assert "s3cret" not in line and "***" in line


def test_storage_url_env_var_must_be_set(tmp_path, capsys, tiny_config, monkeypatch):
    monkeypatch.delenv("BONAS_TEST_NO_SUCH_URL", raising=False)
    line = run_bad(tmp_path, capsys, ["search", str(tiny_config()), "--storage", "${BONAS_TEST_NO_SUCH_URL}"])
    assert "BONAS_TEST_NO_SUCH_URL" in line and "not set" in line


def test_unwritable_studies_directory(tmp_path, capsys, tiny_config):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = run_bad(tmp_path, capsys, ["search", str(tiny_config()), "--storage", f"sqlite:///{blocker}/studies/x.db"])
    assert "not writable" in line
    # procfs refuses new files even to root
    line = run_bad(tmp_path, capsys, ["search", str(tiny_config()), "--storage", "sqlite:////proc/bonas-test/x.db"])
    assert "not writable" in line


@pytest.mark.slow
def test_unwritable_directory_by_permissions(tmp_path_factory, tiny_config):
    """A directory without write permission (as root: with the permission-override capability dropped)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="bonas-perm-"))
    try:
        base.chmod(0o755)
        config = base / "tiny.toml"
        config.write_text(tiny_config().read_text())
        config.chmod(0o644)
        locked = base / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        argv = [sys.executable, "-m", "bonas", "search", str(config), "--storage", f"sqlite:///{locked}/x.db"]
        if os.geteuid() == 0:  # root without the capability to override permission bits
            caps = "-dac_override,-dac_read_search"
            argv = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *argv]
        env = {**os.environ, "BONAS_DATA_DIR": str(base / "data")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=base, env=env)
        assert proc.returncode == 2, proc.stderr
        assert "not writable" in proc.stderr and "Traceback" not in proc.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("argv, fragment", [(["--n-trials", "0"], "must be >= 1"), (["--timeout", "-5"], "must be >= 0")])
def test_bad_flags(tiny_config, capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        main(["search", str(tiny_config()), *argv])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bad_input_from_a_real_process(tmp_path):
    """The installed entry point, not just main(): exit 2, one line, no traceback, no database."""
    path = write(tmp_path, tiny_config_text().replace("n_blocks = [1, 2]", "n_blocks = [2, 1]"))
    proc = subprocess.run([sys.executable, "-m", "bonas", "search", path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "space.n_blocks: min > max" in proc.stderr
    assert not list(tmp_path.glob("*.db"))


def test_config_error_is_a_bonas_error():
    with pytest.raises(ConfigError, match=r"<config>: budget.timeout: must be >= 0"):
        parse_config('name = "x"\n[budget]\ntimeout = -1\n')
