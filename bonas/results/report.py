"""Static reports: ``reports/<study>/index.html`` with PNG figures and ``trials.csv``, and study comparisons.

Figures come from ``optuna.visualization.matplotlib`` where Optuna has them (history, intermediate
values, importances, parallel coordinates); accuracy against parameters and FLOPs with its Pareto front
is drawn here (Optuna's Pareto plot needs a multi-objective study). Every figure copes with conditional
spaces, pruned and failed trials; one that cannot be drawn says why in the page instead.
"""

from __future__ import annotations

import html
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from bonas.core import records as R
from bonas.results.notes import si

log = logging.getLogger("bonas.results.report")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Figure:
    name: str
    title: str
    file: str | None  # None when it could not be drawn
    why_not: str = ""


def best_so_far(recs: list[R.TrialRecord]) -> list[tuple[int, float]]:
    """(trial number, best rankable val_acc up to it), in trial order."""
    out, best = [], None
    for r in sorted(recs, key=lambda r: r.number):
        if r.rankable:
            best = r.values[0] if best is None else max(best, r.values[0])
        if best is not None:
            out.append((r.number, best))
    return out


def _save(fig, path: Path) -> str:
    with warnings.catch_warnings():  # Optuna's figures set a tight layout that long parameter names can defeat
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _optuna_figure(name: str, title: str, folder: Path, draw) -> Figure:
    plt = _plt()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = draw()
        fig = ax.figure if hasattr(ax, "figure") else ax.flatten()[0].figure
        fig.set_size_inches(7, 4.2)
        return Figure(name, title, _save(fig, folder / f"{name}.png"))
    except Exception as err:  # too few trials for importances, a one-parameter space, ...
        plt.close("all")
        return Figure(name, title, None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


def _curve_figure(recs: list[R.TrialRecord], folder: Path) -> Figure:
    """Learning curves of a multi-objective study, where Optuna keeps no intermediate values: bonas
    stores each trial's per-epoch accuracy as a user attr."""
    title = "learning curves (validation accuracy per epoch)"
    curves = [(r.curve, r.state) for r in recs if r.curve and r.trained]
    if not curves:
        return Figure("intermediate", title, None, "no trial has finished an epoch yet")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for curve, state in curves:
        pruned = state == TrialState.PRUNED
        ax.plot(range(1, len(curve) + 1), curve, c="tab:gray" if pruned else "tab:blue", alpha=0.4 if pruned else 0.7, lw=1)
    ax.plot([], [], c="tab:blue", label="completed")
    ax.plot([], [], c="tab:gray", label="pruned")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return Figure("intermediate", title, _save(fig, folder / "intermediate.png"))


def _cost_figure(recs: list[R.TrialRecord], attr: str, label: str, folder: Path) -> Figure:
    cost = (lambda r: r.params) if attr == R.PARAMS else (lambda r: r.flops)
    complete = [(cost(r), r.values[0]) for r in recs if r.rankable and cost(r) is not None]
    if not complete:
        return Figure(f"acc_vs_{attr}", f"validation accuracy against {label}", None, "no completed trial yet")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    pruned = [
        (cost(r), r.val_acc)
        for r in recs
        if r.state == TrialState.PRUNED and r.trained and cost(r) is not None and r.val_acc is not None
    ]
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), c="lightgray", s=18, label="pruned (last epoch)")
    ax.scatter(*zip(*complete, strict=True), c="tab:blue", s=22, label="complete")
    front = [(cost(r), r.values[0]) for r in R.pareto_front(recs, cost)]
    ax.step(*zip(*front, strict=True), where="post", c="tab:red", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(label + " (log)")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return Figure(f"acc_vs_{attr}", f"validation accuracy against {label}", _save(fig, folder / f"acc_vs_{attr}.png"))


def write_report(study: optuna.Study, folder: Path) -> Path:
    """Write the figures, ``trials.csv`` and ``index.html``; returns the index path."""
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    recs = R.records(trials)
    single = len(study.directions) == 1
    target = {} if single else {"target": lambda t: t.values[0], "target_name": "val_acc"}
    figures = [
        _optuna_figure("history", "best-so-far history", folder, lambda: ovm.plot_optimization_history(study, **target)),
        _optuna_figure(
            "intermediate", "learning curves (intermediate values)", folder, lambda: ovm.plot_intermediate_values(study)
        )
        if single
        else _curve_figure(recs, folder),
        _optuna_figure("importances", "parameter importances", folder, lambda: ovm.plot_param_importances(study, **target)),
        _optuna_figure(
            "parallel",
            "parallel coordinates (the most important parameters)",
            folder,
            lambda: ovm.plot_parallel_coordinate(study, params=top_params(study, 6), **target),
        ),
        _cost_figure(recs, R.PARAMS, "parameters", folder),
        _cost_figure(recs, R.FLOPS, "FLOPs per image", folder),
    ]
    if not single:

        def pareto():
            ax = ovm.plot_pareto_front(study)
            ax.set_yscale("log")  # params, FLOPs and latency span orders of magnitude
            return ax

        figures.append(_optuna_figure("pareto", "Pareto front (all objectives)", folder, pareto))
    csv = write_trials_csv(study, folder / "trials.csv")
    index = folder / "index.html"
    index.write_text(_html(study, recs, figures, csv.name), encoding="utf-8")
    return index


def top_params(study: optuna.Study, k: int) -> list[str]:
    """The k most important parameters (fANOVA over the params every completed trial has), else the
    k params most trials have: a readable parallel-coordinates plot of a conditional space."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = None if len(study.directions) == 1 else (lambda t: t.values[0])
            return list(optuna.importance.get_param_importances(study, target=target))[:k]
    except Exception:
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            for name in t.params:
                counts[name] = counts.get(name, 0) + 1
        return sorted(counts, key=lambda n: -counts[n])[:k]


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """Optuna's own trials_dataframe (params, user attrs, states, durations), one row per trial."""
    df = study.trials_dataframe(
        attrs=(
            "number",
            "value" if len(study.directions) == 1 else "values",
            "state",
            "datetime_start",
            "datetime_complete",
            "duration",
            "params",
            "user_attrs",
        )
    )
    df.to_csv(path, index=False)
    return path


def _html(study: optuna.Study, recs: list[R.TrialRecord], figures: list[Figure], csv_name: str) -> str:
    e = html.escape
    counts = R.state_counts(r.trial for r in recs)
    rows = []
    rank = 0
    for r in R.ranked(recs):
        rank += r.rankable
        acc = r.val_acc
        reason = "" if r.reason == R.COMPLETED else r.reason
        rows.append(
            f"<tr><td>{rank if r.rankable else '-'}</td><td>{r.number}</td><td>{r.state.name}</td>"
            f"<td>{'-' if acc is None else f'{acc:.4f}'}</td><td>{si(r.params)}</td>"
            f"<td>{si(r.flops)}</td><td>{'-' if r.epochs is None else r.epochs}</td>"
            f"<td><code>{e(r.arch_line)}</code> {e(reason)}</td></tr>"
        )
    figs = []
    for f in figures:
        if f.file:
            figs.append(f"<figure><img src='{e(f.file)}' alt='{e(f.title)}'><figcaption>{e(f.title)}</figcaption></figure>")
        else:
            figs.append(f"<figure class='missing'><figcaption>{e(f.title)}: not drawn ({e(f.why_not)})</figcaption></figure>")
    config = study.user_attrs.get(R.STUDY_CONFIG, {})
    env = study.user_attrs.get(R.STUDY_ENV, {})
    state_line = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    sampler, pruner = config.get("sampler", {}).get("name", "?"), config.get("pruner", {}).get("name", "?")
    torch_version, cpu = env.get("packages", {}).get("torch", "?"), env.get("cpu", "?")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bonas report: {e(study.study_name)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'">
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}figure{{display:inline-block;margin:.5em}}
img{{max-width:560px;border:1px solid #ddd}}table{{border-collapse:collapse}}
td,th{{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}}
.missing{{color:#a00}}code{{font-size:90%}}</style></head><body>
<h1>Study <code>{e(study.study_name)}</code></h1>
<p>{len(recs)} trials ({e(state_line)}); dataset {e(str(config.get("dataset", "?")))}; sampler {e(str(sampler))},
pruner {e(str(pruner))}; torch {e(str(torch_version))} on {e(str(cpu))}
{e(", ".join(env.get("gpus", [])))}. Data: <a href="{e(csv_name)}">{e(csv_name)}</a>.</p>
{"".join(figs)}
<h2>Leaderboard</h2>
<table><tr><th>rank</th><th>trial</th><th>state</th><th>val_acc</th><th>params</th><th>FLOPs</th><th>epochs</th><th>architecture</th></tr>
{"".join(rows)}</table></body></html>
"""


def compare(studies: list[optuna.Study], path: Path) -> tuple[Path, str]:
    """Best-so-far curves of several studies on one figure; returns the PNG and a text table."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lines = [f"{'study':<24}{'trials':>7}{'complete':>9}{'pruned':>7}{'best':>8}  reached at trial"]
    for study in studies:
        recs = R.records(study.get_trials(deepcopy=False))
        curve = best_so_far(recs)
        if curve:
            xs, ys = zip(*curve, strict=True)
            ax.step(xs, ys, where="post", label=study.study_name)
        top = R.best(recs)
        best = top.values[0] if top is not None else None
        reached = next((n for n, b in curve if best is not None and b >= best), None)
        n_complete = sum(r.state == TrialState.COMPLETE for r in recs)
        n_pruned = sum(r.state == TrialState.PRUNED for r in recs)
        shown = "-" if best is None else f"{best:.4f}"
        lines.append(
            f"{study.study_name:<24}{len(recs):>7}{n_complete:>9}{n_pruned:>7}{shown:>8}  {'-' if reached is None else reached}"
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path, "\n".join(lines)
