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

from bench.presets import without_table  # noqa: E402

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
    from bonas.storage import open_storage

    return open_storage(url)


def _worker(kind: str, url: str, name: str, window: float, n_trials: int, out, ready, go, start, legacy: bool) -> None:
    """One process: import and connect, wait for the common start, run trials until the window closes."""
    import warnings

    import optuna

    from bonas.budget import claim_trial
    from bonas.storage import StudyLock

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


def measure(kind: str, backend: str, n_workers: int, window: float, folder: Path, n_trials: int = 10**6, legacy: bool = False) -> dict:
    import optuna

    url, drop = fresh(backend, folder)
    name = "bench"
    try:
        storage = _optuna_storage(url, legacy)
        study = optuna.create_study(study_name=name, storage=storage)
        ctx = mp.get_context("spawn")
        out, ready, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
        procs = [ctx.Process(target=_worker, args=(kind, url, name, window, n_trials, out, ready, go, start, legacy)) for _ in range(n_workers)]
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
            "kind": kind, "backend": backend, "workers": n_workers, "trials": len(in_window if n_trials >= 10**6 else complete),
            "trials_per_s": len(in_window) / window if n_trials >= 10**6 else len(complete) / elapsed,
            "wall_s": elapsed, "errors": len(errors), "locked": sum("database is locked" in e for e in errors),
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
    from bonas.space import suggest_arch, suggest_training

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
        text = without_table(text, "pruner")  # every arm trains every epoch
        cfg.write_text(text + f'\n[pruner]\nname = "none"\n[warm_start]\nfile = "{warm}"\n[workers]\nreuse_duplicates = false\n[artifacts]\nkeep_top_k = 0\n')
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "bonas"), "search", str(cfg), "--n-trials", str(n), "--workers", str(workers),
                               "--threads", str(threads)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        trials = optuna.load_study(study_name=name, storage=f"sqlite:///{cfg.with_suffix('.db')}").trials
        span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
        assert sorted(json.dumps(t.params, sort_keys=True) for t in trials) == sorted(json.dumps(p, sort_keys=True) for p in params)
        out[f"{workers}x{threads}"] = {"wall_s": wall, "span_s": span, "trials_per_hour": n / span * 3600, "trials_per_hour_wall": n / wall * 3600}
    out["speedup"] = out["2x1"]["trials_per_hour"] / out["1x2"]["trials_per_hour"]  # what a user gains on this machine
    out["speedup_wall"] = out["2x1"]["trials_per_hour_wall"] / out["1x2"]["trials_per_hour_wall"]
    out["scaling"] = out["2x1"]["trials_per_hour"] / out["1x1"]["trials_per_hour"]  # worker scaling itself, thread for thread
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--backends", default="sqlite,journal,postgresql,mariadb")
    ap.add_argument("--parts", default="throughput,sqlite,real")
    ap.add_argument("--json", default="bench/results/storage.json")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bonas-storage-"))
    counts = [int(x) for x in args.workers.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; window {args.window:g}s per cell")

    parts = args.parts.split(",")
    rows = []
    for backend in (args.backends.split(",") if "throughput" in parts else []):
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

    legacy = wal_optuna = wal_bonas = None
    if "sqlite" in parts:
        print("\nSQLite, 4 workers x 50 trials (trivial objective)")
        legacy = measure("optuna", "sqlite", 4, 0, folder, n_trials=200, legacy=True)
        wal_optuna = measure("optuna", "sqlite", 4, 0, folder, n_trials=200)
        wal_bonas = measure("bonas", "sqlite", 4, 0, folder, n_trials=200)
        for label, r in (("rollback journal, 5 s timeout (Optuna's default)", legacy), ("WAL, 60 s timeout (bonas), plain optimize", wal_optuna),
                         ("WAL, 60 s timeout (bonas), bonas loop", wal_bonas)):
            print(f"  {label:<52} complete {r['states']['COMPLETE']:>3}  failed {r['states']['FAIL']:>3}  'database is locked' {r['locked']:>3}  {r['wall_s']:.1f}s")

    real = None
    if "real" in parts:
        real = real_trials(folder)
        print("\nreal Fashion-MNIST trials (16 enqueued, 2000 images x 2 epochs), trials/hour over the trials' span:")
        for k in ("1x2", "1x1", "2x1"):
            w, t = k.split("x")
            print(f"  {w} worker(s) x {t} thread(s): {real[k]['trials_per_hour']:6.0f}/h  (whole command {real[k]['trials_per_hour_wall']:.0f}/h)")
        print(f"  2 workers vs 1 worker using both cores: {real['speedup']:.2f}x (target >= 1.8x); thread for thread: {real['scaling']:.2f}x")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.update({k: v for k, v in {"rows": rows or None, "sqlite": [legacy, wal_optuna, wal_bonas] if legacy else None, "real": real}.items() if v})
    path.write_text(json.dumps(saved, indent=1, default=str))
    best = {f"{r['backend']}_{r['kind']}_{r['workers']}": round(r["trials_per_s"], 1) for r in rows if r["workers"] in (1, max(counts))}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in best.items())
          + (f" sqlite_locked_legacy={legacy['locked']} sqlite_locked_bonas={wal_bonas['locked']}" if legacy else "")
          + (f" real_speedup={real['speedup']:.2f} real_scaling={real['scaling']:.2f}" if real else ""))


if __name__ == "__main__":
    main()
