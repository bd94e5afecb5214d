"""bonas slurm: the rendered job-array script, the refusals, and a real one-node Slurm cluster.

The cluster is `bash .ci/slurm.sh start` (CI starts it); without it the cluster tests skip on a user's
machine and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from bonas.cli import main
from tests.helpers import FAST, audit, load, require, tiny_config_text, wait_for
from tests.servers import PG_URL, fresh_database, pg_available

pytestmark = pytest.mark.slow  # worker processes, database servers, a browser or a scheduler: not in make test-fast

SECRET = "hunter2-slurm"
FAKE_PG = f"postgresql://bonas:{SECRET}@db.example:5432/bonas"  # never contacted: --dry-run checks nothing remote
SLURM_LOGS = Path("/var/lib/bonas-slurm/log")  # .ci/slurm.sh's daemons' logs


def files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if "data" not in p.parts}


def dry_run(config: Path, *flags: str, capsys) -> str:
    assert main(["slurm", str(config), "--storage", FAKE_PG, "--dry-run", *flags]) == 0
    return capsys.readouterr().out


def sbatch_lines(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


# --- the script -------------------------------------------------------------------------------------


def test_script_runs_one_exec_worker_per_array_task(tiny_config, tmp_path, capsys):
    config = tiny_config()
    before = files(tmp_path)
    script = dry_run(
        config,
        "--workers",
        "5",
        "--cpus-per-worker",
        "3",
        "--gpus-per-worker",
        "1",
        "--time",
        "1-02:00:00",
        "--partition",
        "gpu",
        capsys=capsys,
    )
    opts = sbatch_lines(script)
    assert "--array=0-4" in opts and "--cpus-per-task=3" in opts and "--gres=gpu:1" in opts
    assert "--time=1-02:00:00" in opts and "--partition=gpu" in opts and "--requeue" in opts
    assert f"--output={tmp_path / 'tiny.slurm'}/%A_%a.out" in opts and f"--chdir={Path.cwd()}" in opts
    assert not any(o.startswith("--ntasks") for o in opts), "SLURM_NTASKS would make Lightning take a task for a srun rank"
    execs = [line for line in script.splitlines() if line.startswith("exec ")]
    bonas = Path(sys.executable).parent / "bonas"
    assert execs == [f'exec {bonas} worker {config} --threads 3 --index "$index"'], "the worker replaces the shell"
    assert "index=$((SLURM_ARRAY_TASK_ID + 5 * ${SLURM_RESTART_COUNT:-0}))" in script
    assert SECRET not in script and "db.example" not in script and "BONAS_STORAGE" in script
    assert files(tmp_path) == before, "--dry-run writes nothing"


def test_script_defaults_and_no_requeue(tiny_config, capsys):
    opts = sbatch_lines(dry_run(tiny_config(), "--workers", "1", "--no-requeue", capsys=capsys))
    assert "--array=0-0" in opts and "--cpus-per-task=1" in opts and "--no-requeue" in opts
    assert not [o for o in opts if o.startswith(("--gres", "--time", "--partition"))], "the cluster's defaults apply"


def test_the_script_itself_is_sound_bash(tiny_config, tmp_path, capsys):
    """Run the rendered script with bash, the worker replaced by `echo`: the index it computes, and its refusal
    without BONAS_STORAGE."""
    script = dry_run(tiny_config(), "--workers", "4", capsys=capsys)
    path = tmp_path / "array.sh"
    path.write_text(re.sub(r"^exec \S+", "exec echo", script, flags=re.M))
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "2", "SLURM_RESTART_COUNT": "1", "BONAS_STORAGE": FAKE_PG}
    out = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.split()[-2:] == ["--index", "6"], out
    del env["BONAS_STORAGE"]
    out = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "BONAS_STORAGE: is not set" in out.stderr


# --- refusals: one line, exit 2, nothing written ------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--dry-run"]], ids=["submit", "dry-run"])
def test_sqlite_is_refused(tiny_config, tmp_path, capsys, flags):
    config = tiny_config()
    before = files(tmp_path)
    assert main(["slurm", str(config), "--workers", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bonas: ") and "SQLite" in err and "several nodes" in err
    assert files(tmp_path) == before


def test_no_sbatch_on_path(tiny_config, tmp_path, capsys, monkeypatch):
    config = tiny_config()
    before = files(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["slurm", str(config), "--workers", "2", "--storage", FAKE_PG]) == 2
    err = capsys.readouterr().err
    assert err == (
        "bonas: sbatch is not on PATH; run bonas slurm on a Slurm login node (a one-node test cluster: bash .ci/slurm.sh start)\n"
    )
    assert files(tmp_path) == before


# --- the real cluster -----------------------------------------------------------------------------


def cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


@pytest.fixture
def cluster():
    require(cluster_up(), "no Slurm cluster answering (start one: bash .ci/slurm.sh start)")
    require(pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")


@pytest.fixture
def pg_secret(cluster):
    """A fresh database, its URL with a password (trust auth accepts it and never needs it)."""
    url, drop = fresh_database(PG_URL)
    yield url.replace("postgres@", f"postgres:{SECRET}@")
    drop()


def squeue(job: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    return out.stdout.split("\n")[:-1] if out.returncode == 0 else []


def task_records(job: str) -> dict[int, dict[str, str]]:
    """Every task's JobState and ExitCode from slurmctld (kept MinJobAge seconds after the task ended)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    records = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in out.splitlines()]
    return {int(r["ArrayTaskId"]): r for r in records if r.get("ArrayTaskId", "").isdigit()}


