"""Study storages under parallel workers, measured.

1. Throughput: a trivial objective (10 params, random sampler), trials/s for SQLite, a Journal file,
   PostgreSQL and MariaDB with 1, 2, 4, 8 and 16 worker processes, through bonas' worker loop (claim
   under the study lock, heartbeat, tell) and through plain ``study.optimize`` (Journal: plain only, bonas
   takes RDB URLs). Each cell: workers start together, run for a fixed window, finished trials are counted.
2. SQLite settings: 4 workers x 50 trials through plain Optuna with the rollback journal and Python's 5 s
   busy timeout (Optuna's defaults) against bonas' WAL + 60 s: "database is locked" errors and wall time.
3. Real trials: the same 16 digits architectures (enqueued) with 1 worker (2 threads) and 2 workers
   (1 thread each) on this machine: trials per hour (target: 2 workers >= 1.8x).
4. Many workers (``--parts many``): 1, 8, 32 and 64 processes share an exact budget of trivial trials on a
   PostgreSQL server of the bench's own (durable: PostgreSQL's defaults, ``--max-connections``), through
   bonas' loop pieces (open_storage with heartbeats, claim_trial under a StudyLock, a heartbeat thread per
   running trial, tell) and through plain ``study.optimize`` with Optuna's MaxTrialsCallback. Per cell:
   trials/s, the claim's latency and the lock's wait and hold times, the database connections each worker
   held (pg_stat_activity sampled every 100 ms, one application_name per worker), the connections opened,
   the server processes' memory, and an audit (exact budget, nothing lost or told twice, numbers dense,
   nothing left RUNNING or WAITING) that fails the bench when it does not hold.

    .venv/bin/python bench/storage.py [--window 8] [--workers 1,2,4,8,16] [--parts throughput,sqlite,real,many]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import sqlalchemy
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.presets import without_table  # noqa: E402
from bonas.study.lock import StudyLock  # noqa: E402
from bonas.study.retry import RETRY_FOR_S  # noqa: E402

PG = os.environ.get("BONAS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL = os.environ.get("BONAS_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def trivial(trial) -> float:
    return sum(trial.suggest_float(f"x{i}", -1, 1) ** 2 for i in range(10))


def _journal_storage(path: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def _optuna_storage(url: str, legacy_sqlite: bool = False):
    import optuna

    if url.startswith("journal:"):
        return _journal_storage(url[len("journal:") :])
    if legacy_sqlite:  # Optuna's defaults: rollback journal, 5 s busy timeout
        return optuna.storages.RDBStorage(url)
    from bonas.study.storage import open_storage

    return open_storage(url)


def _worker(kind: str, url: str, name: str, window: float, n_trials: int, out, ready, go, start, legacy: bool) -> None:
    """One process: import and connect, wait for the common start, run trials until the window closes."""
    import warnings

    import optuna

    from bonas.study.claims import claim_trial
    from bonas.study.lock import StudyLock

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors: list[str] = []
    done = 0
    try:
        if kind == "bonas":
            storage = _optuna_storage(url)
            study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
            lock = StudyLock(url, name)
            ready.put(1)
            go.wait()
            stop_at = start.value + (window or 600)
            while time.time() < start.value:
                time.sleep(0.001)
            while time.time() < stop_at:
                claimed = claim_trial(study, storage, lock, n_trials, 0).trial
                if claimed is None:
                    break
                try:
                    study.tell(claimed, trivial(claimed))
                    done += 1
                except Exception as err:  # counted, not fatal: that is what we measure
                    errors.append(f"{type(err).__name__}: {err}")
        else:
            storage = _optuna_storage(url, legacy)
            study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())

            def finished() -> bool:
                return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) >= n_trials

            def stop(study, trial) -> None:
                if time.time() >= stop_at or finished():
                    study.stop()

            ready.put(1)
            go.wait()
            stop_at = start.value + (window or 600)
            while time.time() < start.value:
                time.sleep(0.001)
            while time.time() < stop_at and not finished():
                try:  # plain Optuna: a storage error ends optimize(); a user would start it again
                    study.optimize(trivial, timeout=max(0.01, stop_at - time.time()), callbacks=[stop], catch=(Exception,))
                except Exception as err:
                    errors.append(f"{type(err).__name__}: {err}")
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
        ready.put(0)  # never leave the launcher waiting
    out.put({"done": done, "errors": errors, "end": time.time()})


def fresh(backend: str, folder: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{folder / (uuid.uuid4().hex[:8] + '.db')}", lambda: None
    if backend == "journal":
        return f"journal:{folder / (uuid.uuid4().hex[:8] + '.log')}", lambda: None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.servers import fresh_database

    return fresh_database(PG if backend == "postgresql" else MYSQL)


def measure(
    kind: str, backend: str, n_workers: int, window: float, folder: Path, n_trials: int = 10**6, legacy: bool = False
) -> dict:
    import optuna

    url, drop = fresh(backend, folder)
    name = "bench"
    try:
        storage = _optuna_storage(url, legacy)
        study = optuna.create_study(study_name=name, storage=storage)
        ctx = mp.get_context("spawn")
        out, ready, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
        procs = [
            ctx.Process(target=_worker, args=(kind, url, name, window, n_trials, out, ready, go, start, legacy))
            for _ in range(n_workers)
        ]
        for p in procs:
            p.start()
        for _ in procs:  # every process imported and connected: only then does the clock start
            ready.get(timeout=600)
        start.value = start_at = time.time() + 0.2
        stop_at = start_at + (window or 600)  # window 0: run to n_trials (capped at 10 minutes)
        go.set()
        results = [out.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        in_window = [t for t in complete if t.datetime_complete.timestamp() <= stop_at]
        end = max(r["end"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        elapsed = (min(end, stop_at) - start_at) if n_trials >= 10**6 else (end - start_at)
        return {
            "kind": kind,
            "backend": backend,
            "workers": n_workers,
            "trials": len(in_window if n_trials >= 10**6 else complete),
            "trials_per_s": len(in_window) / window if n_trials >= 10**6 else len(complete) / elapsed,
            "wall_s": elapsed,
            "errors": len(errors),
            "locked": sum("database is locked" in e for e in errors),
            "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
            "error_samples": errors[:3],
        }
    finally:
        drop()


def real_trials(folder: Path, n: int = 16) -> dict:
    """The same n Fashion-MNIST trials (enqueued; 2000 images x 2 epochs each) with 1 worker (2 threads) and
    2 workers (1 thread each): trials per hour over the span of the trials (process start-up excluded)
    and over the whole command."""
    import subprocess

    import optuna

    from bonas.config import load_config
    from bonas.nas.space import suggest_arch, suggest_training

    root = Path(__file__).resolve().parent.parent
    base_text = (root / "studies" / "fashion-mnist.toml").read_text()
    base = load_config(root / "studies" / "fashion-mnist.toml")
    probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
    params = []
    for _ in range(n):
        t = probe.ask()
        suggest_arch(t, base.space, (1, 28, 28))
        suggest_training(t, base.training, base.data)
        params.append(t.params)
        probe.tell(t, 0.0)
    warm = folder / "real-trials.toml"
    warm.write_text("\n".join("[[trial]]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in p.items()) + "\n" for p in params))
    out = {}
    for workers, threads in ((1, 2), (1, 1), (2, 1)):
        name = f"real{workers}x{threads}"
        cfg = folder / f"{name}.toml"
        text = base_text.replace('name = "fashion-mnist"', f'name = "{name}"').replace("timeout = 1800", "timeout = 0")
        text = text.replace("train_subset = 10000", "train_subset = 2000").replace("max_epochs = 4", "max_epochs = 2")
        text = without_table(without_table(text, "pruner"), "warm_start")  # every arm trains every epoch, these trials
        cfg.write_text(
            text + f'\n[pruner]\nname = "none"\n[warm_start]\nfile = "{warm}"\npriors = false\n'
            "[workers]\nreuse_duplicates = false\n[artifacts]\nkeep_top_k = 0\n"
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "bonas"),
                "search",
                str(cfg),
                "--n-trials",
                str(n),
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        trials = optuna.load_study(study_name=name, storage=f"sqlite:///{cfg.with_suffix('.db')}").trials
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        ran = sorted(json.dumps(t.params, sort_keys=True) for t in trials)
        assert ran == sorted(json.dumps(p, sort_keys=True) for p in params)
        out[f"{workers}x{threads}"] = {
            "wall_s": wall,
            "span_s": span,
            "trials_per_hour": n / span * 3600,
            "trials_per_hour_wall": n / wall * 3600,
        }
    out["speedup"] = out["2x1"]["trials_per_hour"] / out["1x2"]["trials_per_hour"]  # what a user gains on this machine
    out["speedup_wall"] = out["2x1"]["trials_per_hour_wall"] / out["1x2"]["trials_per_hour_wall"]
    out["scaling"] = out["2x1"]["trials_per_hour"] / out["1x1"]["trials_per_hour"]  # worker scaling itself, thread for thread
    return out


# --- 4. many workers ----------------------------------------------------------------------------------------

HEARTBEAT_S, GRACE_S = 1, 60  # bonas' smallest heartbeat interval (the most heartbeat traffic) and its default grace period
WAIT_POLL_S = 2.0  # bonas.workers.WAIT_POLL_S: while running trials fill the budget, look again after this
FINISHED = ("COMPLETE", "PRUNED")
ACTIVITY = sqlalchemy.text(  # per application_name: connections, those last running the lock's SQL, those waiting on a lock
    "SELECT application_name, count(*), count(*) FILTER (WHERE query LIKE 'SELECT pg_advisory%'), "
    "count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' GROUP BY 1"
)
BACKENDS = sqlalchemy.text(
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'"
)


class TimedLock(StudyLock):
    """bonas' study lock, timing each use: its new connection (NullPool: one per claim), the wait for the lock
    (connecting included) and the hold (the release included); and counting the storage's round trips while
    it is held (statements, commits, pool checkouts: each checkout pings first)."""

    def __init__(self, url: str, study_name: str, storage_engine):
        super().__init__(url, study_name)
        self.connects: list[float] = []
        self.waits: list[float] = []
        self.holds: list[float] = []
        self.in_lock = Counter()
        self._t, self._held = 0.0, False
        sqlalchemy.event.listen(self.engine, "do_connect", self._connecting)
        sqlalchemy.event.listen(self.engine, "connect", self._connected)
        for what in ("before_cursor_execute", "commit", "checkout"):
            sqlalchemy.event.listen(storage_engine, what, lambda *args, what=what: self._count(what))

    def _count(self, what: str) -> None:
        if self._held:
            self.in_lock[what] += 1

    def _connecting(self, *args) -> None:
        self._t = time.perf_counter()

    def _connected(self, *args) -> None:
        self.connects.append(time.perf_counter() - self._t)

    @contextlib.contextmanager
    def __call__(self, retry_for: float = RETRY_FOR_S):
        t0 = time.perf_counter()
        with super().__call__(retry_for):
            t1 = time.perf_counter()
            self._held = True
            try:
                yield
            finally:
                self._held = False
        self.waits.append(t1 - t0)
        self.holds.append(time.perf_counter() - t1)


def _many_worker(kind: str, url: str, name: str, budget: int, trial_s: float, out, ready, go, start) -> None:
    """One process: bonas' loop (claim under the study lock, heartbeat thread, tell) or plain ``study.optimize``
    with Optuna's MaxTrialsCallback, from the common start until the budget is spent. A trial is the trivial
    objective, then ``trial_s`` seconds of sleep (standing in for training: the worker is idle meanwhile)."""
    import warnings

    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from bonas.study.budget import Verdict
    from bonas.study.claims import Heartbeat, claim_trial
    from bonas.study.storage import open_storage, trial_id

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    log = {"claimed": [], "told": [], "claim_s": [], "beats": 0, "errors": [], "last_tell": 0.0}
    lock, cpu_start = None, time.process_time()
    try:
        storage = open_storage(url, HEARTBEAT_S, GRACE_S) if kind == "bonas" else open_storage(url)
        study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
        lock = TimedLock(f"{url}-lock", name, storage.engine) if kind == "bonas" else None  # its own application_name
        ready.put(1)
        go.wait()
        while time.time() < start.value:
            time.sleep(0.001)
        cpu_start = time.process_time()
        if kind == "bonas":
            while True:
                t0 = time.perf_counter()
                claim = claim_trial(study, storage, lock, budget, 0, reaper=name)
                if claim.status.verdict == Verdict.WAIT:  # peers' running trials fill the budget
                    time.sleep(min(WAIT_POLL_S, HEARTBEAT_S))
                    continue
                if claim.trial is None:
                    break
                log["claim_s"].append(time.perf_counter() - t0)
                log["claimed"].append(claim.trial.number)
                with Heartbeat(storage, trial_id(claim.trial), HEARTBEAT_S) as beat:
                    value = trivial(claim.trial)
                    time.sleep(trial_s)
                log["beats"] += beat.beats
                study.tell(claim.trial, value)
                log["told"].append(claim.trial.number)
                log["last_tell"] = time.time()
        else:

            def objective(trial) -> float:
                log["claimed"].append(trial.number)
                value = trivial(trial)
                time.sleep(trial_s)
                return value

            def told(study, frozen) -> None:
                log["told"].append(frozen.number)
                log["last_tell"] = time.time()

            finished = (TrialState.COMPLETE, TrialState.PRUNED)
            study.optimize(objective, callbacks=[told, MaxTrialsCallback(budget, states=finished)])
    except Exception as err:
        log["errors"].append(f"{type(err).__name__}: {err}")
        ready.put(0)  # never leave the launcher waiting
    log["torch"] = "torch" in sys.modules
    log["cpu_s"] = time.process_time() - cpu_start  # from the common start: the measured span's CPU
    if lock is not None:
        log.update(connect_s=lock.connects, wait_s=lock.waits, hold_s=lock.holds, in_lock=dict(lock.in_lock))
    out.put(log)


class ActivitySampler(threading.Thread):
    """pg_stat_activity of one database every ``every`` s: connections per application_name (one per worker),
    those whose last statement was the study lock's, those waiting on a lock; every ``mem_every`` s, the
    memory of each server process serving the database (Pss and private, MiB, from /proc)."""

    def __init__(self, url: str, every: float = 0.1, mem_every: float = 2.0):
        super().__init__(daemon=True)
        self.engine = sqlalchemy.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.every, self.mem_every = every, mem_every
        self.samples: list[tuple[float, dict[str, tuple[int, int, int]]]] = []
        self.memory: list[tuple[float, float, float]] = []  # (time, Pss, private) per server process
        self.halt = threading.Event()

    def run(self) -> None:
        next_mem = 0.0
        with self.engine.connect() as conn:
            while not self.halt.wait(self.every):
                now = time.time()
                self.samples.append((now, {app: (n, lock, waiting) for app, n, lock, waiting in conn.execute(ACTIVITY).all()}))
                if now >= next_mem:
                    next_mem = now + self.mem_every
                    self.memory += [(now, *m) for pid in conn.execute(BACKENDS).scalars() if (m := _memory_mib(pid))]
        self.engine.dispose()


def _memory_mib(pid: int) -> tuple[float, float] | None:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    except OSError:  # the process ended, or this user may not read it
        return None
    kib = {k: int(v.split()[0]) for k, v in fields.items()}
    return kib["Pss"] / 1024, (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024


def _db_counters(conn) -> tuple[int, int]:
    """Connections ever opened to the database (PostgreSQL >= 14) and transactions committed in it (reads too)."""
    sql = "SELECT sessions, xact_commit FROM pg_stat_database WHERE datname = current_database()"
    return tuple(conn.execute(sqlalchemy.text(sql)).one())


def _cpu_busy() -> float:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split("\n")[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def audit_many(kind: str, budget: int, trials: list, logs: list[dict]) -> dict:
    """What must hold after a cell: bonas finishes exactly the budget (plain Optuna at least the budget, its
    overshoot reported), every claimed trial is told once, numbers are dense, nothing is left unfinished."""
    states = Counter(t.state.name for t in trials)
    finished = sum(states[s] for s in FINISHED)
    claimed = [n for r in logs for n in r["claimed"]]
    told = [n for r in logs for n in r["told"]]
    lost = sorted(set(claimed) - set(told))
    numbers = sorted(t.number for t in trials)
    errors = [e for r in logs for e in r["errors"]]
    problems = [
        text
        for bad, text in (
            (finished != budget if kind == "bonas" else finished < budget, f"{finished} trials finished, budget {budget}"),
            (lost, f"{len(lost)} claimed trials never told: {lost[:10]}"),
            (len(told) != len(set(told)), f"{len(told) - len(set(told))} trials told twice"),
            (len(claimed) != len(set(claimed)), f"{len(claimed) - len(set(claimed))} trials claimed twice"),
            (set(told) != {t.number for t in trials if t.state.name in FINISHED}, "trials told != the database's finished ones"),
            (numbers != list(range(len(numbers))), "trial numbers are not dense and unique"),
            (states["RUNNING"] + states["WAITING"], f"{states['RUNNING']} RUNNING and {states['WAITING']} WAITING left"),
            (states["FAIL"], f"{states['FAIL']} trials FAIL (a healthy worker reaped?)"),
            (errors, f"{len(errors)} worker errors: {errors[:3]}"),
            (any(r["torch"] for r in logs), "a worker imported torch"),
        )
        if bad
    ]
    return {
        "finished": finished,
        "overshoot": finished - budget,
        "claimed": len(claimed),
        "lost": len(lost),
        "told_twice": len(told) - len(set(told)),
        "dense_unique": numbers == list(range(len(numbers))),
        "unfinished_left": states["RUNNING"] + states["WAITING"],
        "failed": states["FAIL"],
        "errors": errors[:3],
        "problems": problems,
        "ok": not problems,
    }


def _stats(xs: list[float], scale: float = 1.0) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)
    return {
        "n": len(xs),
        "median": statistics.median(xs) * scale,
        "mean": statistics.fmean(xs) * scale,
        "p95": xs[int(0.95 * (len(xs) - 1))] * scale,
        "max": xs[-1] * scale,
    }


def connections(samples: list, n_workers: int, since: float, until: float) -> dict:
    """Connections held by the workers during the measured span: worker i's storage (its pool) connects as
    bench-w<i>, its study lock as bench-w<i>-lock."""
    span = [apps for t, apps in samples if since <= t <= until] or [{}]
    workers = [f"bench-w{i}" for i in range(n_workers)]

    def n(apps: dict, app: str) -> int:
        return apps.get(app, (0, 0, 0))[0]

    totals = [sum(k for app, (k, _, _) in apps.items() if app not in ("bench-monitor", "bench-parent")) for apps in span]
    peaks = [max(n(apps, w) + n(apps, f"{w}-lock") for apps in span) for w in workers]
    storage = [sum(n(apps, w) for w in workers) for apps in span]
    lock = [sum(n(apps, f"{w}-lock") for w in workers) for apps in span]
    waiting = [sum(wt for _, _, wt in apps.values()) for apps in span]
    return {
        "samples": len(span),
        "sample_every_s": (until - since) / len(span),
        "total_peak": max(totals),
        "total_mean": statistics.fmean(totals),
        "per_worker_peak": max(peaks),
        "per_worker_mean": statistics.fmean(totals) / n_workers,
        "workers_by_peak": dict(sorted(Counter(peaks).items())),  # how many workers ever held 0, 1, 2, 3 connections
        "storage_per_worker_peak": max(max(n(apps, w) for apps in span) for w in workers),
        "storage_per_worker_mean": statistics.fmean(storage) / n_workers,
        "lock_connections_peak": max(lock),
        "lock_connections_mean": statistics.fmean(lock),
        "waiting_on_lock_mean": statistics.fmean(waiting),
        "waiting_on_lock_peak": max(waiting),
    }


def measure_many(kind: str, n_workers: int, budget: int, server_url: str, trial_s: float = 0.0) -> dict:
    import optuna

    from bonas.study.storage import open_storage
    from tests.servers import fresh_database

    url, drop = fresh_database(server_url)
    name = "bench"
    try:
        admin = sqlalchemy.create_engine(
            f"{url}?application_name=bench-parent", poolclass=NullPool, isolation_level="AUTOCOMMIT"
        ).connect()
        parent = open_storage(f"{url}?application_name=bench-parent")
        optuna.create_study(study_name=name, storage=parent)
        parent.engine.dispose()
        sampler = ActivitySampler(f"{url}?application_name=bench-monitor")
        sampler.start()
        ctx = mp.get_context("spawn")
        out, ready, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
        procs = [
            ctx.Process(
                target=_many_worker,
                args=(kind, f"{url}?application_name=bench-w{i}", name, budget, trial_s, out, ready, go, start),
            )
            for i in range(n_workers)
        ]
        t_spawn = time.time()
        for p in procs:
            p.start()
        for _ in procs:  # every process imported and connected: only then does the clock start
            ready.get(timeout=900)
        ready_s = time.time() - t_spawn
        before = _db_counters(admin)
        load_before, cpu_before, t_before = os.getloadavg()[0], _cpu_busy(), time.time()
        start.value = start_at = time.time() + 0.2
        go.set()
        logs = [out.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        sampler.halt.set()
        sampler.join()
        after = _db_counters(admin)
        opened, transactions = after[0] - before[0], after[1] - before[1] - 1  # less the counters' own read
        busy, load_after = (_cpu_busy() - cpu_before) / (time.time() - t_before), os.getloadavg()[0]
        trials = optuna.load_study(study_name=name, storage=parent).get_trials(deepcopy=False)
        parent.engine.dispose()
        admin.close()
        end = max(r["last_tell"] for r in logs) or time.time()
        wall = end - start_at
        audit = audit_many(kind, budget, trials, logs)
        claims = len([n for r in logs for n in r["claimed"]])
        holds = [h for r in logs for h in r.get("hold_s", [])]
        memory = [m for m in sampler.memory if start_at <= m[0] <= end]
        lock = {}
        if kind == "bonas":
            lock = {
                "connect_ms": _stats([c for r in logs for c in r["connect_s"]], 1e3),
                "wait_ms": _stats([w for r in logs for w in r["wait_s"]], 1e3),
                "hold_ms": _stats(holds, 1e3),
                # Holds measured in the holder; with more processes than cores it may be descheduled after the
                # release and before its clock is read: busy_fraction > 1, and the 1 / hold ceiling too low.
                # uses_per_s is what the lock served (its ceiling on this machine when waiting_on_lock stays > 0).
                "busy_fraction": sum(holds) / wall,
                "uses_per_s": len(holds) / wall,
                "ceiling_claims_per_s": 1 / statistics.fmean(holds),  # claims/s if workers queued back to back
                "round_trips_per_hold": {
                    k: sum(r["in_lock"].get(k, 0) for r in logs) / len(holds)
                    for k in ("before_cursor_execute", "commit", "checkout")
                },
            }
        return {
            "kind": kind,
            "workers": n_workers,
            "budget": budget,
            "trial_s": trial_s,
            "wall_s": wall,
            "trials_per_s": audit["finished"] / wall,
            "startup_s": ready_s,
            "audit": audit,
            "claim_ms": _stats([c for r in logs for c in r["claim_s"]], 1e3),
            "lock": lock,
            "connections": connections(sampler.samples, n_workers, start_at, end),
            "connections_opened": opened,
            "connections_opened_per_trial": opened / max(1, claims),
            "transactions_per_s": transactions / wall,
            "transactions_per_trial": transactions / max(1, audit["finished"]),
            # the machine is shared: its load, how busy its cores were, and how much of that the workers were
            "load_before": load_before,
            "load_after": load_after,
            "machine_busy_cores": busy,
            "workers_cpu_cores": sum(r["cpu_s"] for r in logs) / wall,
            "heartbeats_by_threads": sum(r["beats"] for r in logs),
            "server_process_mib": {"pss": _stats([m[1] for m in memory]), "private": _stats([m[2] for m in memory])},
        }
    finally:
        drop()


def many_workers(
    counts: list[int], budget: int, kinds: list[str], max_connections: int, pg_url: str, trial_s: float = 0.0
) -> dict:
    """The cells of part 4 on one PostgreSQL server: the bench's own (durable) unless ``pg_url`` is given."""
    from tests.servers import PrivatePostgres

    server = None if pg_url else PrivatePostgres(max_connections=max_connections, durable=True)
    url = pg_url or server.url()
    try:
        with sqlalchemy.create_engine(url, poolclass=NullPool).connect() as conn:
            info = {
                k: conn.execute(sqlalchemy.text(f"SHOW {k}")).scalar()
                for k in ("server_version", "max_connections", "fsync", "synchronous_commit", "shared_buffers")
            }
        print(
            f"\nmany workers: PostgreSQL {info['server_version']} ({'the bench own' if server else pg_url}), "
            f"max_connections {info['max_connections']}, fsync {info['fsync']}; budget {budget} trials per cell, "
            f"{trial_s:g} s of sleep per trial",
            flush=True,
        )
        cells = []
        for n in counts:
            for kind in kinds:
                r = measure_many(kind, n, budget, url, trial_s)
                cells.append(r)
                c, a = r["connections"], r["audit"]
                claim = f"claim p50 {r['claim_ms']['median']:6.1f} ms  " if r["claim_ms"] else ""
                print(
                    f"  {kind:<6} {n:>2} workers: {r['trials_per_s']:6.1f} trials/s  wall {r['wall_s']:5.1f}s  {claim}"
                    f"connections/worker peak {c.get('per_worker_peak')} "
                    f"mean {c.get('per_worker_mean', 0):.2f}  total peak {c.get('total_peak')}  "
                    f"audit {'ok' if a['ok'] else 'FAILED'} (finished {a['finished']}, overshoot {a['overshoot']})",
                    flush=True,
                )
    finally:
        if server is not None:
            server.close()
    return {
        "server": info,
        "budget": budget,
        "trial_s": trial_s,
        "heartbeat_interval_s": HEARTBEAT_S,
        "grace_period_s": GRACE_S,
        "cells": cells,
    }


