"""Study storages under parallel workers, measured.

1. Throughput: a trivial objective (10 params, random sampler), trials/s for SQLite, a Journal file,
   PostgreSQL and MariaDB with 1, 2, 4, 8 and 16 worker processes, through bonas' worker loop (claim
   under the study lock, heartbeat, tell) and through plain ``study.optimize`` (Journal: plain only, bonas
   takes RDB URLs). Each cell: workers start together, run for a fixed window, finished trials are counted.
2. SQLite settings: 4 workers x 50 trials through plain Optuna with the rollback journal and Python's 5 s
   busy timeout (Optuna's defaults) against bonas' WAL + 60 s: "database is locked" errors and wall time.
3. Real trials: the same 16 digits architectures (enqueued) with 1 worker (2 threads) and 2 workers
   (1 thread each) on this machine: trials per hour (target: 2 workers >= 1.8x).

    .venv/bin/python bench/storage.py [--window 8] [--workers 1,2,4,8,16] [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
    from bonas.study import open_storage

    return open_storage(url)


def _worker(kind: str, url: str, name: str, start_at: float, stop_at: float, n_trials: int, out, legacy: bool) -> None:
    """One process: wait for the common start, run trials until the window closes, report counts."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors: list[str] = []
    done = 0
    try:
        if kind == "bonas":
            from bonas.workers import StudyLock, claim_trial

            storage = _optuna_storage(url)
            study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
            lock = StudyLock(url, name)
            while time.time() < start_at:
                time.sleep(0.005)
            while time.time() < stop_at:
                claimed = claim_trial(study, storage, lock, n_trials, 0)
                if isinstance(claimed, str):
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

            while time.time() < start_at:
                time.sleep(0.005)
            while time.time() < stop_at and not finished():
                try:  # plain Optuna: a storage error ends optimize(); a user would start it again
                    study.optimize(trivial, timeout=max(0.01, stop_at - time.time()), callbacks=[stop], catch=(Exception,))
                except Exception as err:
                    errors.append(f"{type(err).__name__}: {err}")
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
    out.put({"done": done, "errors": errors, "end": time.time()})