def diagnostics(folder: Path) -> str:
    logs = [f"== {p}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("*.slurm/*.out"))]
    for name in ("slurmctld.log", "slurmd.log"):
        p = SLURM_LOGS / name
        try:
            logs.append(f"== {p}\n" + "\n".join(p.read_text().splitlines()[-15:]))
        except OSError:  # a cluster not started by .ci/slurm.sh, or not readable by this user
            pass
    return "\n".join(logs)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--partition", "nosuch"], "Invalid partition name specified"),
        (["--workers", "100000"], "Invalid job array specification"),
    ],
    ids=["unknown partition", "array too large"],
)
def test_sbatch_refusal_is_one_line_and_leaves_nothing(tiny_config, tmp_path, capsys, pg_secret, flags, message):
    config = tiny_config()
    before = files(tmp_path)
    argv = ["slurm", str(config), "--workers", "2", "--storage", pg_secret, *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bonas: sbatch refused the job: ") and message in err and err.count("\n") == 1, err
    assert SECRET not in err
    assert files(tmp_path) == before, "no script, no log folder"


def test_existing_study_is_checked_before_submitting(tiny_config, tmp_path, capsys, pg_secret):
    """A study with another config would fail every task: refused up front; a finished one is not resubmitted."""
    import optuna

    from bonas.config import load_config
    from bonas.study.studies import create_or_resume, open_storage

    config = tiny_config(n_trials=2)
    storage = open_storage(pg_secret)
    study = create_or_resume(load_config(config), storage, pg_secret, {"input_shape": [1, 8, 8], "n_classes": 10})
    before = files(tmp_path)
    tiny_config(n_trials=2, seed=7)  # the same study name, another seed: its trials are not comparable
    assert main(["slurm", str(config), "--workers", "2", "--storage", pg_secret]) == 2
    err = capsys.readouterr().err
    assert "already exists with a different seed" in err and err.count("\n") == 1
    tiny_config(n_trials=2)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    assert main(["slurm", str(config), "--workers", "2", "--storage", pg_secret]) == 0
    assert "is finished (2 of 2 trials finished)" in capsys.readouterr().out
    assert files(tmp_path) == before, "nothing submitted"


def slow_study(folder: Path, n_trials: int) -> Path:
    """Trials of 4 epochs (a few tenths of a second each on 2 cores): the first one is caught inside fit."""
    config = folder / "par.toml"
    text = tiny_config_text(
        name="par", n_trials=n_trials, pruner="none", pruner_extra="", epochs=4, train_subset=1200, val_subset=100, extra=FAST
    )
    config.write_text(text.replace("batch_sizes = [64]", "batch_sizes = [16]"))
    return config


def submit(config: Path, url: str, workers: int, capsys) -> str:
    assert main(["slurm", str(config), "--workers", str(workers), "--cpus-per-worker", "1", "--storage", url]) == 0
    out = capsys.readouterr().out
    job = re.search(r"submitted job array (\d+)", out).group(1)
    assert f"squeue -j {job}" in out and "bonas trials" in out and "bonas dashboard" in out
    assert SECRET not in (config.parent / "par.slurm" / f"{job}.sbatch").read_text()
    return job


def freeze_in_fit(url: str, epochs: int = 4) -> tuple[FrozenTrial, int, int]:
    """A RUNNING trial inside Lightning's fit, its worker stopped (SIGSTOP) there: (trial, pid, --index).

    A real signal makes the moment deterministic: whatever Slurm sends next lands mid-training, because Slurm
    sends SIGCONT before SIGTERM (a stopped process could not act on SIGTERM). Stopped for well under the
    grace period, so no peer reaps the trial meanwhile."""

    def probe():
        try:
            trials = load(url, "par").get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the tasks have not created the study yet
            return None
        for t in trials:
            if len(t.intermediate_values) == 1:
                _, pid, index = t.user_attrs["worker"].split(":")
                os.kill(int(pid), signal.SIGSTOP)
                now = load(url, "par").trials[t.number]
                if now.state == TrialState.RUNNING and len(now.intermediate_values) < epochs:
                    return now, int(pid), int(index.removeprefix("w"))
                os.kill(int(pid), signal.SIGCONT)  # it got past fit before it stopped: try again
        return None

    return wait_for(probe, timeout=120, every=0.1, what="a task's trial inside fit")


def test_array_survives_scancel_of_a_task_mid_trial(tmp_path, pg_secret, capsys):
    """4 array tasks share a 6-trial study on 2 cores; one task is scancelled inside Lightning's fit. Its worker
    fails the trial ('interrupted by SIGTERM'), requeues the params, exits; a peer reruns them; the other tasks
    stop by themselves (exit 0) when the budget is spent."""
    url = pg_secret
    start = time.monotonic()
    job = submit(slow_study(tmp_path, 6), url, 4, capsys)
    try:
        victim, pid, task = freeze_in_fit(url)  # --index is the array task id (no restarts yet)
        first_trial = time.monotonic() - start
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert SECRET.encode() not in argv and b"worker" in argv, "the URL is in the environment, not in ps"
        cancelled = time.monotonic()
        subprocess.run(["scancel", f"{job}_{task}"], check=True, timeout=30)
        wait_for(
            lambda: load(url, "par").trials[victim.number].state == TrialState.FAIL,
            timeout=60,
            what="the cancelled trial to FAIL",
        )
        failed_after = time.monotonic() - cancelled
        wait_for(lambda: not any(line.startswith(f"{job}_{task} ") for line in squeue(job)), timeout=60, what="the task to go")
        gone_after = time.monotonic() - cancelled
        wait_for(lambda: not squeue(job), timeout=180, every=0.5, what="the array to finish")
        total = time.monotonic() - start
    except BaseException:
        subprocess.run(["scancel", job], timeout=30)
        print(diagnostics(tmp_path))
        raise
    diag = diagnostics(tmp_path)
    trials = audit(url, 6, name="par")
    t = trials[victim.number]
    assert t.state == TrialState.FAIL and t.user_attrs["end_reason"] == "interrupted by SIGTERM", diag
    retry = [x for x in trials if x.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED), (
        diag
    )
    assert sum(x.state == TrialState.FAIL for x in trials) == 1, diag
    records = task_records(job)
    assert (records[task]["JobState"], records[task]["ExitCode"]) == ("CANCELLED", "143:0"), (
        "the worker exited by itself, before KillWait"
    )
    assert {i: (r["JobState"], r["ExitCode"]) for i, r in records.items() if i != task} == {
        i: ("COMPLETED", "0:0") for i in range(4) if i != task
    }, diag
    log = (tmp_path / "par.slurm" / f"{job}_{task}.out").read_text()
    assert "interrupted by SIGTERM" in log, diag
    assert "Traceback" not in diag and SECRET not in diag
    print(
        f"\nslurm: submit -> first trial inside fit {first_trial:.1f}s; scancel -> trial FAIL {failed_after:.1f}s, "
        f"-> task gone from squeue {gone_after:.1f}s; submit -> array done {total:.1f}s "
        f"(4 tasks, at most {os.cpu_count()} at a time)"
    )


def test_requeued_task_restarts_and_rejoins_the_study(tmp_path, pg_secret, capsys):
    """`scontrol requeue` (what preemption and node failure do) of the only task, mid-trial: its worker fails and
    requeues the trial and exits; Slurm starts the task again (SLURM_RESTART_COUNT=1, a new sampler seed), and
    the restarted worker reruns the trial and finishes the study."""
    url = pg_secret
    job = submit(slow_study(tmp_path, 1), url, 1, capsys)
    try:
        victim, _, _ = freeze_in_fit(url)
        requeued = time.monotonic()
        subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True, timeout=30)
        rerun = wait_for(
            lambda: next((t for t in load(url, "par").trials if t.user_attrs.get("retry_of") == victim.number), None),
            timeout=120,
            every=0.5,
            what="the restarted task to rerun the trial",
        )
        rejoined_after = time.monotonic() - requeued
        wait_for(lambda: not squeue(job), timeout=120, every=0.5, what="the task to finish")
    except BaseException:
        subprocess.run(["scancel", job], timeout=30)
        print(diagnostics(tmp_path))
        raise
    diag = diagnostics(tmp_path)
    trials = audit(url, 1, name="par")
    assert trials[victim.number].user_attrs["end_reason"] == "interrupted by SIGTERM", diag
    assert rerun.params == victim.params and rerun.user_attrs["worker"].endswith(":w1"), "index 0 + 1 worker x 1 restart"
    record = task_records(job)[0]
    assert (record["JobState"], record["ExitCode"], record["Restarts"]) == ("COMPLETED", "0:0", "1"), diag
    log = (tmp_path / "par.slurm" / f"{job}_0.out").read_text()
    assert "interrupted by SIGTERM" in log and "done: 1 of 1 trials finished" in log, "both runs in one log (--open-mode=append)"
    print(f"\nslurm: scontrol requeue -> the restarted task reran the trial {rejoined_after:.1f}s later")
