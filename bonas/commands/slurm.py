"""bonas workers as a Slurm job array: one array task runs one ``bonas worker`` on the shared study.

:func:`render_script` writes the sbatch script, :func:`submit` hands it to ``sbatch``. The storage URL never
enters the script: the script reads ``$BONAS_STORAGE``, which only the ``sbatch`` call's environment carries
(sbatch exports the submitting environment to the tasks), so a password stays out of files and ``ps``.
The worker is ``exec``-ed: it is the batch step's only process, so the SIGTERM that Slurm sends on
``scancel``, a time limit or preemption reaches it directly, and it ends its trial as FAIL, requeues the
trial's params for a peer and exits 143.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bonas.config import StudyConfig
from bonas.core.errors import SchedulerError, StorageError
from bonas.study.urls import mask_url, sqlite_path

SBATCH_TIMEOUT_S = 120  # sbatch retries an unreachable controller for a while; do not hang longer than this
SLURM_TIME = re.compile(r"(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2}|infinite|unlimited)", re.IGNORECASE)


@dataclass(frozen=True)
class ArrayJob:
    """What one submission asks of Slurm; every path absolute (tasks may start on other nodes)."""

    config: Path  # the study config each worker reads
    study: str  # the study's name: the job's name
    workers: int  # array tasks 0..workers-1, one worker each
    cpus: int = 1  # cores per task, also the worker's torch threads
    gpus: int = 0  # 0 or 1: a bonas worker trains on one device
    time: str | None = None  # Slurm time limit per task; None: the partition's default
    partition: str | None = None  # None: the cluster's default partition
    requeue: bool = True  # may Slurm requeue a task (node failure, preemption, scontrol requeue)?
    log_dir: Path = Path()  # <config dir>/<study>.slurm: the script and the tasks' logs
    workdir: Path = Path()  # where the tasks run (relative paths in the config resolve from here)
    bonas: Path = Path()  # the bonas executable

    @property
    def log_pattern(self) -> Path:
        return self.log_dir / "%A_%a.out"  # %A: the array's job id, %a: the task


def check_time(text: str) -> str:
    """A Slurm time limit (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS), checked before sbatch sees it."""
    if not SLURM_TIME.fullmatch(text):
        raise ValueError(f"not a Slurm time limit: {text!r}; e.g. 90 (minutes), 2:00:00 or 1-12:00:00")
    return text


def check_storage(url: str, where: str) -> None:
    """Array tasks may land on several nodes: a SQLite file cannot be shared by them."""
    path = sqlite_path(url)
    if path is not None:
        raise StorageError(
            f"{where}: SQLite storage ({path}) cannot be shared by array tasks that may run on several nodes; "
            f"use PostgreSQL or MySQL (--storage postgresql://user@host/db), or for one node submit one job: "
            f"sbatch -c N --wrap 'bonas search CONFIG --workers N'"
        )


def bonas_executable() -> Path:
    """The ``bonas`` of this installation (beside this Python), so the tasks run the same code."""
    exe = Path(sys.executable).parent / "bonas"
    if not os.access(exe, os.X_OK):
        raise SchedulerError(
            f"no bonas executable beside {sys.executable} ({exe}); install bonas (pip install -e .) in that environment"
        )
    return exe


def make_job(config_path: str, study: str, workers: int, **options) -> ArrayJob:
    config = Path(config_path).resolve()
    return ArrayJob(
        config=config,
        study=study,
        workers=workers,
        log_dir=config.parent / f"{study}.slurm",
        workdir=Path.cwd(),
        bonas=bonas_executable(),
        **options,
    )


def existing_study(config: StudyConfig, url: str):
    """The study the tasks will share, checked before anything is submitted; None when it does not exist yet.

    Not created here: that needs the data set loaded (its shape is a study record), and the tasks create it
    safely themselves, under the study lock (N workers starting at once on an empty database: tested). What is
    checked is what would otherwise fail every task at once: an unreachable database, or a study of that name
    with a different config. Nothing is written: the schema is only read when it already exists.
    """
    import optuna
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from bonas.study.storage import connect_args, open_storage
    from bonas.study.studies import check_resumable

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **connect_args(url))
    try:
        with engine.connect() as conn:
            has_schema = sqlalchemy.inspect(conn).has_table("studies")
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(
            f"cannot reach storage {mask_url(url)}: {mask_url(reason)}; the array's tasks would fail too"
        ) from None
    finally:
        engine.dispose()
    if not has_schema:
        return None
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(url))
    except KeyError:
        return None
    check_resumable(config, study, url)
    return study


def render_script(job: ArrayJob) -> str:
    """The sbatch script: resources as #SBATCH lines, then one exec'd ``bonas worker`` per array task."""
    # No --ntasks: SLURM_NTASKS in a task's environment makes Lightning take it for a srun rank (SLURMEnvironment).
    sbatch = [
        f"--job-name=bonas-{job.study}",
        f"--array=0-{job.workers - 1}",
        f"--cpus-per-task={job.cpus}",
        f"--gres=gpu:{job.gpus}" if job.gpus else None,
        f"--time={job.time}" if job.time else None,
        f"--partition={job.partition}" if job.partition else None,
        "--requeue" if job.requeue else "--no-requeue",
        f"--chdir={_quoted(job.workdir)}",
        f"--output={_quoted(job.log_pattern)}",
        "--open-mode=append",  # a requeued task adds to its log instead of erasing the first run's
    ]
    worker = [str(job.bonas), "worker", str(job.config), "--threads", str(job.cpus)]
    lines = [
        "#!/bin/bash",
        f"# bonas slurm: {job.workers} workers on study {job.study!r}, one per array task.",
        "# Resubmit: BONAS_STORAGE=URL sbatch THIS_FILE",
        *(f"#SBATCH {opt}" for opt in sbatch if opt),
        "",
        "# The storage URL (with its password) is passed in the environment by bonas slurm, never written here.",
        ': "${BONAS_STORAGE:?is not set: submit with bonas slurm, or export BONAS_STORAGE before sbatch}"',
        "export PYTHONUNBUFFERED=1  # the log shows each line as it happens",
        "# Each task's sampler gets its own seed; a requeued task (SLURM_RESTART_COUNT) a new one, so it does not",
        "# repeat its first run's random proposals.",
        f"index=$((SLURM_ARRAY_TASK_ID + {job.workers} * ${{SLURM_RESTART_COUNT:-0}}))",
        "# exec: the worker is the task's only process and receives Slurm's SIGTERM itself (scancel, time limit,",
        "# preemption): it ends its trial as FAIL, requeues the params for a peer and exits 143.",
        f'exec {shlex.join(worker)} --index "$index"',
        "",
    ]
    return "\n".join(lines)


