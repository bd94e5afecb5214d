"""Parallel workers on one study, with real processes, real signals and real database servers.

Every test ends with the same audit: exactly n_trials finished (COMPLETE + PRUNED), trial numbers unique
and dense, nothing left RUNNING or WAITING.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from bonas.cli import main
from bonas.config import load_config
from bonas.nas.worker import Worker, prepare_worker
from bonas.study.storage import open_storage
from tests.helpers import FAST, audit, load, require, sqlite_url, wait_for, write_tiny_config
from tests.servers import MYSQL_URL, PG_URL, PrivatePostgres, fresh_database, mysql_available, pg_available

pytestmark = pytest.mark.slow  # worker processes, database servers, a browser or a scheduler: not in make test-fast

BIN = Path(sys.executable).parent
# ~0.5 s per epoch on 2 cores, 3 epochs: long enough to catch a trial inside Lightning's fit
SLOW = dict(epochs=3, train_subset=600, val_subset=100, extra=FAST)


def slow_config(folder: Path, name: str = "par", n_trials: int = 4, **kw) -> Path:
    path = write_tiny_config(folder, name, n_trials=n_trials, pruner="none", pruner_extra="", **{**SLOW, **kw})
    path.write_text(path.read_text().replace("batch_sizes = [64]", "batch_sizes = [16]"))
    return path


class Proc:
    """A `bonas worker` process with its output in files (pipes could fill and block it)."""

    def __init__(self, folder: Path, config: Path, url: str, index: int, netns: str | None = None, cmd: str = "worker"):
        self.out = folder / f"worker{index}-{time.monotonic_ns()}.out"
        self.err = self.out.with_suffix(".err")
        argv = [str(BIN / "bonas"), cmd, str(config), "--storage", url]
        if cmd == "worker":
            argv += ["--index", str(index)]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        # one torch thread each, as `bonas search --workers N` gives its N workers their share of the cores: two
        # processes with a thread per core each oversubscribe this 2-core machine (a 3-epoch trial: 13-18 s, not 0.4 s)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BONAS_THREADS": "1"}
        self.p = subprocess.Popen(argv, stdout=open(self.out, "w"), stderr=open(self.err, "w"), env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def wait(self, timeout: float = 300) -> int:
        return self.p.wait(timeout=timeout)

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def kill(self, sig: int) -> None:
        os.kill(self.p.pid, sig)


def running_in_fit(url: str, pid: int | None = None, name: str = "par"):
    """A RUNNING trial (of worker ``pid``) that has reported its first epoch and no other: it is inside
    Lightning's fit with epochs still to go, so a signal sent now lands mid-training."""

    def probe():
        try:
            trials = load(url, name).get_trials(states=(TrialState.RUNNING,))
        except Exception:
            return None
        for t in trials:
            if len(t.intermediate_values) == 1 and (pid is None or f":{pid}:" in t.user_attrs.get("worker", "")):
                return t
        return None

    return probe


def reaped_by(worker: Proc, grace: int = 3) -> str:
    """The end_reason a peer (worker index 1) writes on a dead worker's trial (bonas.study.budget), as a regex."""
    name = f"{re.escape(os.uname().nodename)}:{worker.pid}:w1"
    return rf"worker lost: no heartbeat (for|at all in) \d+s \(grace period {grace}s\); reaped by {name}"


def dropped(trial: int) -> str:
    """What a worker prints when it finds its trial failed by a peer (bonas.nas.worker, bonas.objective.TrialGuard)."""
    return rf"trial {trial} dropped: a peer failed (trial {trial}|this trial|it) while this worker was away"


@pytest.fixture
def pg_db():
    require(pg_available(), "PostgreSQL is not running on 127.0.0.1:5432")
    url, drop = fresh_database(PG_URL)
    yield url
    drop()


@pytest.fixture
def mysql_db():
    require(mysql_available(), "MariaDB/MySQL is not running on 127.0.0.1:3306")
    url, drop = fresh_database(MYSQL_URL)
    yield url
    drop()


# --- the budget (its accounting: tests/test_budget.py) -----------------------------------------------