def fresh(backend: str, folder: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{folder / (uuid.uuid4().hex[:8] + '.db')}", lambda: None
    if backend == "journal":
        return f"journal:{folder / (uuid.uuid4().hex[:8] + '.log')}", lambda: None
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.servers import fresh_database

    return fresh_database(PG if backend == "postgresql" else MYSQL)


def measure(kind: str, backend: str, n_workers: int, window: float, folder: Path, n_trials: int = 10**6, legacy: bool = False) -> dict:
    import optuna

    url, drop = fresh(backend, folder)
    name = "bench"
    try:
        storage = _optuna_storage(url, legacy)
        study = optuna.create_study(study_name=name, storage=storage)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        start_at = time.time() + 6 + 0.6 * n_workers  # every process imported and connected by then
        stop_at = start_at + (window or 600)  # window 0: run to n_trials (capped at 10 minutes)
        procs = [ctx.Process(target=_worker, args=(kind, url, name, start_at, stop_at, n_trials, out, legacy)) for _ in range(n_workers)]
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        in_window = [t for t in complete if t.datetime_complete.timestamp() <= stop_at]
        end = max(r["end"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        elapsed = (min(end, stop_at) - start_at) if n_trials >= 10**6 else (end - start_at)
        return {
            "kind": kind, "backend": backend, "workers": n_workers, "trials": len(in_window if n_trials >= 10**6 else complete),
            "trials_per_s": len(in_window) / window if n_trials >= 10**6 else len(complete) / elapsed,
            "wall_s": elapsed, "errors": len(errors), "locked": sum("database is locked" in e for e in errors),
            "states": {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState},
            "error_samples": errors[:3],
        }
    finally:
        drop()


def real_trials(folder: Path, n: int = 16) -> dict:
    """The same n digits trials (enqueued) with 1 worker vs 2 workers: trials per hour."""
    import subprocess

    import optuna

    from bonas.config import load_config
    from bonas.space import suggest_arch, suggest_training

    root = Path(__file__).resolve().parent.parent
    config_text = (root / "studies" / "digits.toml").read_text()
    base = load_config(root / "studies" / "digits.toml")
    sampler = optuna.samplers.RandomSampler(seed=7)
    probe = optuna.create_study(sampler=sampler)
    params = []
    for _ in range(n):
        t = probe.ask()
        suggest_arch(t, base.space, (1, 8, 8))
        suggest_training(t, base.training, base.data)
        params.append(t.params)
        probe.tell(t, 0.0)
    out = {}
    for workers in (1, 2):
        name = f"real{workers}"
        cfg = folder / f"{name}.toml"
        cfg.write_text(config_text.replace('name = "digits"', f'name = "{name}"').replace('name = "median"', 'name = "none"')
                       .replace("n_startup_trials = 5  # finished trials before anything is pruned\n", "")
                       .replace("n_warmup_steps = 2    # every trial gets 2 epochs: the first epoch ranks learning rates, not nets\n", ""))
        url = f"sqlite:///{folder / (name + '.db')}"
        from bonas.study import open_storage

        study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
        for p in params:
            study.enqueue_trial(p)
        del study
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "bonas"), "search", str(cfg), "--n-trials", str(n), "--workers", str(workers)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        out[workers] = {"wall_s": wall, "trials_per_hour": n / wall * 3600}
    out["speedup"] = out[2]["trials_per_hour"] / out[1]["trials_per_hour"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--backends", default="sqlite,journal,postgresql,mariadb")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--json", default="bench/results/storage.json")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bonas-storage-"))
    counts = [int(x) for x in args.workers.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; window {args.window:g}s per cell")

    rows = []
    for backend in args.backends.split(","):
        for kind in (("optuna",) if backend == "journal" else ("bonas", "optuna")):
            for n in counts:
                r = measure(kind, backend, n, args.window, folder)
                rows.append(r)
                print(f"  {backend:<10} {kind:<6} {n:>2} workers: {r['trials_per_s']:7.1f} trials/s  errors {r['errors']}", flush=True)

    print("\ntrials/s, trivial objective (random sampler, 10 params)")
    print(f"{'storage':<12}{'loop':<8}" + "".join(f"{n:>8}" for n in counts))
    for backend in args.backends.split(","):
        for kind in ("bonas", "optuna"):
            cells = {r["workers"]: r for r in rows if r["backend"] == backend and r["kind"] == kind}
            if cells:
                print(f"{backend:<12}{kind:<8}" + "".join(f"{cells[n]['trials_per_s']:>8.1f}" for n in counts))

    print("\nSQLite, 4 workers x 50 trials (trivial objective)")
    legacy = measure("optuna", "sqlite", 4, 0, folder, n_trials=200, legacy=True)
    wal_optuna = measure("optuna", "sqlite", 4, 0, folder, n_trials=200)
    wal_bonas = measure("bonas", "sqlite", 4, 0, folder, n_trials=200)
    for label, r in (("rollback journal, 5 s timeout (Optuna's default)", legacy), ("WAL, 60 s timeout (bonas), plain optimize", wal_optuna),
                     ("WAL, 60 s timeout (bonas), bonas loop", wal_bonas)):
        print(f"  {label:<52} complete {r['states']['COMPLETE']:>3}  failed {r['states']['FAIL']:>3}  'database is locked' {r['locked']:>3}  {r['wall_s']:.1f}s")

    real = None
    if not args.skip_real:
        real = real_trials(folder)
        print(f"\nreal digits trials (16 enqueued): 1 worker {real[1]['trials_per_hour']:.0f}/h, 2 workers {real[2]['trials_per_hour']:.0f}/h, "
              f"speedup {real['speedup']:.2f}x (target >= 1.8x)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rows": rows, "sqlite": [legacy, wal_optuna, wal_bonas], "real": real}, indent=1, default=str))
    best = {f"{r['backend']}_{r['kind']}_{r['workers']}": round(r["trials_per_s"], 1) for r in rows if r["workers"] in (1, max(counts))}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in best.items()) + f" sqlite_locked_legacy={legacy['locked']} sqlite_locked_bonas={wal_bonas['locked']}"
          + (f" real_speedup={real['speedup']:.2f}" if real else ""))


if __name__ == "__main__":
    main()