def find_sbatch() -> str:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SchedulerError(
            "sbatch is not on PATH; run bonas slurm on a Slurm login node (a one-node test cluster: bash .ci/slurm.sh start)"
        )
    return sbatch


def _quoted(path: Path) -> str:
    """A path as an #SBATCH value: double quotes when it has spaces (sbatch reads them like a shell)."""
    return f'"{path}"' if re.search(r"\s", str(path)) else str(path)


def submit(job: ArrayJob, script: str, url: str) -> str:
    """Submit the script with the storage URL in sbatch's environment only; returns the job id.

    The log folder exists before any task starts (Slurm does not create it); the script is saved as
    ``<log dir>/<job id>.sbatch`` once Slurm accepted it. When sbatch refuses, nothing is left behind.
    """
    sbatch = find_sbatch()
    made = not job.log_dir.exists()
    try:
        job.log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SchedulerError(f"cannot create {job.log_dir} for the job's script and logs: {err.strerror}") from None
    env = {**os.environ, "BONAS_STORAGE": url}
    try:
        # --export=ALL: the tasks get this environment (BONAS_STORAGE, PATH, BONAS_DATA_DIR) even where the
        # site sets SBATCH_EXPORT=NONE; the script comes on stdin so no file exists before Slurm accepts it.
        proc = subprocess.run(
            [sbatch, "--parsable", "--export=ALL"],
            input=script,
            env=env,
            capture_output=True,
            text=True,
            timeout=SBATCH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0:
        if made:
            shutil.rmtree(job.log_dir, ignore_errors=True)
        if proc is None:
            raise SchedulerError(f"sbatch did not answer within {SBATCH_TIMEOUT_S}s; is slurmctld up? (sinfo)")
        raise SchedulerError(f"sbatch refused the job: {sbatch_message(proc.stderr or proc.stdout)}")
    job_id = proc.stdout.strip().split(";")[0]  # --parsable: "<id>" or "<id>;<cluster>"
    try:
        (job.log_dir / f"{job_id}.sbatch").write_text(script)
    except OSError as err:
        print(f"bonas: warning: job {job_id} submitted, but its script was not saved: {err.strerror}", file=sys.stderr)
    return job_id


def sbatch_message(stderr: str) -> str:
    """sbatch's own words, on one line, without its 'sbatch: error:' prefixes (and never a password)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"sbatch: (error|fatal): ", line)] or lines
    return mask_url("; ".join(re.sub(r"^sbatch: (error|fatal): ", "", line) for line in errors)) or "no message (exit code only)"


def follow_up(job: ArrayJob, job_id: str, config_arg: str, storage_flag: str) -> str:
    """What to run next: watch the tasks, the study, the logs; stop the array."""
    cfg = shlex.quote(config_arg)
    return "\n".join(
        [
            f"submitted job array {job_id}: {job.workers} bonas worker{'s' if job.workers > 1 else ''} on study {job.study!r} "
            f"({job.cpus} CPU{'s' if job.cpus > 1 else ''}{', 1 GPU' if job.gpus else ''} each)",
            f"  script:  {job.log_dir / f'{job_id}.sbatch'}",
            f"  logs:    {job.log_dir / f'{job_id}_<task>.out'}",
            f"  tasks:   squeue -j {job_id}",
            f"  study:   bonas trials {cfg}{storage_flag}",
            f"  browse:  bonas dashboard {cfg}{storage_flag}",
            f"  stop:    scancel {job_id}   (each worker fails its running trial, requeues its params and exits)",
        ]
    )


def slurm_command(
    config_path: str,
    workers: int,
    cpus: int,
    gpus: int,
    time: str | None,
    partition: str | None,
    storage: str | None,
    requeue: bool,
    dry_run: bool,
) -> int:
    """`bonas slurm`: check, render, submit (or print, with --dry-run) the job array."""
    from bonas.commands.search import say_finished
    from bonas.config import load_config
    from bonas.nas.choices import check_choices
    from bonas.study.budget import Verdict, budget_status
    from bonas.study.studies import find_config, warm_start_params
    from bonas.study.urls import ENV_STORAGE, check_storage_url, resolve_storage

    config = load_config(find_config(config_path))
    check_choices(config)
    url = resolve_storage(config, storage)
    where = "--storage" if storage else f"${ENV_STORAGE}" if os.environ.get(ENV_STORAGE) else config.path
    check_storage_url(url, where)
    check_storage(url, where)
    job = make_job(config.path, config.name, workers, cpus=cpus, gpus=gpus, time=time, partition=partition, requeue=requeue)
    script = render_script(job)
    if dry_run:
        print(script, end="")
        return 0
    find_sbatch()
    warm_start_params(config)  # a broken warm-start file would fail every task
    study = existing_study(config, url)
    if study is not None:
        status = budget_status(study.get_trials(deepcopy=False), config.budget.n_trials, config.budget.timeout)
        if status.verdict == Verdict.DONE:
            say_finished(config, status.describe())
            return 0
    job_id = submit(job, script, url)
    print(follow_up(job, job_id, config_path, " --storage URL" if storage else ""))
    return 0