def test_workers_flag_finishes_exactly_the_budget(tmp_path):
    config = write_tiny_config(tmp_path, "par", n_trials=5, epochs=1, train_subset=200, val_subset=100, extra=FAST)
    url = sqlite_url(tmp_path)
    argv = [str(BIN / "bonas"), "search", str(config), "--workers", "2"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = audit(url, 5)
    assert len({t.user_attrs["worker"].split(":")[1] for t in trials}) >= 2, "several processes shared the study"
    assert "Traceback" not in proc.stderr


def test_sqlite_four_workers_without_lock_errors(tmp_path):
    """3 workers x 15 trials on one SQLite file: zero 'database is locked' anywhere, exact budget."""
    config = write_tiny_config(tmp_path, "par", n_trials=45, epochs=1, train_subset=32, val_subset=16, extra=FAST)
    url = sqlite_url(tmp_path)
    workers = [Proc(tmp_path, config, url, i) for i in range(3)]
    for w in workers:
        assert w.wait(600) == 0, w.text()
    text = "".join(w.text() for w in workers)
    assert "database is locked" not in text and "Traceback" not in text
    audit(url, 45)


def test_workers_started_at_once_on_an_empty_postgres_database_all_succeed(tmp_path, pg_db):
    config = write_tiny_config(tmp_path, "par", n_trials=8, epochs=1, train_subset=64, val_subset=32, extra=FAST)
    workers = [Proc(tmp_path, config, pg_db, i) for i in range(4)]
    codes = [w.wait(600) for w in workers]
    assert codes == [0] * 4, "\n".join(w.text()[-1500:] for w in workers)
    audit(pg_db, 8)


def test_mariadb_workers_share_a_study(tmp_path, mysql_db):
    config = write_tiny_config(tmp_path, "par", n_trials=6, epochs=1, train_subset=64, val_subset=32, extra=FAST)
    workers = [Proc(tmp_path, config, mysql_db, i) for i in range(2)]
    assert [w.wait(600) for w in workers] == [0, 0], "\n".join(w.text()[-1500:] for w in workers)
    audit(mysql_db, 6)


# --- failures ------------------------------------------------------------------------------------------


def test_killed_workers_trials_are_failed_and_retried(tmp_path):
    """Two deaths at once: a worker SIGKILLed inside Lightning's fit, and one that died right after creating
    its trial (a RUNNING trial with no heartbeat at all, which Optuna itself never reaps). A peer fails
    both once the grace period has passed and reruns the killed trial's params. On SQLite; the stalled worker below
    is the same reaping (bonas.study.claims: a peer fails a silent trial and requeues it) on PostgreSQL."""
    url = sqlite_url(tmp_path)
    config = slow_config(tmp_path, n_trials=4)
    a = Proc(tmp_path, config, url, 0)
    victim = wait_for(running_in_fit(url, a.pid), what="worker 0 inside fit")
    storage = open_storage(url)
    study = optuna.load_study(study_name="par", storage=storage)
    orphan = storage.create_new_trial(study._study_id)  # what a worker killed before its first heartbeat leaves
    a.kill(signal.SIGKILL)
    assert a.wait(30) == -signal.SIGKILL
    killed_at = time.monotonic()
    b = Proc(tmp_path, config, url, 1)
    assert b.wait(600) == 0, b.text()
    trials = audit(url, 4)
    failed = sorted(t.number for t in trials if t.state == TrialState.FAIL)
    assert failed == sorted([victim.number, storage.get_trial(orphan).number])
    for t in trials:
        if t.state == TrialState.FAIL:  # failed by the peer, which says so: not by the dying worker
            assert re.fullmatch(reaped_by(b), t.user_attrs["end_reason"]), t.user_attrs["end_reason"]
    assert "no heartbeat at all" in storage.get_trial(orphan).user_attrs["end_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    recovered = (retry[0].datetime_start - study.trials[victim.number].datetime_complete).total_seconds()
    print(
        f"recovery: trial {victim.number} failed by the peer, its retry started {recovered:.1f}s later; "
        f"study done {time.monotonic() - killed_at:.1f}s after the kill"
    )


@pytest.mark.parametrize(
    "sig, code, storage",
    [(signal.SIGTERM, 143, "postgresql"), (signal.SIGINT, 130, "sqlite")],
    ids=["SIGTERM-postgresql", "Ctrl-C-sqlite"],
)
def test_signal_inside_lightning_fit(tmp_path, request, sig, code, storage):
    """SIGTERM or SIGINT (Ctrl-C) inside fit: the trial ends FAIL with the reason, its params wait in the
    queue, the worker exits cleanly (143 / 130) without a traceback; the study then finishes exactly. Each signal
    on one storage: the two take the same path in bonas (SignalGuard, fail_and_requeue), which each storage serves."""
    config = slow_config(tmp_path, n_trials=3)
    url = sqlite_url(tmp_path) if storage == "sqlite" else request.getfixturevalue("pg_db")
    w = Proc(tmp_path, config, url, 0)
    victim = wait_for(running_in_fit(url, w.pid), what="a trial inside fit")
    w.kill(sig)
    assert w.wait(60) == code, w.text()
    assert "Traceback" not in w.text()
    study = load(url)
    t = study.trials[victim.number]
    assert t.state == TrialState.FAIL and t.user_attrs["end_reason"] == f"interrupted by {signal.Signals(sig).name}"
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == victim.params, "its params wait in the queue"
    cfg = load_config(config)  # finish in this process: a new worker process would only add start-up time
    Worker(cfg, url, prepare_worker(cfg, url, verbose=False)).run(n_trials=3, timeout=0)
    trials = audit(url, 3)
    retry = next(x for x in trials if x.user_attrs.get("retry_of") == victim.number)
    assert retry.params == victim.params and retry.user_attrs["seed"] == victim.user_attrs["seed"]
    assert retry.user_attrs["resumed_at_epoch"] >= 1, "it went on from the state the interrupted trial saved"


def test_stalled_worker_drops_its_failed_trial_and_carries_on(tmp_path, pg_db):
    """A worker stopped (SIGSTOP) inside fit goes silent: a peer fails its trial once the grace period has passed and
    reruns its params; resumed (SIGCONT), the stalled worker finds its trial failed, drops it and carries on. On
    PostgreSQL; the killed worker above is the same reaping on SQLite."""
    url = pg_db
    config = slow_config(tmp_path, n_trials=3)
    a = Proc(tmp_path, config, url, 0)
    victim = wait_for(running_in_fit(url, a.pid), what="worker 0 inside fit")
    a.kill(signal.SIGSTOP)
    b = Proc(tmp_path, config, url, 1)
    wait_for(
        lambda: load(url).trials[victim.number].state == TrialState.FAIL,
        timeout=120,
        what="the peer to fail the stalled trial",
    )
    a.kill(signal.SIGCONT)
    assert a.wait(600) == 0, a.text()
    assert b.wait(600) == 0, b.text()
    assert re.search(dropped(victim.number), a.text()) and re.search(rf":{a.pid}:w0: done: .*, 1 dropped,", a.text()), a.text()
    assert "Traceback" not in a.text()
    trials = audit(url, 3)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    assert re.fullmatch(reaped_by(b), trials[victim.number].user_attrs["end_reason"])
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params, "the dropped trial's params were requeued and run"


def test_database_outage_longer_than_the_grace_period_fails_no_healthy_trial(tmp_path):
    """The database goes down for 7 s mid-trial with a grace period of 4 s: every heartbeat is older than the
    grace period when it comes back, yet no worker reaps a peer's healthy trial (each was cut off itself),
    and no trial is lost or trained twice."""
    require(pg_available() or Path("/usr/lib/postgresql").is_dir(), "PostgreSQL server binaries are not installed")
    server = PrivatePostgres()
    try:
        url = server.url()
        config = slow_config(tmp_path, n_trials=5, extra="[workers]\nheartbeat_interval = 1\ngrace_period = 4\n")
        workers = [Proc(tmp_path, config, url, i) for i in range(2)]
        wait_for(running_in_fit(url), what="a trial inside fit")
        server.restart(down_s=7)
        codes = [w.wait(600) for w in workers]
        assert codes == [0, 0], "\n".join(w.text()[-2000:] for w in workers)
        trials = audit(url, 5)
        assert not [t for t in trials if t.state == TrialState.FAIL], "no trial lost to the restart"
        logs = "".join(w.text() for w in workers)
        assert "storage unavailable" in logs, "the workers did see the outage and retried"
    finally:
        server.close()


def test_nan_loss_is_pruned_as_diverged_and_survived(tiny_config):
    """A real divergence (AdamW at lr 1e12: the loss is NaN by the third step) ends the trial PRUNED,
    "diverged", and the worker carries on with the next trial."""
    path = tiny_config(n_trials=2, pruner="none", pruner_extra="", sampler="random", sampler_extra="")
    config = load_config(path)
    url = f"sqlite:///{path.with_suffix('.db')}"
    worker = Worker(config, url, prepare_worker(config, url, verbose=False))
    net = {"n_blocks": 1, "b0_width": 8, "b0_pool": "max", "b0_bn": True, "head": "flatten", "n_dense": 0, "weight_decay": 1e-5}
    worker.study.enqueue_trial({**net, "lr": 1e12})
    summary = worker.run(n_trials=2, timeout=0)
    trials = worker.study.trials
    reasons = [t.user_attrs["end_reason"] for t in trials]
    assert trials[0].state == TrialState.PRUNED and reasons[0].startswith("diverged"), reasons
    assert trials[1].state in (TrialState.COMPLETE, TrialState.PRUNED) and not reasons[1].startswith("diverged"), reasons
    assert summary.finished == 2 and summary.failed == 0 and len(trials) == 2


# Reports the VmPeak (peak virtual size: what RLIMIT_AS limits) of a `bonas worker` run as it exits.
VMPEAK_PROBE = """import atexit, sys
atexit.register(lambda: print("VmPeak", open("/proc/self/status").read().split("VmPeak:")[1].split()[0], file=sys.stderr))
from bonas.cli import main
sys.exit(main(sys.argv[1:]))
"""
HEADROOM = 1536 * 2**20  # address space the limited worker gets beyond its measured baseline
DENSE_BYTES_PER_UNIT = 4 * (8 * 4 * 4 + 1 + 10)  # float32 weights per hidden unit: 8x4x4 inputs, bias, 10 outputs


def test_real_out_of_memory_fails_the_trial_frees_its_memory_and_the_worker_goes_on(tmp_path):
    """A `bonas worker` under an address-space limit (RLIMIT_AS: its measured baseline + HEADROOM) meets a
    trial too big for it: its weights take 35% of the headroom, its gradients as much again, and Adam's
    first state tensor no longer fits. The trial ends FAIL "out of memory" (the CPU allocator's own
    failure, nothing injected). The next trial needs ~76% of the headroom (measured: ~6x its weights), so
    it completes only if the failed trial's weights (35%) were released; then a small one. The worker
    exits 0, without a traceback. Fails if a failed trial's memory is kept (measured: keeping the failed
    Outcome, or only its weights, alive in Worker.run_trial makes the second trial FAIL out of memory too)
    or if allocation failures stop being recorded as "out of memory"."""
    import resource

    path = write_tiny_config(
        tmp_path,
        "oom",
        n_trials=1,
        epochs=1,
        train_subset=128,
        val_subset=64,
        sampler="random",
        sampler_extra="",
        pruner="none",
        pruner_extra="",
    )
    url = sqlite_url(tmp_path)
    # The same threads and malloc arenas on any machine, and never a GPU: the baseline must be reproducible.
    env = {**os.environ, "BONAS_THREADS": "2", "MALLOC_ARENA_MAX": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    argv = ["worker", str(path), "--storage", url]
    calibration = subprocess.run(
        [sys.executable, "-c", VMPEAK_PROBE, *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert calibration.returncode == 0, calibration.stderr[-2000:]
    baseline = int(re.search(r"^VmPeak (\d+)$", calibration.stderr, re.M)[1]) * 1024  # one small trial run: the worker's baseline
    limit = baseline + HEADROOM

    study = load(url, "oom")
    small = {
        "n_blocks": 1,
        "b0_width": 8,
        "b0_pool": "max",
        "b0_bn": False,
        "head": "flatten",
        "n_dense": 1,
        "d0_units": 16,
        "lr": 0.0123,
        "weight_decay": 1e-5,
    }
    big, medium = (round(f * HEADROOM / DENSE_BYTES_PER_UNIT) for f in (0.35, 0.13))  # d0_units beyond its range: Optuna warns
    for units in (big, medium, 16):
        study.enqueue_trial({**small, "d0_units": units})
    path.write_text(path.read_text().replace("n_trials = 1", "n_trials = 3"))

    def limit_address_space():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    run = subprocess.run(
        [str(BIN / "bonas"), *argv], capture_output=True, text=True, env=env, timeout=300, preexec_fn=limit_address_space
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Traceback" not in out, out[-3000:]
    trials = load(url, "oom").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"], out[-3000:]
    reason = trials[1].user_attrs["end_reason"]
    assert reason.startswith("out of memory") and "can't allocate memory" in reason, reason
    assert trials[1].user_attrs["params"] * 4 > 0.3 * HEADROOM, "the failed trial held a large part of the headroom"
    assert [t.params["d0_units"] for t in trials[1:]] == [big, medium, 16] and "reused_from" not in trials[3].user_attrs
    print(
        f"baseline {baseline / 2**30:.2f} GiB, limit {limit / 2**30:.2f} GiB; "
        f"trial 1 ({trials[1].user_attrs['params']:,} params): {reason}"
    )


def test_password_never_shows(tmp_path, pg_db, monkeypatch):
    secret = "s3cr3t-pw-71"
    url = pg_db.replace("postgres@", f"postgres:{secret}@")  # trust auth: accepted, never needed
    config = write_tiny_config(tmp_path, "par", n_trials=2, epochs=1, train_subset=64, val_subset=32, extra=FAST)
    env = {**os.environ, "BONAS_TEST_URL": url}
    proc = subprocess.run(
        [str(BIN / "bonas"), "search", str(config), "--storage", "${BONAS_TEST_URL}", "-v"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    study = load(url)
    assert secret not in json.dumps(study.user_attrs) + json.dumps([t.user_attrs for t in study.trials])
    assert "***" in study.user_attrs["bonas:config"]["storage"]
    host = pg_db.split("@", 1)[1].split("/", 1)[0]  # the real server, a role it does not know: refused at once, no retries
    bad = subprocess.run(
        [str(BIN / "bonas"), "trials", str(config), "--storage", f"postgresql://no_such_role:{secret}@{host}/x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and secret not in bad.stdout + bad.stderr and "Traceback" not in bad.stderr
    assert f"no_such_role:***@{host}/x" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, "one line naming the URL"
    monkeypatch.setenv("BONAS_STORAGE", url)
    assert main(["trials", str(config)]) == 0


# --- several hosts ------------------------------------------------------------------------------------


def _netns_possible() -> bool:
    if os.geteuid() != 0 or not any(Path(d, "ip").exists() for d in ("/usr/sbin", "/sbin", "/usr/bin")):
        return False
    probe = subprocess.run(["ip", "netns", "add", "bonas-probe"], capture_output=True)
    subprocess.run(["ip", "netns", "del", "bonas-probe"], capture_output=True)
    return probe.returncode == 0


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def test_workers_on_separate_hosts_and_a_cut_link(tmp_path):
    """Two 'hosts' (network namespaces joined by veth pairs) run workers against a PostgreSQL that listens
    on the veth addresses; one host's link is cut mid-trial and its trial is recovered like a killed one."""
    require(_netns_possible(), "needs root and iproute2 to create network namespaces")
    hosts = {"h1": ("10.231.1.1", "10.231.1.2"), "h2": ("10.231.2.1", "10.231.2.2")}
    made = []
    server = None
    try:
        for name, (outside, inside) in hosts.items():
            ns, veth = f"bonas-{name}", f"bn-{name}"
            sh("ip", "netns", "add", ns)
            made.append((ns, veth))
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "addr", "add", f"{outside}/24", "dev", veth)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{inside}/24", "dev", "eth0")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        server = PrivatePostgres(listen=",".join(o for o, _ in hosts.values()), hba_net="10.231.0.0/16")
        config = slow_config(tmp_path, n_trials=4, extra="[workers]\nheartbeat_interval = 1\ngrace_period = 5\n")
        h1 = Proc(tmp_path, config, server.url(hosts["h1"][0]), 0, netns="bonas-h1")
        local = server.url(hosts["h1"][0])  # the test itself reaches the server from the root namespace
        victim = wait_for(running_in_fit(local, h1.pid), timeout=180, what="host 1 inside fit")
        h2 = Proc(tmp_path, config, server.url(hosts["h2"][0]), 1, netns="bonas-h2")
        sh("ip", "link", "set", "bn-h1", "down")  # host 1 drops off the network mid-trial
        cut = time.monotonic()
        wait_for(
            lambda: load(local).trials[victim.number].state == TrialState.FAIL, timeout=120, what="host 2 to fail host 1's trial"
        )
        reaped_after = time.monotonic() - cut
        assert h2.wait(600) == 0, h2.text()
        sh("ip", "link", "set", "bn-h1", "up")  # the link comes back: host 1 drops its dead trial and stops
        assert h1.wait(600) == 0, h1.text()
        trials = audit(local, 4)
        retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
        assert len(retry) == 1 and retry[0].params == victim.params
        reason = trials[victim.number].user_attrs["end_reason"]
        assert re.fullmatch(reaped_by(h2, grace=5), reason), reason
        # back on the network, host 1 found its trial failed by host 2, dropped it without telling a result
        out = h1.text()
        assert re.search(dropped(victim.number), out) and re.search(rf":{h1.pid}:w0: done: .*, 1 dropped,", out), out
        assert "Traceback" not in out
        print(f"host 1's trial {victim.number} was failed by host 2 {reaped_after:.1f}s after the link was cut")
    finally:
        if server is not None:
            server.close()
        for ns, veth in made:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
