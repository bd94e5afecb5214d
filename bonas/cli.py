"""The ``bonas`` command: one subcommand per verb, each ``add_arguments(parser)`` + ``run(args) -> int``.

Bad input of any kind prints one line (``bonas: <what>: <why>; <how to fix>``) and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from bonas.errors import EXIT_USAGE, BonasError, StudyError, UsageError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _add_study(p: argparse.ArgumentParser, name: str = "study") -> None:
    p.add_argument(name, help="a study config (.toml) or the name of studies/<name>.toml")


def _add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-trials", type=_positive_int, help="the study's total trial budget (overrides the config)")
    p.add_argument("--timeout", type=_seconds, help="the study's total time budget in seconds (overrides the config)")
    p.add_argument("--data-dir", help="where data sets are found or downloaded (default $BONAS_DATA_DIR or ~/.cache/bonas)")


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL; overrides the config and $BONAS_STORAGE")


def _load_for_run(args: argparse.Namespace):
    """Config + overrides + storage URL, all validated before anything is written."""
    from bonas.config import load_config
    from bonas.study import check_storage_url, find_config, resolve_storage, warm_start_params

    config = load_config(find_config(args.config))
    if args.n_trials is not None:
        config.budget.n_trials = args.n_trials
    if args.timeout is not None:
        config.budget.timeout = args.timeout
    if getattr(args, "data_dir", None):
        config.data.dir = args.data_dir
    if getattr(args, "threads", None):
        os.environ["BONAS_THREADS"] = str(args.threads)  # inherited by spawned workers
    url = resolve_storage(config, args.storage)
    check_storage_url(url, "--storage" if args.storage else config.path)
    check_writable(url)
    warm_start_params(config)  # a broken warm-start file or missing source study fails here, before anything exists
    return config, url


def check_writable(url: str) -> None:
    """Fail before loading data when a SQLite database could not be created (nothing is left behind)."""
    import tempfile

    from bonas.errors import StorageError
    from bonas.study import sqlite_path

    path = sqlite_path(url)
    if path is None:
        return
    if path.exists():
        if path.is_dir() or not os.access(path, os.W_OK):
            raise StorageError(f"{path}: study database is not a writable file; fix its permissions or choose another --storage")
        return
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # the real test (permission bits do not stop root, read-only file systems do)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise StorageError(f"{parent}: directory is not writable ({err.strerror}), cannot create {path}; choose another --storage") from None


# --- search / worker -------------------------------------------------------------------------------


class Search:
    help = "run (or resume) a study until its budget is spent"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p, "config")
        _add_budget(p)
        p.add_argument("--workers", type=_positive_int, default=1, help="local worker processes sharing the study (default 1)")
        p.add_argument("--threads", type=_positive_int, help="torch threads per worker (default: CPU cores / workers)")
        _add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true", help="Lightning's progress bars and logs, Optuna's trial logs")
        p.add_argument("--top", type=int, default=10, help="leaderboard rows printed at the end (default 10)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.leaderboard import Progress, leaderboard, state_counts
        from bonas.workers import EXIT_INTERRUPTED, WAIT, Worker, budget_status, describe_url, prepare_worker

        config, url = _load_for_run(args)
        n_trials, timeout = config.budget.n_trials, config.budget.timeout
        splits = prepare_worker(config, url, args.verbose, args.workers)
        if args.workers > 1:
            return _search_parallel(config, url, splits, args)
        worker = Worker(config, url, splits, verbose=args.verbose)
        study = worker.study
        done = budget_status(study, n_trials, timeout)
        if done not in (None, WAIT):  # WAIT: a running trial may belong to a dead worker; the loop reaps it
            _say_finished(config, done)
        else:
            print(f"study {config.name!r}: {config.dataset}, {config.sampler.name} sampler, {config.pruner.name} pruner, "
                  f"budget {n_trials} trials{f' / {timeout:g}s' if timeout else ''}, storage {describe_url(url)}", flush=True)
            progress = Progress(config.name, n_trials)
            progress.update(study)
            start = time.perf_counter()
            try:
                summary = worker.run(n_trials, timeout, on_trial=progress.update)
            finally:
                progress.close()
            elapsed = time.perf_counter() - start
            print(f"{summary.stop_reason} ({summary.finished} trials finished in this run, {elapsed:.0f}s; states {state_counts(study)})")
            if summary.interrupted:
                return EXIT_INTERRUPTED.get(summary.interrupted, 1)
            if summary.stop_reason.startswith("stopped"):
                print(leaderboard(study, top=args.top))
                return 1
        _print_results(study, config, url, args.top)
        return 0


def _say_finished(config, done: str) -> None:
    print(f"study {config.name!r} is finished ({done.removeprefix('done: ')}); raise budget.n_trials or pass --n-trials to add more")


def _print_results(study, config, url: str, top: int) -> None:
    from bonas.leaderboard import describe_best, leaderboard
    from bonas.study import mask_url

    print()
    print(leaderboard(study, top=top))
    print()
    print(describe_best(study))
    print()
    print(f"browse: bonas dashboard {config.path}   (or: optuna-dashboard {mask_url(url)})")


def _search_parallel(config, url: str, splits, args: argparse.Namespace) -> int:
    from bonas.leaderboard import Progress
    from bonas.workers import WAIT, budget_status, open_study, spawn_workers

    # The study (and its schema) exists before any worker starts: N workers never race to create it.
    _, _, study = open_study(config, url, splits.describe())
    n_trials, timeout = config.budget.n_trials, config.budget.timeout
    done = budget_status(study, n_trials, timeout)
    if done not in (None, WAIT):
        _say_finished(config, done)
    else:
        print(f"study {config.name!r}: {args.workers} workers, budget {n_trials} trials", flush=True)
        import signal

        procs = spawn_workers(config, url, args.workers, n_trials, timeout, args.verbose)
        # SIGTERM to the launcher reaches every worker: each ends its trial as FAIL, requeues it, exits.
        signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs if p.is_alive()])
        progress = Progress(config.name, n_trials)
        try:
            while any(p.is_alive() for p in procs):
                progress.update(study)
                time.sleep(1.0)
        except KeyboardInterrupt:  # Ctrl-C reached the workers too (one process group): let them finish up
            for p in procs:
                p.join(timeout=120)
        progress.update(study)
        progress.close()
        codes = [p.exitcode for p in procs]
        if any(c != 0 for c in codes):
            print(f"bonas: workers exited with codes {codes}", file=sys.stderr)
            return max(c for c in codes if c is not None) if any(c for c in codes) else 1
    _print_results(study, config, url, args.top)
    return 0


class WorkerCmd:
    help = "run one worker on a shared study (start one per GPU / machine)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p, "config")
        _add_budget(p)
        p.add_argument("--index", type=int, help="this worker's index, seeds its sampler (default: from host and pid)")
        p.add_argument("--threads", type=_positive_int, help="torch threads (default: all CPU cores)")
        _add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os
        import zlib

        from bonas.leaderboard import Progress
        from bonas.workers import EXIT_INTERRUPTED, Worker, prepare_worker

        config, url = _load_for_run(args)
        splits = prepare_worker(config, url, args.verbose)
        # Workers on several machines must not share a sampler seed, or they propose the same trials.
        index = args.index if args.index is not None else zlib.crc32(f"{os.uname().nodename}:{os.getpid()}".encode()) % 100_000
        worker = Worker(config, url, splits, index=index, seed=config.seed + 1000 * index, verbose=args.verbose)
        progress = Progress(config.name, config.budget.n_trials)
        try:
            summary = worker.run(config.budget.n_trials, config.budget.timeout, on_trial=progress.update)
        finally:
            progress.close()
        print(f"worker {worker.name}: {summary.stop_reason} ({summary.finished} finished, {summary.failed} failed, {summary.dropped} dropped)")
        if summary.interrupted:
            return EXIT_INTERRUPTED.get(summary.interrupted, 1)
        return 1 if summary.stop_reason.startswith("stopped") else 0


class Slurm:
    help = "submit N workers on a shared study as a Slurm job array (PostgreSQL or MySQL storage)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p, "config")
        p.add_argument("--workers", type=_positive_int, required=True, help="array tasks, one bonas worker each")
        p.add_argument("--gpus-per-worker", type=int, choices=(0, 1), default=0, help="0 or 1: a worker trains on one device (default 0)")
        p.add_argument("--cpus-per-worker", type=_positive_int, default=1, help="cores per task, also the worker's torch threads (default 1)")
        p.add_argument("--time", type=_slurm_time, help="time limit per task (Slurm format: 90, 2:00:00, 1-12:00:00); default the partition's")
        p.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
        _add_storage(p)
        p.add_argument("--requeue", action=argparse.BooleanOptionalAction, default=True,
                       help="let Slurm requeue a task after node failure or preemption; it rejoins the study (default: yes)")
        p.add_argument("--dry-run", action="store_true", help="print the job script; check nothing remote, write and submit nothing")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.config import load_config
        from bonas.slurm import check_storage, existing_study, find_sbatch, follow_up, make_job, render_script, submit
        from bonas.study import check_storage_url, find_config, resolve_storage, warm_start_params

        config = load_config(find_config(args.config))
        url = resolve_storage(config, args.storage)
        where = "--storage" if args.storage else "$BONAS_STORAGE" if os.environ.get("BONAS_STORAGE") else config.path
        check_storage_url(url, where)
        check_storage(url, where)
        job = make_job(config.path, config.name, args.workers, cpus=args.cpus_per_worker, gpus=args.gpus_per_worker,
                       time=args.time, partition=args.partition, requeue=args.requeue)
        script = render_script(job)
        if args.dry_run:
            print(script, end="")
            return 0
        find_sbatch()
        warm_start_params(config)  # a broken warm-start file would fail every task
        study = existing_study(config, url)
        if study is not None:
            from bonas.workers import WAIT, budget_status

            done = budget_status(study, config.budget.n_trials, config.budget.timeout)
            if done not in (None, WAIT):
                _say_finished(config, done)
                return 0
        job_id = submit(job, script, url)
        print(follow_up(job, job_id, args.config, " --storage URL" if args.storage else ""))
        return 0


def _slurm_time(text: str) -> str:
    from bonas.slurm import check_time

    try:
        return check_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --- reading studies ------------------------------------------------------------------------------


class Best:
    help = "print the best trial of a study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.leaderboard import describe_best
        from bonas.study import open_existing

        study = open_existing(args.study, args.storage).study
        print(describe_best(study))
        return 0


class Trials:
    help = "print the leaderboard of a study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--top", type=int, default=0, help="rows to print (default 0: all)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.leaderboard import leaderboard, state_counts
        from bonas.study import open_existing

        study = open_existing(args.study, args.storage).study
        print(leaderboard(study, top=args.top or None))
        print(f"\n{len(study.trials)} trials: {state_counts(study)}")
        return 0


class Show:
    help = "rebuild a trial's network from its stored params and print its layers, shapes, params and FLOPs"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("trial", type=int, help="trial number (see bonas trials)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.leaderboard import val_acc
        from bonas.model import build_model, format_summary, summarize
        from bonas.space import specs_from_params
        from bonas.spec import ArchSpec
        from bonas.study import ATTR_DATA, open_existing

        opened = open_existing(args.study, args.storage)
        study, config = opened.study, opened.config
        trials = study.get_trials(deepcopy=False)
        if not 0 <= args.trial < len(trials):
            raise StudyError(f"study {study.study_name!r} has no trial {args.trial} (trials 0..{len(trials) - 1})")
        t = trials[args.trial]
        data = study.user_attrs.get(ATTR_DATA)
        if data is None:
            raise StudyError(f"study {study.study_name!r} has no stored data shape; was it made by bonas?")
        shape = tuple(data["input_shape"])
        try:
            arch, train = specs_from_params(t.params, config.space, config.training, config.data, shape)
        except ValueError as err:
            raise StudyError(f"trial {t.number} cannot be rebuilt from its params ({err})") from None
        net = build_model(arch, shape, data["n_classes"])
        acc = val_acc(t)
        print(f"trial {t.number} of {study.study_name!r}: {t.state.name}, val_acc {'-' if acc is None else f'{acc:.4f}'}")
        print(f"  input {'x'.join(map(str, shape))}, {data['n_classes']} classes ({data['dataset']})")
        print(f"  architecture  {arch.describe()}")
        print(f"  training      {', '.join(f'{k}={v}' for k, v in dataclasses.asdict(train).items())}")
        stored = t.user_attrs.get("arch")
        if stored is not None and ArchSpec.from_dict(stored) != arch:
            print("  warning: the rebuilt architecture differs from the one stored on the trial", file=sys.stderr)
        print()
        print(format_summary(summarize(net, shape)))
        return 0


class Dashboard:
    help = "browse a study in optuna-dashboard (notes, artifacts), on 127.0.0.1 by default"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
        p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
        p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (the dashboard has no authentication)")
        _add_storage(p)
        p.add_argument("-q", "--quiet", action="store_true", help="no request log")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from optuna.artifacts import FileSystemArtifactStore

        from bonas.artifacts import artifact_dir
        from bonas.dashboard import is_loopback, serve
        from bonas.study import open_existing

        if not is_loopback(args.host) and not args.allow_remote:
            raise UsageError(f"--host {args.host} would expose the dashboard, which has no authentication, beyond this machine; "
                             "add --allow-remote if you mean it (or tunnel: ssh -L 8080:127.0.0.1:8080 host)")
        opened = open_existing(args.study, args.storage)
        folder = artifact_dir(opened.config, opened.url)
        folder.mkdir(parents=True, exist_ok=True)
        if not is_loopback(args.host):
            print(f"bonas: warning: serving on {args.host}: anyone who can reach this port can read and change the study (no authentication)", file=sys.stderr)
        print(f"optuna-dashboard for study {opened.study.study_name!r}: http://{args.host}:{args.port}/dashboard/ (artifacts: {folder}); Ctrl-C stops it", flush=True)
        try:
            serve(opened.study._storage, FileSystemArtifactStore(str(folder)), args.host, args.port, quiet=args.quiet)
        except OSError as err:
            raise UsageError(f"cannot listen on {args.host}:{args.port}: {err.strerror}; choose another --port") from None
        except KeyboardInterrupt:
            pass
        return 0


class Report:
    help = "write reports/<study>/index.html, PNG figures and trials.csv"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--out", help="output folder (default reports/<study>)")
        _add_storage(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from bonas.report import write_report
        from bonas.study import open_existing

        study = open_existing(args.study, args.storage).study
        index = write_report(study, Path(args.out or f"reports/{study.study_name}"))
        print(f"report: {index}  (figures and trials.csv beside it)")
        return 0


class Compare:
    help = "overlay the best-so-far curves of several studies (e.g. TPE against random search)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("studies", nargs="+", help="study configs or names")
        p.add_argument("--out", help="PNG to write (default reports/compare-<names>.png)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from bonas.report import compare
        from bonas.study import open_existing

        if len(args.studies) < 2:
            raise UsageError("compare needs at least two studies")
        studies = [open_existing(s).study for s in args.studies]
        out = Path(args.out or f"reports/compare-{'-vs-'.join(s.study_name for s in studies)}.png")
        path, table = compare(studies, out)
        print(table)
        print(f"\nfigure: {path}")
        return 0


class Retrain:
    help = "retrain a trial (default: the best) on train + validation, test it once, save a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_study(p)
        p.add_argument("--trial", type=int, help="trial number (default: the best completed trial)")
        p.add_argument("--epochs", type=_positive_int, help="epochs (default: 3x the search's epochs per trial)")
        p.add_argument("--full-data", action="store_true", help="ignore the search's train/val subsets: use the whole training set")
        p.add_argument("--out", help="checkpoint path (default checkpoints/<study>-trial<N>.pt)")
        p.add_argument("--data-dir", help="where data sets are found or downloaded")
        _add_storage(p)
        p.add_argument("-v", "--verbose", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.retrain import format_result, retrain
        from bonas.study import open_existing
        from bonas.train import quiet_lightning, set_threads

        opened = open_existing(args.study, args.storage)
        if args.data_dir:
            opened.config.data.dir = args.data_dir
        set_threads()
        quiet_lightning(args.verbose)
        print(format_result(retrain(opened, args.trial, args.epochs, args.full_data, args.out, args.verbose)))
        return 0


class Export:
    help = "export a checkpoint as TorchScript, torch.export (.pt2) or ONNX; reloads it and checks its outputs"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a checkpoint from bonas retrain (or a kept trial's weights artifact)")
        p.add_argument("--format", required=True, choices=["torchscript", "exported", "onnx"])
        p.add_argument("--out", help="output path (default: beside the checkpoint)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.export import export

        path, diff = export(args.checkpoint, args.format, args.out)
        print(f"{args.format}: {path} (reloaded; max |difference| from the checkpoint {diff:.2e}); input: float images in [0, 1]")
        return 0


class Predict:
    help = "classify image files with a checkpoint"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint")
        p.add_argument("images", nargs="+")
        p.add_argument("--top", type=_positive_int, default=3, help="classes shown per image (default 3)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from bonas.export import predict

        for path, ranking in predict(args.checkpoint, args.images, args.top):
            print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in ranking))
        return 0


COMMANDS = {
    "search": Search,
    "worker": WorkerCmd,
    "slurm": Slurm,
    "best": Best,
    "trials": Trials,
    "show": Show,
    "dashboard": Dashboard,
    "report": Report,
    "compare": Compare,
    "retrain": Retrain,
    "export": Export,
    "predict": Predict,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bonas", description="Bayesian-optimisation neural architecture search (Optuna + Lightning).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BonasError as err:
        print(f"bonas: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bonas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `bonas trials x | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