def print_many(many: dict) -> None:
    print(
        f"\n{'loop':<7}{'workers':>8}{'trials/s':>10}{'wall s':>8}{'claim p50/p95 ms':>18}{'lock hold ms':>14}"
        f"{'conn/worker peak':>18}{'mean':>6}{'total peak':>12}{'opened/trial':>14}  audit"
    )
    for c in many["cells"]:
        k, lk, a = c["connections"], c["lock"], c["audit"]
        claim = f"{c['claim_ms']['median']:.1f}/{c['claim_ms']['p95']:.1f}" if c["claim_ms"] else "-"
        hold = f"{lk['hold_ms']['median']:.1f}" if lk else "-"
        verdict = ("ok" if a["ok"] else "FAILED") + (f", overshoot {a['overshoot']}" if a["overshoot"] else "")
        print(
            f"{c['kind']:<7}{c['workers']:>8}{c['trials_per_s']:>10.1f}{c['wall_s']:>8.1f}{claim:>18}{hold:>14}{k['per_worker_peak']:>18}"
            f"{k['per_worker_mean']:>6.2f}{k['total_peak']:>12}{c['connections_opened_per_trial']:>14.2f}  {verdict}"
        )


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB"


def commit() -> str:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "bench", "bonas", "tests", ":!bench/results")  # code, not earlier results
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--backends", default="sqlite,journal,postgresql,mariadb")
    ap.add_argument("--parts", default="throughput,sqlite,real")
    ap.add_argument("--json", default="bench/results/storage.json")
    ap.add_argument("--many-workers", default="1,8,32,64", help="part 'many': worker processes per cell")
    ap.add_argument("--budget", type=int, default=400, help="part 'many': trials per cell")
    ap.add_argument("--loops", default="bonas,optuna", help="part 'many': bonas' loop, plain study.optimize")
    ap.add_argument("--max-connections", type=int, default=300, help="part 'many': the bench's own server's max_connections")
    ap.add_argument("--pg-url", default="", help="part 'many': an existing server instead of the bench's own")
    ap.add_argument("--trial-s", type=float, default=0.0, help="part 'many': seconds of sleep per trial (key many_trial_<s>s)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bonas-storage-"))
    counts = [int(x) for x in args.workers.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; window {args.window:g}s per cell")

    parts = args.parts.split(",")
    rows = []
    for backend in args.backends.split(",") if "throughput" in parts else []:
        for kind in ("optuna",) if backend == "journal" else ("bonas", "optuna"):
            for n in counts:
                r = measure(kind, backend, n, args.window, folder)
                rows.append(r)
                print(
                    f"  {backend:<10} {kind:<6} {n:>2} workers: {r['trials_per_s']:7.1f} trials/s  errors {r['errors']}",
                    flush=True,
                )

    if rows:
        print("\ntrials/s, trivial objective (random sampler, 10 params)")
        print(f"{'storage':<12}{'loop':<8}" + "".join(f"{n:>8}" for n in counts))
    for backend in args.backends.split(",") if rows else []:
        for kind in ("bonas", "optuna"):
            cells = {r["workers"]: r for r in rows if r["backend"] == backend and r["kind"] == kind}
            if cells:
                print(f"{backend:<12}{kind:<8}" + "".join(f"{cells[n]['trials_per_s']:>8.1f}" for n in counts))

    legacy = wal_optuna = wal_bonas = None
    if "sqlite" in parts:
        print("\nSQLite, 4 workers x 50 trials (trivial objective)")
        legacy = measure("optuna", "sqlite", 4, 0, folder, n_trials=200, legacy=True)
        wal_optuna = measure("optuna", "sqlite", 4, 0, folder, n_trials=200)
        wal_bonas = measure("bonas", "sqlite", 4, 0, folder, n_trials=200)
        for label, r in (
            ("rollback journal, 5 s timeout (Optuna's default)", legacy),
            ("WAL, 60 s timeout (bonas), plain optimize", wal_optuna),
            ("WAL, 60 s timeout (bonas), bonas loop", wal_bonas),
        ):
            print(
                f"  {label:<52} complete {r['states']['COMPLETE']:>3}  failed {r['states']['FAIL']:>3}  "
                f"'database is locked' {r['locked']:>3}  {r['wall_s']:.1f}s"
            )

    real = None
    if "real" in parts:
        real = real_trials(folder)
        print("\nreal Fashion-MNIST trials (16 enqueued, 2000 images x 2 epochs), trials/hour over the trials' span:")
        for k in ("1x2", "1x1", "2x1"):
            w, t = k.split("x")
            print(
                f"  {w} worker(s) x {t} thread(s): {real[k]['trials_per_hour']:6.0f}/h  "
                f"(whole command {real[k]['trials_per_hour_wall']:.0f}/h)"
            )
        print(
            f"  2 workers vs 1 worker using both cores: {real['speedup']:.2f}x (target >= 1.8x); "
            f"thread for thread: {real['scaling']:.2f}x"
        )
    many = None
    if "many" in parts:
        many = many_workers(
            [int(x) for x in args.many_workers.split(",")],
            args.budget,
            args.loops.split(","),
            args.max_connections,
            args.pg_url,
            args.trial_s,
        )
        many.update(
            machine=machine(),
            command=" ".join([Path(sys.executable).name, *sys.argv]),
            commit=commit(),
            date=datetime.now().isoformat(timespec="seconds"),
        )
        print_many(many)
    cells = (many or {}).get("cells", [])
    failed = [c for c in cells if not c["audit"]["ok"]]
    result = [
        f"{r['backend']}_{r['kind']}_{r['workers']}={r['trials_per_s']:.1f}" for r in rows if r["workers"] in (1, max(counts))
    ]
    if legacy:
        result += [f"sqlite_locked_legacy={legacy['locked']}", f"sqlite_locked_bonas={wal_bonas['locked']}"]
    if real:
        result += [f"real_speedup={real['speedup']:.2f}", f"real_scaling={real['scaling']:.2f}"]
    result += [f"many_{c['kind']}_{c['workers']}={c['trials_per_s']:.1f}" for c in cells]
    result += [
        f"conn_per_worker_peak_{c['workers']}={c['connections']['per_worker_peak']}" for c in cells if c["kind"] == "bonas"
    ]
    result = "RESULT " + " ".join(result + ([f"many_audit={'FAILED' if failed else 'ok'}"] if many else []))
    if many:
        many["result"] = result
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    many_key = f"many_trial_{args.trial_s:g}s" if args.trial_s else "many"
    fresh = {"rows": rows or None, "sqlite": [legacy, wal_optuna, wal_bonas] if legacy else None, "real": real, many_key: many}
    from bench.record import provenance

    saved.update({k: v for k, v in fresh.items() if v})
    saved.update({f"{k}_provenance": provenance(__file__) for k, v in fresh.items() if v and k in ("rows", "sqlite", "real")})
    path.write_text(json.dumps(saved, indent=1, default=str))
    for c in failed:
        print(f"AUDIT FAILED: {c['kind']} loop, {c['workers']} workers: " + "; ".join(c["audit"]["problems"]), file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} many-workers cells failed their audit (saved in {path} with audit.ok = false)")
    print(result)


if __name__ == "__main__":
    main()
