"""bonas from Python (a script or a notebook): search, a budget to a tested model, the trials as a DataFrame, the
best trial, a trained model back.

    import bonas
    study = bonas.search("studies/digits.toml", n_trials=10)
    bonas.trials(study)                       # a pandas DataFrame, one row per trial
    result = bonas.run("studies/digits.toml", budget="2m")
    net, preprocess = bonas.load(result.checkpoint)

``config`` is a TOML path (or a ``studies/<name>`` name), a dict of the same tables, or a :class:`StudyConfig`.
``data`` is your own data (a Dataset, a (train, test) pair, a LightningDataModule: bonas.data.python), instead
of the config's data set. Ctrl-C stops cleanly, as SIGTERM does from the command line: the running trial ends
FAIL and its params are queued again (the next run goes on from its saved state), then KeyboardInterrupt is raised.
In Jupyter the progress is tqdm's notebook bar.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import optuna

from bonas.config import StudyConfig, config_from_dict, load_config
from bonas.core import records as R
from bonas.core.errors import ConfigError

EXIT_INTERRUPTED = (130, 143)


def _config(config: str | Path | dict[str, Any] | StudyConfig, storage: str | None) -> tuple[StudyConfig, str]:
    from bonas.nas.choices import check_choices
    from bonas.study.studies import find_config, warm_start_params
    from bonas.study.urls import check_storage_url, check_writable, resolve_storage

    if isinstance(config, StudyConfig):
        config = copy.deepcopy(config)
    elif isinstance(config, dict):
        config = config_from_dict(config, source="<dict config>")
    else:
        config = load_config(find_config(str(config)))
    if not config.name:
        raise ConfigError("a config from Python needs a name (the study's name in its storage)")
    check_choices(config)
    url = resolve_storage(config, storage)
    check_storage_url(url, "storage" if storage else config.path)
    check_writable(url)
    warm_start_params(config)
    return config, url


def _with_data(config: StudyConfig, data: Any) -> StudyConfig:
    """The config reading ``data`` (a store of it, made once) instead of its own data set."""
    if data is None:
        return config
    from bonas.data.python import store_from_python
    from bonas.data.raw import data_dir

    store, _, _ = store_from_python(data, data_dir(config.data))
    config.dataset = "python"
    config.data = dataclasses.replace(config.data, store=str(store.path))
    return config


def _worker(config: StudyConfig, url: str, verbose: bool, workers: int = 1):
    from bonas.nas.worker import Worker, prepare_worker

    return Worker(config, url, prepare_worker(config, url, verbose, workers), verbose=verbose)


def search(
    config: str | Path | dict[str, Any] | StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    data: Any = None,
    workers: int = 1,
    verbose: bool = False,
) -> optuna.Study:
    """Run (or resume) the study until its budget is spent; returns the Optuna study.

    ``n_trials`` / ``timeout``: the study's total budget (over the config's); ``storage``: an Optuna RDB URL (over
    the config's); ``data``: your own data (see the module doc); ``workers``: local worker processes."""
    from bonas.commands.processes import spawn_workers, supervise
    from bonas.nas.worker import exit_code
    from bonas.results.leaderboard import Progress

    config, url = _config(config, storage)
    config.budget.n_trials = n_trials or config.budget.n_trials
    config.budget.timeout = config.budget.timeout if timeout is None else timeout
    config = _with_data(config, data)
    worker = _worker(config, url, verbose, workers)
    progress = Progress(config.name, config.budget.n_trials)
    try:
        if workers > 1:
            code = supervise(spawn_workers(config, url, workers, verbose), lambda: progress.update(worker.study))
        else:
            code = exit_code(worker.run(config.budget.n_trials, config.budget.timeout, on_trial=progress.update))
    finally:
        progress.update(worker.study)
        progress.close()
    if code in EXIT_INTERRUPTED:
        raise KeyboardInterrupt(f"bonas: the search of {config.name!r} was interrupted; its running trial is queued again")
    return worker.study


def run(
    config: str | Path | dict[str, Any] | StudyConfig,
    *,
    budget: float | str,
    data: Any = None,
    storage: str | None = None,
    share: float | None = None,
    workers: int = 1,
    out: str | None = None,
    report_dir: str | None = None,
    verbose: bool = False,
):
    """From a wall-clock ``budget`` (seconds, or "90s", "45m", "1h30m") to a tested model: search, then train the
    winner on the whole training split until the budget's end and test it once. Returns the run's record
    (bonas.commands.run.RunRecord: test accuracy, checkpoint path, best trial, seconds spent)."""
    from bonas.commands.run import RunStopped, run_budget
    from bonas.core.durations import parse_duration

    seconds = parse_duration(budget) if isinstance(budget, str) else float(budget)
    config, url = _config(config, storage)
    config = _with_data(config, data)
    worker = _worker(config, url, verbose)
    try:
        return run_budget(config, url, worker, seconds, share, out, report_dir, workers, verbose)
    except RunStopped as stopped:
        if stopped.code in EXIT_INTERRUPTED:
            raise KeyboardInterrupt(f"bonas: the run of {config.name!r} was interrupted") from None
        raise


def _study(study_or_config: optuna.Study | str | Path, storage: str | None) -> optuna.Study:
    if isinstance(study_or_config, optuna.Study):
        return study_or_config
    from bonas.study.studies import open_existing

    return open_existing(str(study_or_config), storage).study


def best(study_or_config: optuna.Study | str | Path, storage: str | None = None) -> R.TrialRecord | list[R.TrialRecord]:
    """The best trial's record (architecture, knobs, accuracy, cost); a multi-objective study's Pareto front."""
    study = _study(study_or_config, storage)
    recs = R.records(study.get_trials(deepcopy=False))
    if len(study.directions) > 1:
        return R.pareto_front(recs)
    found = R.best(recs)
    if found is None:
        raise ValueError(f"study {study.study_name!r} has no completed trial yet")
    return found


def trials(study_or_config: optuna.Study | str | Path, storage: str | None = None):
    """Optuna's ``trials_dataframe`` (params, user attrs, states, times) plus bonas' columns: the architecture in one
    line, parameters, FLOPs per image, epochs trained and why the trial ended; in leaderboard order."""
    study = _study(study_or_config, storage)
    frame = study.trials_dataframe()
    recs = {r.number: r for r in R.records(study.get_trials(deepcopy=False))}
    columns = {
        "architecture": lambda r: r.arch_line,
        "parameters": lambda r: r.params,
        "flops": lambda r: r.flops,
        "epochs": lambda r: r.epochs,
        "end_reason": lambda r: r.reason,
    }
    for name, value in columns.items():
        frame[name] = [value(recs[n]) for n in frame["number"]]
    order = {r.number: i for i, r in enumerate(R.ranked(recs.values()))}
    return frame.sort_values("number", key=lambda s: s.map(order)).reset_index(drop=True)


def load(checkpoint: str | Path):
    """(the trained network in eval mode, a ``preprocess`` callable): ``net(preprocess(images))`` gives logits.
    ``preprocess`` takes image files, PIL images, or uint8 / [0, 1] float tensors (C, H, W) or (N, C, H, W), resized
    and cropped as the training images were; ``preprocess.classes`` names the outputs."""
    from bonas.model.export import Preprocessor, deployed_from_checkpoint

    model, ckpt = deployed_from_checkpoint(checkpoint)
    return model.net, Preprocessor(tuple(ckpt["input_shape"]), ckpt["mean"], ckpt["std"], list(ckpt["classes"]))
