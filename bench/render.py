"""Render docs/results.md from bench/results/*.json, so that no measured figure is ever typed by hand.

Every table, figure and number on the page is formatted from a results file, and every table names that
file, the commit it was measured at, the machine and the date. A result is marked stale when the code its
bench exercises (``BENCH_PATHS``) differs between the result's commit and the working tree: a content
comparison (``git diff``), never commit dates, so the committed page does not change when later history
does, only when the code or the results do.

    .venv/bin/python bench/render.py            # write docs/results.md
    .venv/bin/python bench/render.py --check    # exit 1 and print a diff when the committed page is out of date
    .venv/bin/python bench/render.py --glance   # print the short summary proposed for the README

Standard library only: it must run (and be tested) without torch.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import statistics
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = "bench/results"
PAGE = "docs/results.md"

# What each bench exercises, by layer of the package (the layout after the reorganisation into subpackages).
CORE = "bonas/core/"  # errors, records, spec
CONFIG = "bonas/config/"
STUDY = "bonas/study/"  # storage URLs, RDB storage, the study lock, studies, samplers/pruners, budget, claims, ASHA
RESULTS_LAYER = "bonas/results/"  # leaderboard, notes, report, dashboard
DATA = "bonas/data/"  # data sets, caches, splits, batches, augmentation
MODEL = "bonas/model/"  # blocks, build_model, FLOPs, checkpoint, export
TRAINING = "bonas/training/"  # recipe, LightningModule, callbacks, training states
SEARCH = "bonas/nas/"  # space, proxies, screen, objective, the worker loop, kept artifacts
COMMANDS = "bonas/commands/"  # search/worker processes, run, slurm, retrain (the final training), show
CLI = ["bonas/cli.py", "bonas/cli/"]  # a module or a package (argument types beside the parser)
API = "bonas/api.py"
PACKAGE = ["bonas/__init__.py", "bonas/__main__.py"]
TRIAL = [CORE, CONFIG, DATA, MODEL, TRAINING, SEARCH]  # one trial, from its config to its validation accuracy
WHOLE = [*TRIAL, STUDY, RESULTS_LAYER, COMMANDS, *CLI, API, *PACKAGE]  # a bench that runs the `bonas` command itself

# One entry per bench (``bench:part`` where a part of a results file exercises other code); the study config a
# results file names (its ``config``) is added to its list. Edit here when a bench starts exercising more.
BENCH_PATHS: dict[str, list[str]] = {
    "budget": [*WHOLE, "bench/budget.py", "studies/warm-start/"],  # `bonas run` as a subprocess, then train_final
    "own_data": [*WHOLE, "bench/own_data.py", "bench/photos.py"],  # `bonas run` on a photo folder, and the data path
    "selection": [*TRIAL, STUDY, COMMANDS, "bench/selection.py"],  # a search, the race, final trainings
    "final_recipe": [CORE, CONFIG, DATA, MODEL, TRAINING, "bench/final_recipe.py", "bench/budget.py"],
    "data_path": [DATA, "bench/data_path.py"],
    "fidelity": [*TRIAL, STUDY, "bench/fidelity.py"],  # its study config is inline in the bench
    "mo_pruning": [*TRIAL, STUDY, "bench/mo_pruning.py", "bench/presets.py", "studies/digits.toml"],
    "overhead": [*TRIAL, STUDY, RESULTS_LAYER, "bench/overhead.py"],  # the trial's note is part of its fixed cost
    "quickstart": [*WHOLE, "bench/quickstart.py", "studies/digits.toml"],
    "recipe": [*TRIAL, "bench/recipe.py"],
    "repeats": [*WHOLE, "bench/repeats.py", "bench/presets.py", "studies/seed.toml", "studies/digits.toml"],
    "screening": [*TRIAL, STUDY, "bench/screening.py"],
    "search_quality": [*WHOLE, "bench/search_quality.py", "studies/digits.toml", "studies/seed.toml"],  # `bonas search`
    "startup": [*CLI, CORE, CONFIG, STUDY, RESULTS_LAYER, COMMANDS, "bench/startup.py"],
    "storage": [STUDY, SEARCH, "bench/storage.py", "bench/presets.py"],  # the claim loop; the worker loop is copied
    "storage:real": [*WHOLE, "bench/storage.py", "bench/presets.py", "studies/fashion-mnist.toml"],  # `bonas search`
    "zero_cost": [*TRIAL, "bench/zero_cost.py"],
}

# The modules each layer was made of before the reorganisation (where main's first reorganised commit put them):
# results measured before it are compared with these too, so that a change to the old modules shows. Delete an
# entry once no results file predates it.
BEFORE_LAYERS: dict[str, list[str]] = {
    CORE: ["bonas/errors.py", "bonas/records.py", "bonas/spec.py"],
    CONFIG: ["bonas/config.py", "bonas/validate.py"],
    STUDY: ["bonas/urls.py", "bonas/storage.py", "bonas/lock.py", "bonas/study.py", "bonas/budget.py", "bonas/promotion.py"],
    RESULTS_LAYER: ["bonas/leaderboard.py", "bonas/notes.py", "bonas/report.py", "bonas/dashboard.py"],
    DATA: ["bonas/data.py", "bonas/datasets.py"],
    MODEL: ["bonas/model.py", "bonas/checkpoint.py", "bonas/export.py"],
    TRAINING: ["bonas/train.py", "bonas/callbacks.py", "bonas/resume.py"],
    SEARCH: [
        "bonas/space.py",
        "bonas/proxies.py",
        "bonas/screen.py",
        "bonas/objective.py",
        "bonas/workers.py",
        "bonas/artifacts.py",
    ],
    COMMANDS: ["bonas/search.py", "bonas/run.py", "bonas/slurm.py", "bonas/rebuild.py", "bonas/retrain.py"],
    "bonas/cli/": ["bonas/argtypes.py"],
}

# Goals and cut-offs the text compares results with: set by the project, not measured.
SAMPLER_GOAL = 1 / 3  # TPE should match random search's 60-trial best in at most a third of its trials
PRUNER_GOAL = (3.0, 0.003)  # pruning: 3x fewer epochs, best validation accuracy within 0.3 points of no pruning
FIDELITY_GOAL = 3.0  # issue 14 (bench/fidelity.py): 3x fewer epochs, best within one standard error of no pruning
LEARNED = 0.25  # zero-cost: a network below this validation accuracy after its epochs has not started to learn


# ---------------------------------------------------------------------------------------------- freshness


@dataclass(frozen=True)
class Freshness:
    """How a result's commit compares with the working tree, over the paths its bench exercises."""

    commit: str  # as recorded, ``-dirty`` included
    status: str  # "fresh", "stale" or "unverifiable"
    changed: tuple[str, ...] = ()  # files under the paths that differ, as git names them
    groups: tuple[str, ...] = ()  # the same, one entry per listed path ("bonas/data/ (2 files)")
    why: str = ""  # why it cannot be checked, when it cannot

    @property
    def dirty(self) -> bool:
        return self.commit.endswith("-dirty")

    @property
    def short(self) -> str:
        return self.commit.removesuffix("-dirty")[:7]

    @property
    def shown(self) -> str:
        """The commit as the page shows it: short, ``-dirty`` kept; as recorded when it is not one."""
        return self.commit if self.why else self.short + "-dirty" * self.dirty

    def label(self, date: str, listed: bool = True) -> str:
        """One line that says what is known about the result's freshness, and nothing that depends on later history;
        ``listed=False`` leaves out the list of changed paths (already given above on the page)."""
        when = f" ({date[:10]})" if date else ""
        if self.why:
            return f"⚠ unverifiable: {self.why}{when}; its freshness cannot be checked"
        at = f"measured at {self.short}{when}"
        if self.dirty:
            at = f"measured on uncommitted changes on top of {self.short}{when}, which the file does not record"
        if self.status == "stale":
            n = plural(len(self.changed), "file")
            if not listed:
                return f"⚠ stale: {at}; {n} changed since under the paths it exercises (listed above)"
            return f"⚠ stale: {at}; since then {n} changed under the paths it exercises: {', '.join(self.groups)}"
        if self.dirty:
            return f"⚠ unverifiable: {at}; the paths it exercises are unchanged since {self.short}"
        return f"fresh: {at}; the paths it exercises are unchanged since"

    def summary(self) -> str:
        """The freshness column of the summary table."""
        if self.status == "stale":
            return f"⚠ stale ({plural(len(self.changed), 'file')} changed)"
        if self.status == "unverifiable":
            return "⚠ unverifiable (" + ("uncommitted changes" if self.dirty and not self.why else "commit unknown here") + ")"
        return "fresh"


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def freshness(root: Path, commit: str, paths: Iterable[str]) -> Freshness:
    """Compare ``commit`` (``-dirty`` allowed) with the working tree of ``root`` over ``paths`` (folders end in /)."""
    base = commit.removesuffix("-dirty")
    if not re.fullmatch(r"[0-9a-f]{7,40}", base):
        return Freshness(commit, "unverifiable", why=f"no commit recorded ({commit or 'empty'!r})")
    if git(root, "cat-file", "-e", f"{base}^{{commit}}").returncode != 0:
        return Freshness(commit, "unverifiable", why=f"measured at {base[:7]}, a commit this clone does not have")
    paths = sorted(set(paths))
    diff = git(root, "diff", "--name-only", "--no-renames", "--no-ext-diff", base, "--", *paths)
    if diff.returncode != 0:
        return Freshness(commit, "unverifiable", why=f"git diff against {base[:7]} failed")
    # files not yet added count too: the page rendered before a commit must equal the one rendered after it
    untracked = git(root, "ls-files", "--others", "--exclude-standard", "--", *paths)
    changed = tuple(sorted(set(diff.stdout.splitlines()) | set(untracked.stdout.splitlines())))
    status = "stale" if changed else ("unverifiable" if commit.endswith("-dirty") else "fresh")
    return Freshness(commit, status, changed, tuple(group_changes(changed, paths)))


def group_changes(changed: Iterable[str], paths: list[str], names: int = 6) -> list[str]:
    """The changed files by listed path: a file as itself; a folder, or a layer whose modules from before the
    reorganisation changed, with its count (and the files' names when there are at most ``names``)."""
    layer_of = {old: layer for layer, olds in BEFORE_LAYERS.items() for old in olds}
    groups: dict[str, list[str]] = {}
    for f in changed:
        key = layer_of.get(f) or next((p for p in paths if p.endswith("/") and f.startswith(p)), f)
        groups.setdefault(key, []).append(f)
    out = []
    for key, files in sorted(groups.items()):
        listed = sorted(f.removeprefix(key) if f.startswith(key) else f.removeprefix("bonas/") for f in files)
        n = plural(len(files), "file") + (f": {', '.join(listed)}" if len(files) <= names else "")
        out.append(key if files == [key] else f"{key} ({n})")
    return out


def bench_paths(bench: str, part: str | None, data: dict) -> list[str]:
    """What a result exercises: its bench's paths, the modules those layers were made of before, its study config."""
    if bench not in BENCH_PATHS:
        raise KeyError(f"bench/render.py: no BENCH_PATHS entry for bench {bench!r}: add the paths it exercises")
    listed = BENCH_PATHS.get(f"{bench}:{part}", BENCH_PATHS[bench])
    before = [old for path in listed for old in BEFORE_LAYERS.get(path, [])]
    return sorted({*listed, *before, *study_configs(data)})


def study_configs(data: dict) -> list[str]:
    """The study config a results file says it ran (``config`` or ``settings.config``), relative to the repository."""
    named = [data.get("config"), (data.get("settings") or {}).get("config")]
    return ["studies/" + c.rsplit("studies/", 1)[1] for c in named if isinstance(c, str) and "studies/" in c]


# ---------------------------------------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Source:
    """Where one result came from: its file (and part), command, commit, date, machine, and its freshness."""

    file: str
    part: str | None
    bench: str
    command: str
    date: str
    machine: str
    note: str
    fresh: Freshness

    @property
    def name(self) -> str:
        return f"`{RESULTS_DIR}/{self.file}`" + (f" (key `{self.part}`)" if self.part else "")

    def cite(self, first: bool = True) -> str:
        """The lines under a heading: a visible warning when stale or unverifiable, then the source; the list of
        changed paths and the file's note only where the page cites it ``first``."""
        lines = [] if self.fresh.status == "fresh" else [f"> {self.fresh.label(self.date, listed=first)}", ""]
        command = f" · `{self.command}`" if self.command else ""
        commit = self.fresh.commit if self.fresh.why else self.fresh.short + " plus uncommitted changes" * self.fresh.dirty
        lines.append(f"Source: {self.name}{command} · commit {commit} · {self.date[:10]} · {self.machine}")
        if self.fresh.status == "fresh":
            lines[-1] += " · fresh: the paths it exercises are unchanged since"
        if self.note and first:
            lines += ["", f"Provenance note in the file: “{self.note}”"]
        return "\n".join(lines)


def machine_text(machine: dict | str | None) -> str:
    """The machine in words: GPU (with its host), else CPU model; cores."""
    if isinstance(machine, str):
        return machine
    machine = machine or {}
    cpu = machine.get("cpu") or (f"{machine['processor']} (CPU model not recorded)" if machine.get("processor") else None)
    cpu = cpu or "CPU model not recorded"
    cores = f", {machine['cores']} cores" if machine.get("cores") else ""
    if machine.get("gpu"):
        return f"{machine['gpu']} GPU, host {cpu}{cores}"
    return cpu + cores


def parts(data: dict) -> list[str | None]:
    """A file with one provenance is one result; a file whose parts carry their own (storage.json) is several."""
    if "git_commit" in data or "provenance" in data:
        return [None]
    return sorted(k for k, v in data.items() if f"{k}_provenance" in data or (isinstance(v, dict) and "commit" in v))


def provenance(data: dict, part: str | None) -> dict:
    if part is None:
        return data.get("provenance", data)
    return data.get(f"{part}_provenance") or data[part]


class Results:
    """The results files, each read once, and the source (with freshness) of each result, each computed once."""

    def __init__(self, root: Path):
        self.root = root
        self._data: dict[str, dict] = {}
        self._sources: dict[tuple[str, str | None], Source] = {}
        self._cited: set[tuple[str, str | None]] = set()

    def files(self) -> list[str]:
        return sorted(p.name for p in (self.root / RESULTS_DIR).glob("*.json"))

    def data(self, file: str) -> dict:
        if file not in self._data:
            self._data[file] = json.loads((self.root / RESULTS_DIR / file).read_text())
        return self._data[file]

    def source(self, file: str, part: str | None = None) -> Source:
        if (file, part) not in self._sources:
            data = self.data(file)
            prov = provenance(data, part)
            bench = data.get("bench") or Path(file).stem
            commit = prov.get("git_commit") or prov.get("commit") or "unknown"
            fresh = freshness(self.root, commit, bench_paths(bench, part, data))
            command, date, machine, note = (
                prov.get("command", ""),
                prov.get("date", ""),
                prov.get("machine"),
                prov.get("note", ""),
            )
            self._sources[file, part] = Source(file, part, bench, command, date, machine_text(machine), note, fresh)
        return self._sources[file, part]

    def all_sources(self) -> list[Source]:
        return [self.source(f, p) for f in self.files() for p in parts(self.data(f))]

    def cite(self, *refs: tuple[str, str | None]) -> str:
        """The source lines of the results a section shows, in full the first time the page cites each."""
        blocks = []
        for ref in refs:
            blocks.append(self.source(*ref).cite(first=ref not in self._cited))
            self._cited.add(ref)
        return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------- formatting


def f4(x: float) -> str:
    return f"{x:.4f}"


def pt(diff: float) -> str:
    """A difference of two accuracies, in percentage points."""
    return f"{diff * 100:+.2f} pt"


def points(diff: float) -> str:
    return f"{abs(diff) * 100:.2f} points"


def times(ratio: float) -> str:
    return f"{ratio:.2f}x"


def num(n: float) -> str:
    """10 000, the README's way of writing large counts."""
    return f"{n:,.0f}".replace(",", " ")


def count(n: float) -> str:
    """Parameters: 52.5 k, 1.33 M."""
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else f"{n:.0f}"


def ms(x: float) -> str:
    return f"{x / 1000:.1f} s" if x >= 1000 else f"{x:.0f} ms" if x >= 10 else f"{x:.1f} ms"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def listing(items: list[str]) -> str:
    """a, b and c."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def span(xs: Iterable[float], fmt: Callable[[float], str]) -> str:
    """The range of some values, one value when they are all equal."""
    xs = list(xs)
    lo, hi = min(xs), max(xs)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}–{fmt(hi)}"


def se(p: float, n: int) -> float:
    """One standard error of an accuracy p measured on n images."""
    return math.sqrt(p * (1 - p) / n)


def se_diff(p: float, q: float, n: int) -> float:
    """One standard error of the difference of two accuracies, each on its own n images."""
    return math.sqrt(p * (1 - p) / n + q * (1 - q) / n)


def bold_max(cells: list[float], fmt: Callable[[float], str] = f4) -> list[str]:
    best = max(cells)
    return [f"**{fmt(c)}**" if c == best else fmt(c) for c in cells]


def table(header: list[str], rows: list[list[str]], align: str) -> str:
    """A Markdown table; ``align`` has one letter per column, l or r. A | inside a cell (an architecture line) is
    escaped, or it would split the cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows])


def section(heading: str, *blocks: str) -> str:
    return "\n\n".join([heading, *[b for b in blocks if b]])


def figures(res: Results, prefix: str) -> str:
    """The PNG figures a bench wrote beside its results, linked from docs/."""
    pngs = sorted(p.name for p in (res.root / RESULTS_DIR).glob(f"{prefix}*.png"))
    return " ".join(f"![{Path(p).stem}](../{RESULTS_DIR}/{p})" for p in pngs)


def states_text(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(states.items()) if n)


# ---------------------------------------------------------------------------------------------- sections: speed


def quickstart(res: Results) -> str:
    d = res.data("quickstart.json")
    runs = d["runs"]
    rows = [
        [str(i), f"{r['wall_s']:.1f} s", states_text(r["states"]), f4(r["best_val_acc"]), f"`{r['best_arch']}`"]
        for i, r in enumerate(runs, 1)
    ]
    same = len({r["best_arch"] for r in runs}) == 1
    text = (
        "`make search` runs `bonas search studies/digits.toml`. Timed from a new process into a fresh database (imports "
        f"and data loading included, creating the virtual environment not), it finished the preset's {d['n_trials']} trials "
        f"in {d['median_wall_s']:.0f} s, median of {len(runs)} runs, with a best validation accuracy of "
        f"{f4(d['median_best'])}" + (", the same network in every run." if same else ".")
    )
    header = ["run", "wall time", "trials", "best validation accuracy", "best network"]
    return section("## Quick start", res.cite(("quickstart.json", None)), text, table(header, rows, "lrlrl"))


DATA_PATH_STEPS = (  # (what, its key in "seconds", the per-sample route it is compared with)
    ("bonas: index slices of one uint8 tensor, batched normalisation", "bonas_slices", "loader_0_workers"),
    ("DataLoader over a per-sample Dataset, 0 loader workers", "loader_0_workers", "loader_0_workers"),
    ("the same DataLoader, 2 loader workers", "loader_2_workers", "loader_0_workers"),
    ("bonas: batched random crop + flip on the tensor", "bonas_crop_flip", "loader_crop_flip"),
    ("torchvision v2 random crop + flip per sample, 0 loader workers", "loader_crop_flip", "loader_crop_flip"),
)


def data_path(res: Results) -> str:
    d = res.data("data_path.json")
    s, n = d["seconds"], d["images"]
    rows = [[what, f"{s[key]:.3f} s", num(n / s[key]), times(s[ref] / s[key])] for what, key, ref in DATA_PATH_STEPS]
    text = (
        f"On {d['dataset']}, one epoch of {num(n)} training images in batches of {d['batch']}, no model; each figure the "
        f"median of {d['repeats']} repeats. Index slices deliver {times(s['loader_0_workers'] / s['bonas_slices'])} the "
        f"images per second of a per-sample DataLoader, and batched crop + flip "
        f"{times(s['loader_crop_flip'] / s['bonas_crop_flip'])} those of torchvision's per-sample transforms. Decoding the "
        f"IDX .gz files takes {s['decode']:.2f} s; loading the decoded cache that later trials and workers read, "
        f"{s['cache']:.2f} s."
    )
    header = ["one epoch of batches", "seconds", "images/s", "vs the per-sample route"]
    return section("## Data path", res.cite(("data_path.json", None)), text, table(header, rows, "lrrr"))


def startup(res: Results) -> str:
    d = res.data("startup.json")
    rows = []
    for command, r in d["results"].items():
        slowest, seconds = r["top_imports_s"][0]
        rows.append(
            [
                f"`bonas {command}`",
                f"{r['seconds']:.2f} s",
                ", ".join(r["heavy_imports"]) or "none",
                f"`{slowest}` {seconds:.2f} s",
            ]
        )
    heavy = sorted({m for r in d["results"].values() for m in r["heavy_imports"]})
    text = (
        f"Each command on a small digits study, run as a user runs it: a new process each time, median of {d['repeats']}. "
        + (
            "None of them imported a heavy package that `bench/startup.py` looks for (torch, Lightning, optuna-dashboard, "
            "matplotlib)."
            if not heavy
            else f"Heavy packages imported: {listing(heavy)}."
        )
        + " The last column is the slowest top-level import (`python -X importtime`)."
    )
    header = ["command", "wall time", "heavy packages imported", "slowest import"]
    return section("### Start-up of the read commands", res.cite(("startup.json", None)), text, table(header, rows, "lrll"))


TRIAL_PARTS = {  # the parts of a bonas trial outside training that bench/overhead.py times one by one
    "claim_ms": "claim the trial under the study lock",
    "build_ms": "build the network and count its FLOPs",
    "attrs_ms": "store the trial's user attrs",
    "trainer_ms": "make the Lightning Trainer",
    "tell_ms": "tell the study",
    "note_ms": "write the trial's dashboard note",
}


def overhead(res: Results) -> str:
    d = res.data("overhead.json")
    st = d["settings"]
    images = st["train"] * st["epochs"]
    b, p = statistics.median(d["bonas_s"]), statistics.median(d["plain_s"])
    rows = [
        [f"one trial's wall time (median of {len(d['bonas_s'])} alternating runs)", f"{b:.2f} s", f"{p:.2f} s"],
        ["training images per second", num(images / b), num(images / p)],
        ["training GFLOP/s", f"{d['gflops_bonas']:.1f}", f"{d['gflops_plain']:.1f}"],
    ]
    parts = [[f"{TRIAL_PARTS.get(k, k)} (per trial)", ms(v)] for k, v in d["components_ms"].items()]
    parts += [[f"`{k}` callback (per epoch)", ms(v)] for k, v in d["per_epoch_ms"].items()]
    text = (
        f"The same network (`{d['arch']}`), data ({st['dataset']}, {num(st['train'])} training images), batch size "
        f"({st['batch']}), optimizer, schedule and epochs ({st['epochs']}), as a bonas trial and as a hand-written PyTorch "
        f"loop; every bonas trial is checked to have trained every epoch. A bonas trial took {times(b / p)} the plain "
        f"loop's wall time. Outside training it costs {ms(d['outside_fit_ms'])} per trial (the parts below, timed one by "
        f"one). Training ran at {d['gflops_bonas']:.0f} GFLOP/s, {d['gflops_bonas'] / d['ceiling_gflops']:.0%} of the "
        f"{d['ceiling_gflops']:.0f} GFLOP/s a torch matmul reached in the same run."
    )
    return section(
        "### A trial's overhead",
        res.cite(("overhead.json", None)),
        text,
        table(["", "bonas trial", "plain loop"], rows, "lrr"),
        table(["what a trial adds around training", "time (median)"], parts, "lr"),
    )


# ---------------------------------------------------------------------------------------------- sections: storage

BACKENDS = {"sqlite": "SQLite", "journal": "Journal file", "postgresql": "PostgreSQL", "mariadb": "MariaDB"}
LOOPS = {"bonas": "bonas", "optuna": "plain Optuna"}


def storage_throughput(res: Results) -> str:
    d = res.data("storage.json")
    cells = {(r["backend"], r["kind"], r["workers"]): r for r in d["rows"]}
    workers = sorted({w for _, _, w in cells})
    rows = [
        [BACKENDS.get(b, b), LOOPS[k]] + [f"{cells[b, k, w]['trials_per_s']:.1f}" if (b, k, w) in cells else "" for w in workers]
        for b in BACKENDS
        for k in LOOPS
        if any((b, k, w) in cells for w in workers)
    ]
    slow = min(d["rows"], key=lambda r: r["trials_per_s"])
    real = max(v["trials_per_hour"] for v in d["real"].values() if isinstance(v, dict))
    bad = sum(r["errors"] for r in d["rows"]), sum(r["locked"] for r in d["rows"])
    text = (
        f"Trials per second with a trivial objective (random sampler), each cell a window of "
        f"{span((r['wall_s'] for r in d['rows']), lambda x: f'{x:g}')} s: bonas' loop claims each trial under the study "
        f"lock; plain Optuna calls `study.optimize`. The slowest cell, {slow['trials_per_s']:.1f} trials/s "
        f"({BACKENDS[slow['backend']]}, {LOOPS[slow['kind']]}, {plural(slow['workers'], 'worker')}), is "
        f"{slow['trials_per_s'] * 3600 / real:.0f} times the fastest rate of the real Fashion-MNIST trials below ({real:.0f} "
        f"per hour, key `real`). "
        + (
            "No cell saw an error or a “database is locked”."
            if bad == (0, 0)
            else f"Errors: {bad[0]}; “database is locked”: {bad[1]}."
        )
    )
    header = ["storage", "loop", *[plural(w, "worker") for w in workers]]
    return section(
        "### Storage throughput", res.cite(("storage.json", "rows")), text, table(header, rows, "ll" + "r" * len(workers))
    )


def storage_sqlite(res: Results) -> str:
    legacy, wal_optuna, wal_bonas = res.data("storage.json")["sqlite"]
    arms = (
        ("Optuna's defaults (rollback journal)", legacy),
        ("bonas' settings (WAL)", wal_optuna),
        ("bonas' settings (WAL)", wal_bonas),
    )
    rows = [
        [
            label,
            LOOPS[r["kind"]],
            str(r["workers"]),
            str(r["states"]["COMPLETE"]),
            str(r["states"]["FAIL"]),
            str(r["locked"]),
            f"{r['wall_s']:.1f} s",
        ]
        for label, r in arms
    ]
    over = wal_optuna["states"]["COMPLETE"] - wal_bonas["states"]["COMPLETE"]
    text = (
        f"{wal_bonas['workers']} workers sharing a budget of trivial trials on one SQLite file. WAL finished plain Optuna's "
        f"run {times(legacy['wall_s'] / wal_optuna['wall_s'])} faster than the rollback journal; "
        f"{'no' if not any(r['locked'] for _, r in arms) else 'some'} run saw “database is locked”. bonas' loop finished "
        f"{wal_bonas['states']['COMPLETE']} trials; plain Optuna {wal_optuna['states']['COMPLETE']}, {over} more "
        "(it stops its workers once the budget is reached; trials already started still finish)."
    )
    header = ["SQLite settings", "loop", "workers", "finished", "failed", "“database is locked”", "wall time"]
    return section("### SQLite settings", res.cite(("storage.json", "sqlite")), text, table(header, rows, "llrrrrr"))


def storage_real(res: Results) -> str:
    real = res.data("storage.json")["real"]
    runs = {k: v for k, v in real.items() if isinstance(v, dict)}
    first = next(iter(runs.values()))
    n = round(first["trials_per_hour"] * first["span_s"] / 3600)  # trials per hour = n / span
    rows = []
    for k, v in sorted(runs.items()):
        workers, threads = (int(x) for x in k.split("x"))
        setup = f"{plural(workers, 'worker')} × {plural(threads, 'thread')}"
        rows.append(
            [
                setup,
                f"{v['trials_per_hour']:.0f}",
                f"{v['span_s']:.0f} s",
                f"{v['trials_per_hour_wall']:.0f}",
                f"{v['wall_s']:.0f} s",
            ]
        )
    text = (
        f"The same {n} Fashion-MNIST trials (enqueued, every epoch trained) run by `bonas search` with one worker using "
        f"both threads, one worker on one thread, and two workers on one thread each. Two workers did "
        f"{times(real['speedup'])} the trials per hour of one worker using both threads, over the trials' span "
        f"({times(real['speedup_wall'])} over the whole command, start-up included); thread for thread, "
        f"{times(real['scaling'])}."
    )
    header = ["workers × threads", "trials per hour", "trials' span", "trials per hour, whole command", "whole command"]
    return section("### Two workers on real trials", res.cite(("storage.json", "real")), text, table(header, rows, "lrrrr"))


def lock_kind(root: Path, commit: str | None = None) -> str:
    """Which PostgreSQL advisory lock bonas' code takes at ``commit`` (the working tree when None), read from the code."""
    rev = [commit.removesuffix("-dirty")] if commit else []
    for call, kind in (
        ("pg_advisory_xact_lock", "transaction-level `pg_advisory_xact_lock`"),
        ("pg_advisory_lock(", "session-level `pg_advisory_lock`"),
    ):
        if git(root, "grep", "-q", "-F", call, *rev, "--", "bonas").returncode == 0:
            return kind
    return "unknown"


def many_rows(cells: list[dict]) -> list[list[str]]:
    by = {(c["kind"], c["workers"]): c for c in cells}
    rows = []
    for w in sorted({c["workers"] for c in cells}):
        b, o = by[("bonas", w)], by.get(("optuna", w))
        plain = f"{o['trials_per_s']:.1f} ({o['audit']['overshoot']})" if o else ""
        k = b["connections"]
        private = b["server_process_mib"]["private"]["median"]
        rows.append(
            [
                str(w),
                f"{b['trials_per_s']:.1f}",
                plain,
                ms(b["claim_ms"]["median"]),
                f"{k['per_worker_peak']} / {k['per_worker_mean']:.2f}",
                f"{private:.1f} MiB",
            ]
        )
    return rows


def many_text(res: Results, many: dict) -> str:
    """What the many-workers cells say: exact budgets, the lock's cost, connections, and which lock was measured."""
    bonas = sorted((c for c in many["cells"] if c["kind"] == "bonas"), key=lambda c: c["workers"])
    plain = sorted((c for c in many["cells"] if c["kind"] == "optuna"), key=lambda c: c["workers"])
    exact = all(c["audit"]["ok"] and c["audit"]["finished"] == many["budget"] and not c["audit"]["overshoot"] for c in bonas)
    one, most = bonas[0], bonas[-1]
    trips = one["lock"]["round_trips_per_hold"]
    srv = many["server"]
    src = res.source("storage.json", "many")
    then, now = lock_kind(res.root, src.fresh.commit), lock_kind(res.root)
    return (
        f"PostgreSQL {srv['server_version'].split()[0]} (fsync {srv['fsync']}, synchronous_commit {srv['synchronous_commit']}, "
        f"max_connections {srv['max_connections']}), a budget of {many['budget']} trivial trials per cell. "
        + (
            f"Every bonas cell finished exactly {many['budget']} trials: none lost, told twice or left unfinished. "
            if exact
            else ""
        )
        + f"Plain `study.optimize` with `MaxTrialsCallback` finished {listing([str(c['audit']['finished']) for c in plain])} "
        f"trials with {listing([str(c['workers']) for c in plain])} workers. "
        f"With one worker the lock was held {ms(one['lock']['hold_ms']['median'])} per claim (median) for "
        f"{sum(trips.values()):.0f} round trips ({trips['before_cursor_execute']:.0f} "
        f"statements, {trips['commit']:.0f} commits, {trips['checkout']:.0f} pool checkouts): at most "
        f"{one['lock']['ceiling_claims_per_s']:.0f} claims/s, so trials shorter than workers ÷ "
        f"{one['lock']['ceiling_claims_per_s']:.0f} seconds would queue at the lock. With {most['workers']} processes on "
        f"this machine ({many['machine']}) the holder is starved: held "
        f"{ms(most['lock']['hold_ms']['median'])}, waited for {ms(most['lock']['wait_ms']['median'])} (medians). Each claim "
        f"opens the lock's own connection ({ms(one['lock']['connect_ms']['median'])} to open, median at one worker), so a "
        f"worker holds up to {max(c['connections']['per_worker_peak'] for c in bonas)}; {most['workers']} workers held "
        f"{most['connections']['total_peak']} at the peak. A server process took "
        f"{span((c['server_process_mib']['private']['median'] for c in many['cells']), lambda x: f'{x:.1f}')} MiB of private "
        f"memory (medians per cell). These figures were taken with a {then} (read from the code at {src.fresh.short})"
        + (", the lock the code here takes." if then == now else
           f"; the code here takes a {now}: the figures do not measure the lock as it is now.")
    )  # fmt: skip


def storage_many(res: Results) -> str:
    many = res.data("storage.json")["many"]
    header = [
        "workers",
        "bonas trials/s",
        "plain Optuna trials/s (overshoot)",
        "claim, median",
        "connections per worker, peak / mean",
        "server process, private memory",
    ]
    return section(
        "### Hundreds of workers on PostgreSQL",
        res.cite(("storage.json", "many")),
        many_text(res, many),
        table(header, many_rows(many["cells"]), "rrrrrr"),
    )


def storage_long_trials(res: Results) -> str:
    d = res.data("storage.json")["many_trial_10s"]
    c = d["cells"][0]
    k, claim = c["connections"], c["claim_ms"]
    row = [str(c["workers"]), str(c["audit"]["finished"]), f"{c['trial_s']:g} s", f"{c['trials_per_s']:.1f}"]
    row += [f"{ms(claim['median'])} / {ms(claim['p95'])}", num(c["heartbeats_by_threads"]), str(c["connections_opened"])]
    row += [str(k["storage_per_worker_peak"]), str(k["total_peak"])]
    text = (
        f"{c['workers']} workers, trials that sleep {c['trial_s']:g} s, heartbeats every {d['heartbeat_interval_s']:g} s. "
        f"The heartbeat threads wrote {num(c['heartbeats_by_threads'])} heartbeats while no worker held more than "
        f"{k['storage_per_worker_peak']} storage connection: the heartbeat shares the worker's connection. The other "
        f"connections were the lock's: {c['connections_opened']} opened for {c['lock']['connect_ms']['n']} lock uses. "
        + (
            "The audit passed: exact budget, nothing lost, told twice or left unfinished."
            if c["audit"]["ok"]
            else "The audit FAILED."
        )
    )
    header = ["workers", "trials", "per trial", "trials/s", "claim, median / p95", "heartbeats", "lock connections opened"]
    header += ["storage connections per worker, peak", "connections, peak"]
    return section(
        f"### {c['workers']} workers with {c['trial_s']:g}-second trials",
        res.cite(("storage.json", "many_trial_10s")),
        text,
        table(header, [row], "rrrrrrrrr"),
    )


# ---------------------------------------------------------------------------------------------- sections: search quality

SEARCH_QUALITY = "search_quality.json"
PRUNERS = {
    "none": "none",
    "median": "median",
    "hyperband": "hyperband",
    "successive-halving": "successive halving",
}


def runs_of(d: dict, prefix: str) -> list[dict]:
    """The raw runs of search_quality.json under a key prefix ("B/digits/none/"), in seed order."""
    return [v for k, v in sorted(d.items()) if k.startswith(prefix)]


def trial_epochs(run: dict) -> int:
    """Epochs per trial of a run that pruned nothing."""
    return round(run["epochs"] / len(run["values"]))


def resolution(runs: list[dict]) -> float:
    """The smallest step between two accuracies seen in these runs: one validation image."""
    values = sorted({v for r in runs for v in r["values"] if v is not None})
    return min(b - a for a, b in zip(values, values[1:], strict=False))


def sampler_rows(a: dict, keys: list[str]) -> list[list[str]]:
    rows = []
    for k in keys:
        v = a[k]
        best = [f4(v["tpe_median_best"]), f4(v["random_median_best"])]
        rows.append([*k.split("/"), str(v["n_seeds"]), *best, str(v["tpe_trials_to_random_best"]), f"{v['ratio']:.2f}"])
    return rows


def sampler_text(d: dict, a: dict, keys: list[str]) -> str:
    n = len(runs_of(d, "A/")[0]["values"])
    met = [k for k in keys if a[k]["ratio"] <= SAMPLER_GOAL]
    missed = [f"{k} (per seed: {listing([str(t) for t in a[k]['per_seed_trials']])} trials)" for k in keys if k not in met]
    full = []
    for k in (k for k in keys if k.startswith("full/")):
        v, at = a[k], next(x.removeprefix("tpe_at_") for x in a[k] if x.startswith("tpe_at_"))
        early = f"{f4(v[f'tpe_at_{at}'])} against {f4(v[f'random_at_{at}'])} after {at} trials"
        full.append(f"{k.split('/')[1]}: {f4(v['tpe_median_best'])} against {f4(v['random_median_best'])} ({early})")
    seed = [
        k
        for k in keys
        if k.startswith("seed/") and a[k]["tpe_median_best"] == a[k]["random_median_best"] == a[k]["best_possible"]
    ]
    per_data = {k.split("/")[1]: trial_epochs(runs_of(d, f"A/{k}/random/")[0]) for k in keys if k.startswith("full/")}
    epochs = listing([f"{e} epochs per trial on {k}" for k, e in per_data.items()])
    parts = sorted({k.split("/")[0] for k in d["summary"]})
    return (
        f"The file records one provenance for all its parts ({listing(parts)}), reconstructed after the runs (the note "
        f"above); no part has a commit of its own. {n} trials per run. **seed**: the article's {len(d['table/digits'])} "
        "networks, each trained once, the samplers looking results up like a tabular NAS benchmark; **full**: "
        f"studies/digits.toml's conditional space, every trial trained, pruning off ({epochs}). Best columns: "
        "medians over seeds. “Trials to”: the first trial at which the median over seeds of TPE's best-so-far curve "
        f"reaches the median of random search's {n}-trial best (per-seed counts are in the file); ratio: that trial ÷ {n}.\n\n"
        f"TPE met the goal of at most {SAMPLER_GOAL:.2f} of random search's trials on {listing(met)}"
        + (f"; it missed it on {listing(missed)}." if missed else ".")
        + (f" On the full space TPE also ended higher — {'; '.join(full)}." if full else "")
        + (f" On {listing(seed)} both samplers reached the table's best network within {n} trials." if seed else "")
    )


def sampler_section(res: Results) -> str:
    d = res.data(SEARCH_QUALITY)
    a = d["summary"]["A"]
    keys = sorted(a, key=lambda k: (not k.startswith("seed/"), k))
    header = ["space", "data", "seeds", "TPE best", "random best", "TPE trials to random's best", "ratio"]
    return section(
        "### TPE against the article's random search",
        res.cite((SEARCH_QUALITY, None)),
        sampler_text(d, a, keys),
        table(header, sampler_rows(a, keys), "llrrrrr"),
        figures(res, "sampler_"),
    )


def pruner_cells(v: dict | None) -> list[str]:
    if not v:
        return ["", "", "", ""]
    delta = "—" if v["epoch_saving"] == 1 else f"{v['best_delta_points']:+.2f} pt"
    return [num(v["median_epochs"]), times(v["epoch_saving"]), f4(v["median_best"]), delta]


def pruner_text(d: dict, short: dict, long: dict) -> str:
    none_runs = runs_of(d, "B/digits/none/")
    step = resolution(runs_of(d, "B/digits/"))
    top = max(short, key=lambda p: short[p]["epoch_saving"])
    same = sum(r["best"] == n["best"] for r, n in zip(runs_of(d, f"B/digits/{top}/"), none_runs, strict=True))
    met = [
        p
        for part in (short, long)
        for p, v in part.items()
        if v["epoch_saving"] >= PRUNER_GOAL[0] and -v["best_delta_points"] <= PRUNER_GOAL[1] * 100
    ]
    ltop = max(long, key=lambda p: long[p]["epoch_saving"])
    lost = -long[ltop]["best_delta_points"] / 100
    images = plural(round(lost / step), "validation image")
    return (
        f"TPE on digits, the full space, {len(none_runs[0]['values'])} trials per run; medians over seeds. "
        f"{PRUNERS[top].capitalize()} saved the most epochs on {trial_epochs(none_runs[0])}-epoch trials "
        f"({times(short[top]['epoch_saving'])}) and found the same best network as no pruning on {same} of "
        f"{len(none_runs)} seeds. "
        + ("No arm reached" if not met else f"{listing(sorted(set(met)))} reached")
        + f" the goal of {PRUNER_GOAL[0]:g}x fewer epochs within {PRUNER_GOAL[1] * 100:.1f} points. On "
        f"{trial_epochs(runs_of(d, 'L18/digits/none/')[0])}-epoch trials {PRUNERS[ltop]} saved "
        f"{times(long[ltop]['epoch_saving'])} and lost {points(lost)}: {images} of digits, "
        f"where one image is {step * 100:.2f} points. The comparison is in epochs trained; the file's wall times are not "
        "compared here."
    )


def pruner_section(res: Results) -> str:
    d = res.data(SEARCH_QUALITY)
    short, long = d["summary"]["B"], d["summary"]["L"]
    es, el = trial_epochs(runs_of(d, "B/digits/none/")[0]), trial_epochs(runs_of(d, "L18/digits/none/")[0])
    ns, nl = len(runs_of(d, "B/digits/none/")), len(runs_of(d, "L18/digits/none/"))
    rows = [
        [PRUNERS.get(p, p), *pruner_cells(short.get(p)), *pruner_cells(long.get(p))] for p in PRUNERS if p in short or p in long
    ]
    header = ["pruner"]
    for e, n in ((es, ns), (el, nl)):
        header += [f"epochs, {e}-epoch trials ({n} seeds)", "fewer epochs", "best", "vs none"]
    return section(
        "### Pruners",
        res.cite((SEARCH_QUALITY, None)),
        pruner_text(d, short, long),
        table(header, rows, "l" + "r" * 8),
        figures(res, "pruners"),
    )


def tpe_label(key: str) -> str:
    """search_quality.json's names for TPE settings, in words."""
    key = key.replace("mv+group", "multivariate + group").replace("independent", "independent (univariate)")
    key = re.sub(r"startup (\d+)", r"\1 startup trials", key)
    return re.sub(
        r"(\d+) workers, constant_liar=(True|False)",
        lambda m: f"{m[1]} worker processes, constant liar {'on' if m[2] == 'True' else 'off'}",
        key,
    )


def compare(a: float, b: float) -> str:
    return "tied with" if a == b else "led" if a > b else "trailed"


def checkpoints(c: dict) -> list[int]:
    """The trial counts search_quality.json reports TPE settings at (median_best_20 ...)."""
    return sorted({int(m[1]) for v in c.values() for k in v if (m := re.fullmatch(r"median_best_(\d+)", k))})


def tpe_text(d: dict, c: dict) -> str:
    default = next(k for k in c if "(default)" in k)
    ind = next(k for k in c if k.startswith("independent"))
    single = [k for k in c if "workers" not in k]
    on, off = sorted((k for k in c if "workers" in k), reverse=True)
    seeds = max(len(runs_of(d, f"C/{k}/")) for k in single)
    at = checkpoints(c)

    def best(k: str, t: int) -> float:
        return c[k][f"median_best_{t}"]

    others = " ".join(
        f"{tpe_label(k).capitalize()} {compare(best(k, at[0]), best(default, at[0]))} the default at {at[0]} trials."
        for k in single
        if k not in (default, ind)
    )
    repeats = c[on]["repeats"] + c[off]["repeats"]
    return (
        f"Digits, the full space, {len(runs_of(d, 'A/full/digits/tpe/')[0]['values'])} trials per run; medians of {seeds} "
        f"seeds for one process (the default's runs are part A's first {seeds} TPE runs) and of {len(c[on]['repeats'])} for "
        f"two worker processes. Independent TPE {compare(best(ind, at[0]), best(default, at[0]))} multivariate + group at "
        f"{at[0]} trials and {compare(best(ind, at[1]), best(default, at[1]))} it at {at[1]}: with `group = true` Optuna "
        "fits one joint density per set of parameters that occur together (a 2-block network's with other 2-block "
        f"networks) instead of per-parameter densities polluted by trials where a parameter does not exist. {others} With "
        f"two worker processes, constant liar on and off differ by at most "
        f"{points(max(abs(best(on, t) - best(off, t)) for t in at))} at any of {listing([str(t) for t in at])} trials"
        + (", and neither proposed an architecture twice." if not any(repeats) else f"; repeated proposals: {repeats}.")
    )


def tpe_section(res: Results) -> str:
    d = res.data(SEARCH_QUALITY)
    c = d["summary"]["C"]
    keys = sorted(c, key=lambda k: ("workers" in k, "(default)" not in k, k))
    at = checkpoints(c)
    rows = [
        [("**" + tpe_label(k) + "**") if "(default)" in k else tpe_label(k), *[f4(c[k][f"median_best_{t}"]) for t in at]]
        for k in keys
    ]
    return section(
        "### TPE settings for a conditional space",
        res.cite((SEARCH_QUALITY, None)),
        tpe_text(d, c),
        table(["TPE setting", *[f"best @{t}" for t in at]], rows, "l" + "r" * len(at)),
    )


def sampling_cost(res: Results) -> str:
    dd = res.data(SEARCH_QUALITY)["summary"]["D"]
    sizes = sorted({int(n) for v in dd.values() for n in v}, key=int)
    names = {"inmemory": "in memory", "sqlite": "SQLite"}
    rows = [[num(n), *[ms(dd[k][str(n)] * 1000) for k in names]] for n in sizes]
    text = (
        "Time of one `ask()` plus the full space's suggestions, median, with a trivial objective: from "
        f"{ms(dd['inmemory'][str(sizes[0])] * 1000)} to {ms(dd['inmemory'][str(sizes[-1])] * 1000)} in memory and from "
        f"{ms(dd['sqlite'][str(sizes[0])] * 1000)} to {ms(dd['sqlite'][str(sizes[-1])] * 1000)} on SQLite between "
        f"{num(sizes[0])} and {num(sizes[-1])} finished trials. It matters only for objectives much shorter than a second."
    )
    return section(
        "### Sampling cost", res.cite((SEARCH_QUALITY, None)), text, table(["finished trials", *names.values()], rows, "lrr")
    )


def epochs_per_trial(res: Results) -> str:
    d = res.data(SEARCH_QUALITY)
    short, long = d["summary"]["B"]["none"], d["summary"]["L"]["none"]
    es, el = trial_epochs(runs_of(d, "B/digits/none/")[0]), trial_epochs(runs_of(d, "L18/digits/none/")[0])
    step = resolution(runs_of(d, "B/digits/"))
    gain = long["median_best"] - short["median_best"]
    return section(
        "### Epochs per trial",
        res.cite((SEARCH_QUALITY, None)),
        f"Digits, the full space, no pruning: {es}-epoch trials reached a median best of {f4(short['median_best'])} "
        f"({len(runs_of(d, 'B/digits/none/'))} seeds), {el}-epoch trials {f4(long['median_best'])} "
        f"({len(runs_of(d, 'L18/digits/none/'))} seeds), for {times(long['median_epochs'] / short['median_epochs'])} the epochs: "
        f"{pt(gain)}, {plural(round(gain / step), 'validation image')}. The search ranks architectures; a longer training of the "
        "chosen one is `bonas retrain`'s job.",
    )


# ---------------------------------------------------------------------------------------------- sections: search behaviour


def repeats_a(res: Results) -> str:
    a = res.data("repeats.json")["A"]
    s, runs = a["summary"], a["runs"]
    rules = {"old_rule": "every trial, reused ones included (old rule)", "new_rule": "trained networks only (new rule)"}
    budget = s["old_rule"]["trials"]
    rows = []
    for k, label in rules.items():
        per_seed = ", ".join(f"{r[k]['networks_trained']}/{f4(r[k]['best'])}" for r in runs)
        rows.append([label, str(s[k]["networks_trained"]), str(s[k]["trials"]), num(s[k]["epochs"]), f4(s[k]["best"]), per_seed])
    better = [
        f"seed {r['seed']} ({f4(r['old_rule']['best'])} → {f4(r['new_rule']['best'])})"
        for r in runs
        if r["new_rule"]["best"] > r["old_rule"]["best"]
    ]
    short = [
        f"seed {r['seed']} trained {r['new_rule']['networks_trained']}"
        for r in runs
        if r["new_rule"]["networks_trained"] < budget
    ]
    text = (
        f"The article's networks (studies/seed.toml) on digits, TPE, one worker, {len(runs)} seeds, `n_trials = {budget}`. A "
        "repeated proposal reuses the earlier result at no cost; one run gives both rules, since the proposals do not "
        f"depend on the rule. Under the old rule {1 - s['old_rule']['networks_trained'] / budget:.0%} of the budget measured "
        f"no new network (median). Counting only trained networks cost "
        f"{times(s['new_rule']['epochs'] / s['old_rule']['epochs'])} the epochs; the median best "
        + (
            f"stayed at {f4(s['new_rule']['best'])}"
            if s["new_rule"]["best"] == s["old_rule"]["best"]
            else f"went from {f4(s['old_rule']['best'])} to {f4(s['new_rule']['best'])}"
        )
        + (f", and {listing(better)} found a better network" if better else "")
        + (f"; {listing(short)}, the search having ended before {budget}" if short else "")
        + "."
    )
    header = [
        f"`n_trials = {budget}` counts",
        "networks trained",
        "trials",
        "epochs",
        "best validation",
        "per seed: networks/best",
    ]
    return section("### What a trial budget counts", res.cite(("repeats.json", None)), text, table(header, rows, "lrrrrl"))


def repeats_b(res: Results) -> str:
    d = res.data("repeats.json")
    runs = d["B"]["runs"]
    rows = [
        [
            "on" if r["constant_liar"] else "off",
            str(r["seed"]),
            str(r["trials"]),
            str(r["arch_repeats"]),
            f4(r["best"]),
            f"{r['wall_s']:.0f} s",
        ]
        for r in sorted(runs, key=lambda r: (not r["constant_liar"], r["seed"]))
    ]
    none = not any(r["arch_repeats"] for r in runs)
    text = (
        f"studies/digits.toml's conditional space with its continuous knobs, `bonas search` with several worker processes "
        f"(as bench/repeats.py runs it), {d['settings']['trials_b']} trials, {d['settings']['seeds_b']} seeds per arm: trials "
        "whose architecture (the ArchSpec, whatever the knobs) repeated an earlier trial's were "
        + ("**0 in every run**, with constant liar on and off." if none else "counted below.")
    )
    header = ["constant liar", "seed", "trials", "architecture repeats", "best validation", "wall time"]
    return section(
        "### Repeated architectures with parallel workers", res.cite(("repeats.json", None)), text, table(header, rows, "lrrrrr")
    )


def verdict(median_diff: float) -> str:
    if median_diff == 0:
        return "the medians are equal, a tie, not a win."
    return f"the median moved by {median_diff:+.4f}."


def mo_pruning(res: Results) -> str:
    d = res.data("mo_pruning.json")
    runs = {(r["seed"], r["pruned"]): r for r in d["runs"]}
    seeds = sorted({s for s, _ in runs})
    diff = {s: runs[s, True]["hypervolume"] - runs[s, False]["hypervolume"] for s in seeds}
    won = [f"seed {s} ({runs[s, False]['hypervolume']:.4f} → {runs[s, True]['hypervolume']:.4f})" for s in seeds if diff[s] > 0]
    lost = [f"seed {s} (by {-diff[s]:.4f})" for s in seeds if diff[s] < 0]
    higher, lower = listing(won) if won else "no seed", listing(lost) if lost else "no seed"
    rows = []
    for pruned, label in (
        (False, "no pruning (Optuna prunes nothing in a multi-objective study)"),
        (True, "bonas' cost-aware pruning"),
    ):
        mine = [runs[s, pruned] for s in seeds]
        n_higher = sum((diff[s] > 0) == pruned and diff[s] != 0 for s in seeds)
        medians = [
            f"{statistics.median(r['hypervolume'] for r in mine):.4f}",
            f"{statistics.median(r['trials'] for r in mine):g}",
        ]
        spans = [span((r["epochs"] for r in mine), str), span((r["pruned_trials"] for r in mine), str)]
        rows.append([label, *medians, *spans, f"{n_higher} of {len(seeds)}"])
    ties = len(seeds) - len(won) - len(lost)
    text = (
        f"Accuracy against parameters on digits (studies/digits.toml's space, MOTPE), both arms stopped at the same "
        f"compute, {d['settings']['epochs_budget']} epochs trained (a run ends with the trial that reaches it, so it may "
        "pass it), "
        f"{len(seeds)} seeds; hypervolume of the (1 − val_acc, log10 params) front as bench/mo_pruning.py computes it. "
        f"The pruned arm fits more trials into the same compute, but its front was higher in {higher}, lower in {lower} "
        f"and the same in {plural(ties, 'seed')}: "
        + verdict(d["summary"]["hv_median_pruned"] - d["summary"]["hv_median_none"])
        + " It compares a trial only with finished trials that cost no more, so it stops large, mediocre networks; "
        "whether those could have reached the front was not measured."
    )
    header = ["arm", "hypervolume (median)", "trials (median)", "epochs per run", "pruned trials", "seeds higher"]
    return section("## Multi-objective pruning", res.cite(("mo_pruning.json", None)), text, table(header, rows, "lrrrrr"))


ARMS = {
    "none": "no pruning",
    "hyperband": "Optuna's hyperband",
    "successive-halving": "Optuna's successive halving",
    "asha": "bonas' ASHA",
}


YES = {True: "yes", False: "no"}


def seeds_text(seeds: list[str]) -> str:
    return "no seed" if not seeds else f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {listing(seeds)}"


@dataclass(frozen=True)
class SeedResult:
    """One arm on one seed, against no pruning on the same seed: the two conditions of the fidelity goal."""

    arm: str
    seed: int
    epochs: int
    best: float
    saving: float  # epochs of no pruning ÷ this arm's
    delta: float  # best - no pruning's best
    one_se: float

    @property
    def fast(self) -> bool:
        return self.saving >= FIDELITY_GOAL

    @property
    def close(self) -> bool:
        return self.delta >= -self.one_se


def seed_results(d: dict) -> list[SeedResult]:
    none = {r["seed"]: r for r in d["runs"] if r["arm"] == "none"}
    return [
        SeedResult(
            r["arm"],
            r["seed"],
            r["epochs"],
            r["best"],
            none[r["seed"]]["epochs"] / r["epochs"],
            r["best"] - none[r["seed"]]["best"],
            d["one_standard_error"],
        )
        for r in sorted(d["runs"], key=lambda r: (list(ARMS).index(r["arm"]) if r["arm"] in ARMS else 9, r["seed"]))
        if r["arm"] != "none"
    ]


def fidelity_medians(res: Results) -> str:
    d = res.data("fidelity.json")
    rows = []
    for arm, s in sorted(d["summary"].items(), key=lambda kv: -kv[1]["epochs"]):
        per_seed = ", ".join(f"{r['epochs']}/{f4(r['best'])}" for r in d["runs"] if r["arm"] == arm)
        vs_none = "—" if arm == "none" else pt(s["vs_none"])
        cells = [
            str(s["epochs"]),
            times(s["fewer_epochs"]),
            f4(s["best"]),
            vs_none,
            YES[s["within_one_se"]],
            f"{s['wall_s']:.0f} s",
        ]
        rows.append([ARMS.get(arm, arm), *cells, per_seed])
    none = next(r for r in d["runs"] if r["arm"] == "none")
    st = d["settings"]
    text = (
        f"Fashion-MNIST ({num(st['train'])} training / {num(st['val'])} validation images), {st['configs']} configurations "
        f"per run proposed by TPE with the same seed in every arm, trials of {none['epochs'] // none['configs']} epochs, "
        f"through bonas' own worker loop; {st['seeds']} seeds. Epochs count every epoch trained, promotions included, each "
        f"once; “best” is the best validation accuracy of a trial that trained all epochs. bonas' ASHA pauses a trial at a "
        "rung and resumes it from its saved state when promoted. Medians over the seeds. One "
        f"standard error of the validation set is {points(d['one_standard_error'])}. The goal: at least {FIDELITY_GOAL:g}x "
        "fewer epochs than no pruning, with the best accuracy within one standard error of no pruning's."
    )
    header = ["arm", "epochs", "fewer epochs", "best", "vs none", "within 1 SE", "wall time", "per seed: epochs/best"]
    heading = "## Multi-fidelity: pruning, and pausing with promotion (ASHA)"
    return section(heading, res.cite(("fidelity.json", None)), text, table(header, rows, "lrrrrlrl"))


def fidelity_seeds(res: Results) -> str:
    d = res.data("fidelity.json")
    results = seed_results(d)
    rows = [
        [ARMS.get(r.arm, r.arm), str(r.seed), str(r.epochs), times(r.saving), f4(r.best), pt(r.delta), YES[r.fast], YES[r.close]]
        + ["**yes**" if r.fast and r.close else "no"]
        for r in results
    ]
    header = ["arm", "seed", "epochs", "fewer epochs", "best", "vs none", f"≥ {FIDELITY_GOAL:g}x fewer", "within 1 SE", "both"]
    return section(
        "### Seed by seed", res.cite(("fidelity.json", None)), fidelity_text(d, results), table(header, rows, "lrrrrrlll")
    )


def fidelity_text(d: dict, results: list[SeedResult]) -> str:
    """Which arm met which condition on which seed: the medians alone can meet both with no seed that does."""
    lines = []
    for arm in dict.fromkeys(r.arm for r in results):
        mine = [r for r in results if r.arm == arm]
        fast, close = [str(r.seed) for r in mine if r.fast], [str(r.seed) for r in mine if r.close]
        both = [str(r.seed) for r in mine if r.fast and r.close]
        lines.append(
            f"{ARMS.get(arm, arm)}: {FIDELITY_GOAL:g}x fewer epochs on {seeds_text(fast)}; within one standard error on "
            f"{seeds_text(close)}; both on {seeds_text(both)}."
        )
    by_median = [a for a, s in d["summary"].items() if a != "none" and s["fewer_epochs"] >= FIDELITY_GOAL and s["within_one_se"]]
    anyone = [r for r in results if r.fast and r.close]
    said = "No single seed of any arm met both conditions." if not anyone else f"{len(anyone)} arm-seed pair(s) met both."
    for arm in by_median:
        s, mine = d["summary"][arm], [r for r in results if r.arm == arm]
        said += (
            f" {ARMS.get(arm, arm)}'s medians ({times(s['fewer_epochs'])}, {pt(s['vs_none'])}) meet both conditions only "
            "as medians taken separately over the seeds; against no pruning on the same seed it scored "
            f"{listing([pt(r.delta) for r in mine])}, so on a bad seed it can miss a network the full search finds."
        )
    promoted = [r for r in d["runs"] if r["promotions"]]
    if promoted:
        arms = listing(sorted({ARMS.get(r["arm"], r["arm"]) for r in promoted}))
        records = span((r["trials"] for r in promoted), str)
        said += f" Promotions ({arms}): {span((r['promotions'] for r in promoted), str)} per run, {records} trial records "
        said += f"for {promoted[0]['configs']} configurations."
    return "Each arm against no pruning on the same seed.\n\n" + "\n".join(f"- {line}" for line in lines) + "\n\n" + said


# ---------------------------------------------------------------------------------------------- sections: proxies, recipe

PROXY_NAMES = {
    "grad_norm": "grad_norm (norm of the loss gradient)",
    "snip": "snip (connection sensitivity, Lee et al. 2019)",
    "naswot": "naswot (activation-pattern kernel, Mellor et al. 2021)",
    "synflow": "synflow (Tanaka et al. 2020)",
    "params": "parameters (reference)",
    "flops": "FLOPs (reference)",
}
REFERENCES = ("params", "flops")


def zero_cost_rows(d: dict) -> list[list[str]]:
    corr, times_ms = d["correlations"], d["proxy_median_ms"]
    proxies = sorted((p for p in corr if p not in REFERENCES), key=lambda p: -corr[p]["rho"])
    rows = []
    for p in [*proxies, *(r for r in REFERENCES if r in corr)]:
        c = corr[p]
        name = f"**{PROXY_NAMES.get(p, p)}**" if p in proxies and c["rho"] > corr["params"]["rho"] else PROXY_NAMES.get(p, p)
        interval, halves = f"{c['ci95'][0]:.2f}–{c['ci95'][1]:.2f}", f"{c['halves'][0]:.2f} / {c['halves'][1]:.2f}"
        rows.append([name, f"{c['rho']:.3f}", interval, halves, ms(times_ms[p]) if p in times_ms else "—"])
    return rows


def zero_cost(res: Results) -> str:
    d = res.data("zero_cost.json")
    st, corr = d["settings"], d["correlations"]
    proxies = [p for p in corr if p not in REFERENCES]
    above = sorted((p for p in proxies if corr[p]["rho"] > corr["params"]["rho"]), key=lambda p: -corr[p]["rho"])
    below = sorted(p for p in proxies if corr[p]["rho"] < corr["flops"]["rho"])
    scored = [r for r in d["rows"] if r.get("val_acc") is not None and not r.get("diverged")]
    slow = sum(r["val_acc"] < LEARNED for r in scored)
    text = (
        f"{st['n']} architectures with their training knobs, sampled at random from {study_configs(d)[0]}'s space, each "
        f"scored at initialisation on one batch of {st['batch']} training images by every proxy, then trained {st['epochs']} "
        f"epochs on {num(d['n_train'])} class-balanced {d['dataset']} images with bonas' own training code; Spearman's rank "
        f"correlation with the validation accuracy ({num(d['n_val'])} images), a {num(st['bootstrap'])}-sample bootstrap "
        f"interval, and the correlation on each half of the sample. {listing(above) if above else 'No proxy'} ranked the "
        f"networks better than their parameter count does ({corr['params']['rho']:.3f})"
        + (f"; {listing(below)} ranked them worse than FLOPs do ({corr['flops']['rho']:.3f})" if below else "")
        + f". The accuracy ranked is after {st['epochs']} short epochs, so a proxy partly measures how fast a network starts "
        f"to learn: {slow} of {len(scored)} networks were still below {LEARNED:.2f} validation accuracy then"
        + (f"; {len(d['rows']) - len(scored)} diverged and are left out." if len(scored) < len(d["rows"]) else ".")
        + f" The bench ran {d['minutes']:.0f} minutes."
    )
    header = ["score at initialisation", "Spearman rho", "95% interval", "1st half / 2nd half", "time per network (median)"]
    return section("## Zero-cost proxies", res.cite(("zero_cost.json", None)), text, table(header, zero_cost_rows(d), "lrrrr"))


def screening(res: Results) -> str:
    d = res.data("screening.json")
    st = d["settings"]
    proxy = st["proxy"]
    by = {(r["proxy"], r["seed"]): r for r in d["runs"]}
    seeds = sorted({s for _, s in by})
    rows, outcomes = [], []
    for s in seeds:
        off, on = by["none", s], by[proxy, s]
        diff = on["best"] - off["best"]
        word = "tie" if diff == 0 else "win" if diff > 0 else "loss"
        same = ", the same network found" if on["best_arch"] == off["best_arch"] else ""
        size = f" of {points(diff)}" if diff else ""
        outcomes.append(f"seed {s}: a {word}{size}{same}; {plural(on['screened_out'], 'trial')} of {on['trials']} screened out")
        rows.append(
            [
                str(s),
                f4(off["best"]),
                f4(on["best"]),
                pt(diff),
                f"{off['trials']} / {on['trials']}",
                f"{off['epochs']} / {on['epochs']}",
                str(on["screened_out"]),
            ]
        )
    text = (
        f"The same TPE search of {study_configs(d)[0]}, {st['minutes']:g} minutes per arm, with and without "
        f'`[screen] proxy = "{proxy}"` (stop a trial before its first epoch when it scores below the '
        f"{st['percentile']:g}th percentile of the earlier trials' scores), the same seed in both arms of a pair: "
        + "; ".join(outcomes)
        + ". Screening had little to do in searches this short; longer searches or fewer scored trials before screening "
        "starts were not measured."
    )
    header = [
        "seed",
        "best, no screening",
        f"best, {proxy} screening",
        "difference",
        "trials (off / on)",
        "epochs (off / on)",
        "screened out",
    ]
    return section("### Screening at equal compute", res.cite(("screening.json", None)), text, table(header, rows, "rrrrrrr"))


def regime_text(name: str, g: dict) -> str:
    size = (
        "all training images (no subset)" if not g["train"] else f"{num(g['train'])} training / {num(g['val'])} validation images"
    )
    return f"{name}: {size}, {g['epochs']} epochs, {plural(len(g['archs']), 'network')} × {plural(g['seeds'], 'seed')}"


def recipe_line(d: dict, arm: str, regimes: list[str]) -> str:
    """One arm against base: paired runs and the difference of medians, named a tie within one standard error."""
    out = []
    for g in regimes:
        mine, base = d["results"].get(f"{g}/{arm}"), d["results"][f"{g}/base"]
        if not mine:
            continue
        paired = {(r["arch"], r["seed"]): r["val_acc"] for r in base["runs"]}
        wins = sum(r["val_acc"] > paired[r["arch"], r["seed"]] for r in mine["runs"])
        diff = mine["median_val_acc"] - base["median_val_acc"]
        n = d["regimes"][g]["val"]
        word = ""
        if n:
            one = se(base["median_val_acc"], n)
            word = (
                ", the medians within one standard error"
                if abs(diff) <= one
                else ", more than one standard error " + ("above" if diff > 0 else "below")
            )
        out.append(f"{g} {pt(diff)} ({wins} of {len(mine['runs'])} paired run{'s' * (len(mine['runs']) != 1)} above base{word})")
    return f"{arm}: " + "; ".join(out)


def recipe_rows(results: dict, arms: list[str], regimes: list[str]) -> list[list[str]]:
    """One row per arm, one column per regime, the best of each column in bold."""
    best = {g: max(v["median_val_acc"] for v in results.values() if v["regime"] == g) for g in regimes}
    rows = []
    for arm in arms:
        cells = []
        for g in regimes:
            v = results.get(f"{g}/{arm}", {}).get("median_val_acc")
            cells.append("" if v is None else f"**{f4(v)}**" if v == best[g] else f4(v))
        rows.append([arm, *cells])
    return rows


def unlearned(results: dict, arms: list[str], regimes: list[str], epochs: int) -> str:
    """Arms that had not started to learn in the first regime, with what they reached in the others."""
    out = []
    for arm in arms:
        first = results.get(f"{regimes[0]}/{arm}", {}).get("median_val_acc")
        if first is None or first >= LEARNED:
            continue
        later = [
            f"{g} regime: {f4(results[f'{g}/{arm}']['median_val_acc'])} against base's "
            f"{f4(results[f'{g}/base']['median_val_acc'])}"
            for g in regimes[1:]
            if f"{g}/{arm}" in results
        ]
        out.append(
            f"{arm} stayed below {LEARNED:.2f} after {epochs} epochs in the {regimes[0]} regime ({f4(first)})"
            + "; ".join(["", *later])
            + "."
        )
    return " ".join(out)


def recipe(res: Results) -> str:
    d = res.data("recipe.json")
    results = d["results"]
    regimes = [g for g in d["regimes"] if any(v["regime"] == g for v in results.values())]
    first = {v["arm"]: v["median_val_acc"] for v in results.values() if v["regime"] == regimes[0]}
    arms = sorted(first, key=lambda a: (a != "base", -first[a]))
    g0 = d["regimes"][regimes[0]]
    one = se(first["base"], g0["val"])
    text = (
        "Each arm changes one ingredient and trains the same networks through bonas' own trial path on Fashion-MNIST; "
        "validation accuracy after the last epoch, median over networks and seeds. "
        + "; ".join(regime_text(g, d["regimes"][g]) for g in regimes)
        + f". One standard error of {num(g0['val'])} validation images at base's accuracy is {points(one)}. The bench ran "
        f"{d['minutes']:.0f} minutes.\n\n"
        + "\n".join(f"- {recipe_line(d, arm, regimes)}" for arm in arms if arm != "base")
        + "\n\n"
        + unlearned(results, arms, regimes, g0["epochs"])
    )
    header = ["arm", *[f"{g} regime" for g in regimes]]
    rows = recipe_rows(results, arms, regimes)
    return section("## Training recipe", res.cite(("recipe.json", None)), text, table(header, rows, "l" + "r" * len(regimes)))


# ---------------------------------------------------------------------------------------------- sections: budgets

HAND = "2 conv + pool + BN"  # bench/budget.py's names of its two hand-designed baselines
ARTICLE = "article best"


def preset_at(root: Path, commit: str, config: str) -> dict:
    """The study config a run used, read at the commit it was measured at (the preset may differ today)."""
    shown = git(root, "show", f"{commit.removesuffix('-dirty')}:{config}")
    try:
        return tomllib.loads(shown.stdout) if shown.returncode == 0 else {}
    except tomllib.TOMLDecodeError:
        return {}


def baselines(d: dict) -> tuple[dict, dict]:
    """(the hand design, the article's best network) of a budget results file."""
    by = {b["name"]: b for b in d["baselines"]}
    return by[HAND], next(b for n, b in by.items() if n.startswith(ARTICLE))


def pace(trained: dict) -> float:
    """Final-training images per second: epochs × training images ÷ training seconds."""
    return trained["epochs"] * trained["train_images"] / trained["train_seconds"]


def budget_files(res: Results) -> list[str]:
    """The budget files of one run each (the older format); the several-seed ones are budget_seed_files'."""
    files = [f for f in res.files() if f.startswith("budget-") and "runs" in res.data(f)]
    return sorted(files, key=lambda f: (res.data(f)["device"] != "cpu", res.data(f)["budget_s"], res.data(f)["date"]))


def search_setup(res: Results, file: str) -> str:
    """The budget and the search it ran: the preset's trial settings at the measured commit, and its warm start."""
    d, src = res.data(file), res.source(file)
    preset = preset_at(res.root, src.fresh.commit, d["config"])
    training, data, pruner = preset.get("training", {}), preset.get("data", {}), preset.get("pruner", {})
    trials = f"{training['max_epochs']}-epoch trials" if "max_epochs" in training else "trials"
    trials += f" on {num(data['train_subset'])} images" if data.get("train_subset") else ""
    bits = [trials, f"pruner {pruner['name']}" if pruner.get("name") else ""]
    warm = d["runs"][0].get("warm_start") or []
    hand, _ = baselines(d)
    start = "; trial 0 = the hand design" if warm and warm[0]["arch"] == hand["arch"] else "; warm-started" if warm else ""
    return f"{d['budget']}, `{d['config']}` at {src.fresh.short}: {', '.join(b for b in bits if b)}{start}"


def budget_row(res: Results, file: str) -> list[str]:
    d, src = res.data(file), res.source(file)
    rec = d["runs"][0]["record"]
    hand, article = baselines(d)
    workers = int(m[1]) if (m := re.search(r"--workers (\d+)", src.command)) else 1
    acc, art, hd = bold_max([rec["test_acc"], article["test_acc"], hand["test_acc"]])
    bonas = (
        f"{acc} ({rec['trials_this_run']} trials in {rec['search_s']:.0f} s; trial {rec['best_trial']}, {count(rec['params'])} "
        f"parameters, {rec['final_epochs']:.1f} final epochs in {rec['final_s']:.0f} s; {rec['total_s']:.0f} s in all)"
    )
    return [
        search_setup(res, file),
        f"{src.machine}, {plural(workers, 'worker')}",
        bonas,
        art,
        hd,
        f"`{file}`",
        src.fresh.short,
        src.date[:10],
    ]


def budget_table(res: Results) -> str:
    files = budget_files(res)
    header = [
        "budget and search",
        "machine",
        "bonas run: test accuracy",
        "article's best network",
        HAND,
        "results file",
        "commit",
        "date",
    ]
    text = (
        "`bonas run` against two hand-designed networks trained in the same run with the same final recipe, on the same "
        "whole training split, for the same final-training time, tested once on the test split. The search settings are "
        "the preset's as of each run's commit."
    )
    return section(
        "## Results per budget",
        res.cite(*((f, None) for f in files)),
        text,
        table(header, [budget_row(res, f) for f in files], "llrrrlll"),
        "\n".join(f"- {budget_line(res, f)}" for f in files),
        budget_across(res, files),
    )


def budget_line(res: Results, file: str) -> str:
    """One run: bonas against the hand design in standard errors, what the search chose, and the final training's pace."""
    d = res.data(file)
    run = d["runs"][0]
    rec, final = run["record"], run["final"]
    hand, article = baselines(d)
    n, diff = final["test_images"], rec["test_acc"] - hand["test_acc"]
    k = abs(diff) / se_diff(rec["test_acc"], hand["test_acc"], n)
    verb = "beat" if diff > 0 else "lost to" if diff < 0 else "tied with"
    line = (
        f"`{file}`: bonas {f4(rec['test_acc'])} {verb} the hand design's {f4(hand['test_acc'])} by {points(diff)}, "
        f"{k:.1f} standard errors of the difference of two accuracies on {num(n)} test images"
        + (" (within one: a tie)" if k < 1 else "")
        + f", and {'beat' if rec['test_acc'] > article['test_acc'] else 'did not beat'} the article's best network "
        f"({f4(article['test_acc'])}) by {points(rec['test_acc'] - article['test_acc'])}. The search made "
        f"{rec['trials_this_run']} trials this run ({run['trials']} trial records: {states_text(run['states'])}; "
        f"{run['trained_epochs_in_search']} epochs "
        f"trained) and chose trial {rec['best_trial']}, `{final['arch']}` ({f4(final['val_acc_in_search'])} in the search). "
        f"Final training: {pace(final):.0f} images/s for it, {pace(hand):.0f} for the hand design ({hand['epochs']:g} epochs)."
    )
    if (
        run.get("warm_start")
        and rec["best_trial"] == 0
        and final["arch"] == hand["arch"]
        and final["train"] == d["baseline_train"]
    ):
        line += " The winner was trial 0, the hand design with the bench's own knobs: the difference is one of seeds, "
        line += "not of networks."
    if final.get("planned_epochs"):
        line += (
            f" Its final training planned {num(final['planned_epochs'])} epochs and the deadline stopped it after "
            f"{final['epochs']} ({final['epochs'] / final['planned_epochs']:.0e} of the plan): a learning-rate schedule over "
            "that plan had not annealed."
        )
    return line


def budget_across(res: Results, files: list[str]) -> str:
    """What the runs say together: the same network chosen twice, and machines that differ under one CPU name."""
    cpu = [f for f in files if res.data(f)["device"] == "cpu"]
    groups: dict[str, list[str]] = {}
    for f in cpu:
        groups.setdefault(re.sub(r"/d[0-9.]+", "", res.data(f)["runs"][0]["final"]["arch"]), []).append(f)
    lines = []
    for arch, group in sorted(groups.items()):
        if len(group) < 2:
            continue
        a, b = (res.data(f) for f in (group[0], group[-1]))
        fa, fb = a["runs"][0]["final"], b["runs"][0]["final"]
        ha, hb = baselines(a)[0], baselines(b)[0]
        lines.append(
            f"{listing([f'`{f}`' for f in group])} chose the same architecture, `{arch}` ({count(fa['parameters'])} "
            f"parameters), with other dropouts and knobs. Given {fb['epochs']:g} final epochs instead of {fa['epochs']:g}, it "
            f"gained {pt(fb['test_acc'] - fa['test_acc'])}; the hand design ({hb['parameters'] / fb['parameters']:.0f}x the "
            f"parameters) gained {pt(hb['test_acc'] - ha['test_acc'])} in {hb['epochs']:g} epochs instead of {ha['epochs']:g}."
        )
    paces = {f: pace(baselines(res.data(f))[0]) for f in cpu}
    runs = {len(res.data(f)["runs"]) for f in files}
    lines.append(
        f"The hand design trained at {span(paces.values(), lambda x: f'{x:.0f}')} images per second in the CPU runs ("
        + "; ".join(f"{v:.0f} in `{f}`, {res.source(f).machine}" for f, v in paces.items())
        + "), on machines of the same name too: final epochs are compared within a run, not across runs."
        + (" Each row is one run of one seed." if runs == {1} else "")
    )
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------- the page


def glance(res: Results) -> str:
    """At most fifteen lines for the README, each figure naming its results file."""
    seeded = {(res.data(f)["device"], res.data(f)["budget_s"]): f for f in budget_seed_files(res)}
    singles = [f for f in latest_budgets(res) if (res.data(f)["device"], res.data(f)["budget_s"]) not in seeded]
    lines = [glance_quickstart(res), *[glance_seeds(res, f) for f in seeded.values()], *[glance_budget(res, f) for f in singles]]
    lines += glance_search(res) + glance_speed(res) + glance_own_data(res)
    sources = res.all_sources()
    stale = sum(s.fresh.status != "fresh" for s in sources)
    lines.append(f"- {stale} of {len(sources)} results are stale or unverifiable against this tree: see `{PAGE}`")
    return "\n".join(lines)


def glance_seeds(res: Results, file: str) -> str:
    d = res.data(file)
    s, hand = d["summary"], d["summary"].get(HAND, {})
    return (
        f"- `bonas run --budget {d['budget']}` ({res.source(file).machine}, {plural(len(d['seeds']), 'seed')}): median test "
        f"{f4(s['bonas_median'])} against {f4(hand.get('median', float('nan')))} for {HAND} trained the whole budget; ahead "
        f"in {hand.get('bonas_wins', 0)} of {hand.get('seeds', 0)} seeds (`{RESULTS_DIR}/{file}`)"
    )


def glance_own_data(res: Results) -> list[str]:
    if "own_data.json" not in res.files():
        return []
    d = res.data("own_data.json")
    lines = []
    if "speed" in d:
        lines.append(f"- Your own photos at 128 px: streaming from disk at {d['speed']['ratio']:.2f}x the images/s of holding "
                     f"them in memory (`{RESULTS_DIR}/own_data.json`)")  # fmt: skip
    runs = {r["image_size"]: r for r in d.get("runs", [])}
    if 128 in runs and 32 in runs:
        big, small = runs[128], runs[32]
        lines.append(
            f"- `bonas run --budget {big['budget']}` on {num(d['photos'])} photos: test {f4(big['record']['test_acc'])} "
            f"at 128 px, {f4(small['record']['test_acc'])} resized to 32 px; largest process "
            f"{num(big['memory']['largest_process_mb'])} MB (`{RESULTS_DIR}/own_data.json`)"
        )
    return lines


def glance_quickstart(res: Results) -> str:
    q = res.data("quickstart.json")
    return (
        f"- `make search`: {q['n_trials']} digits trials in {q['median_wall_s']:.0f} s on "
        f"{res.source('quickstart.json').machine}, best validation {f4(q['median_best'])} (`{RESULTS_DIR}/quickstart.json`)"
    )


def glance_search(res: Results) -> list[str]:
    d, fid, zc = res.data(SEARCH_QUALITY), res.data("fidelity.json"), res.data("zero_cost.json")
    a, sh = d["summary"]["A"], d["summary"]["B"]["successive-halving"]
    n = len(runs_of(d, "A/")[0]["values"])
    asha, both = fid["summary"]["asha"], [r for r in seed_results(fid) if r.fast and r.close]
    met = f"{plural(len(both), 'seed')} met" if both else "no single seed met"
    top = max((p for p in zc["correlations"] if p not in REFERENCES), key=lambda p: zc["correlations"][p]["rho"])
    scr = res.data("screening.json")
    seeds = len({r["seed"] for r in scr["runs"]})
    losses = seeds - scr["wins"] - scr["ties"]
    return [
        f"- TPE reached random search's {n}-trial best in {span((v['ratio'] for v in a.values()), lambda x: f'{x:.2f}')} "
        f"of its trials (`{RESULTS_DIR}/{SEARCH_QUALITY}`)",
        f"- Successive halving: {times(sh['epoch_saving'])} fewer epochs, median best {pt(sh['best_delta_points'] / 100)} "
        f"against no pruning on digits (`{RESULTS_DIR}/{SEARCH_QUALITY}`)",
        f"- ASHA: {times(asha['fewer_epochs'])} fewer epochs at {pt(asha['vs_none'])} (medians over seeds); {met} both "
        f"conditions of the goal (`{RESULTS_DIR}/fidelity.json`)",
        f"- Zero-cost: {top} ranks networks at Spearman {zc['correlations'][top]['rho']:.2f} (`{RESULTS_DIR}/zero_cost.json`); "
        f"screening with it: {scr['wins']} wins, {scr['ties']} ties, {losses} loss{'es' * (losses != 1)} in {seeds} seeds "
        f"(`{RESULTS_DIR}/screening.json`)",
    ]


def glance_speed(res: Results) -> list[str]:
    dp, o = res.data("data_path.json"), res.data("overhead.json")
    many = [c for c in res.data("storage.json")["many"]["cells"] if c["kind"] == "bonas"]
    exact = all(c["audit"]["ok"] for c in many)
    return [
        f"- Data path: {times(dp['seconds']['loader_0_workers'] / dp['seconds']['bonas_slices'])} the images/s of a "
        f"per-sample DataLoader (`{RESULTS_DIR}/data_path.json`); a trial takes {times(o['ratio'])} a plain PyTorch loop's "
        f"time (`{RESULTS_DIR}/overhead.json`)",
        f"- {max(c['workers'] for c in many)} PostgreSQL workers: "
        + ("exact budget, no trial lost" if exact else "the audit failed")
        + f" (`{RESULTS_DIR}/storage.json`, key `many`)",
    ]


def latest_budgets(res: Results) -> list[str]:
    """The newest budget run per (device, budget): what the README would quote."""
    latest: dict[tuple[str, float], str] = {}
    for f in budget_files(res):
        latest[res.data(f)["device"], res.data(f)["budget_s"]] = f
    return [latest[k] for k in sorted(latest)]


def glance_budget(res: Results, file: str) -> str:
    d = res.data(file)
    hand, article = baselines(d)
    test = d["runs"][0]["record"]["test_acc"]
    return (
        f"- `bonas run --budget {d['budget']}` ({res.source(file).machine}): test {f4(test)}; hand design "
        f"{f4(hand['test_acc'])}, article's best {f4(article['test_acc'])} (`{RESULTS_DIR}/{file}`)"
    )


def header(res: Results) -> str:
    return (
        "# Measured results\n\n"
        "<!-- Written by bench/render.py from bench/results/*.json: edit the renderer or rerun a bench, not this page. -->\n\n"
        "Every figure on this page is formatted from a results file in `bench/results/`, written by the bench script the "
        "file's command names. Every table names its file, the commit it was measured at, the machine and the date. A "
        "result is **stale** when the code its bench exercises (the paths listed for it in `bench/render.py`) differs "
        "between its commit and the tree this page was rendered from; stale results stay on the page, marked, until their "
        "bench is rerun. Until the package's reorganisation into subpackages, a layer also stands for the modules it "
        "was made of (bonas/lock.py counts as bonas/study/: `BEFORE_LAYERS` in the renderer). `python bench/render.py` "
        "rewrites the page, `python bench/render.py --check` fails when it is out of date (and `tests/test_docs.py` with it)."
    )


def summary(res: Results) -> str:
    rows = [
        [f"`{s.file}`" + (f" `{s.part}`" if s.part else ""), s.bench, s.fresh.shown, s.date[:10], s.machine, s.fresh.summary()]
        for s in res.all_sources()
    ]
    stale = sum(s.fresh.status == "stale" for s in res.all_sources())
    text = f"{stale} of {len(rows)} results are stale against this tree; each section says what changed since its result."
    return section(
        "## Every result and its freshness",
        text,
        table(["results file", "bench", "commit", "date", "machine", "freshness"], rows, "llllll"),
    )


# ---------------------------------------------------------------------------------------------- sections: issue 20 / 22


def budget_seed_files(res: Results) -> list[str]:
    files = [f for f in res.files() if f.startswith("budget-") and "seeds" in res.data(f)]
    return sorted(files, key=lambda f: (res.data(f)["device"] != "cpu", res.data(f)["budget_s"], res.data(f)["date"]))


def picked_prior(seed: dict) -> str | None:
    """The standard design a seed's `bonas run` ended with, if its pick was one of the priors."""
    best = seed["bonas"]["record"]["best_trial"]
    return next((p["prior"] for p in seed["bonas"].get("priors", []) if p["number"] == best), None)


def seed_rows(d: dict) -> list[list[str]]:
    n = d["seeds"][0]["bonas"]["final"]["test_images"]
    rows = []
    for s in d["seeds"]:
        ours = s["bonas"]["final"]["test_acc"]
        hands = {h["name"]: h for h in s["hand"]}
        hand = hands.get(HAND)
        record, prior = s["bonas"]["record"], picked_prior(s)
        pick = f"trial {record['best_trial']}" + (f", the prior “{prior}”" if prior else "")
        cells = [str(s["seed"]), f"{f4(ours)} ({record['final_epochs']:.1f} ep)", f"{record.get('arch', '')} ({pick})"]
        for name in (HAND, next((k for k in hands if k.startswith(ARTICLE)), None)):
            h = hands.get(name) if name else None
            cached = ", cached" if h and h.get("reused") else ""
            cells.append("—" if h is None else f"{f4(h['test_acc'])} ({h['epochs']:.1f} ep{cached})")
        se = (ours - hand["test_acc"]) / se_diff(ours, hand["test_acc"], n) if hand else 0.0
        cells.append(f"{pt(ours - hand['test_acc'])} ({se:+.1f} SE)" if hand else "—")
        rows.append(cells)
    return rows


def seeds_split(d: dict) -> str:
    """How each run divided its budget, and how often its pick was a standard design it started from."""
    records = [s["bonas"]["record"] for s in d["seeds"]]
    hands = [h["epochs"] for s in d["seeds"] for h in s["hand"] if h["name"] == HAND]
    priors = sum(picked_prior(s) is not None for s in d["seeds"])
    return (
        f"Each `bonas run` searched for {span((r['search_share'] for r in records), lambda x: f'{x:.0%}')} of its budget "
        f"({span((r['trials_this_run'] for r in records), str)} trials); its final network trained a median "
        f"{statistics.median(r['final_epochs'] for r in records):.1f} epochs"
        + (f", {HAND} a median {statistics.median(hands):.1f} in the whole budget" if hands else "")
        + f". In {priors} of {plural(len(records), 'seed')} the network bonas ended with was one of the standard "
        "designs every study starts from."
    )


def budget_seeds(res: Results) -> str:
    files = budget_seed_files(res)
    if not files:
        return ""
    blocks = []
    for f in files:
        d, src = res.data(f), res.source(f)
        s = d["summary"]
        hand = s.get(HAND, {})
        verdict = (
            f"bonas' median test accuracy {f4(s['bonas_median'])} against {f4(hand['median'])} for {HAND} "
            f"({hand['margin_se_of_medians']:+.1f} standard errors of the difference of the medians); bonas ahead in "
            f"{hand['bonas_wins']} of {hand['seeds']} seeds."
            if hand
            else ""
        )
        missing = [str(x) for x in d.get("seeds_asked", []) if x not in {s["seed"] for s in d["seeds"]}]
        gaps = " ".join(
            [f"Asked for {seeds_text([str(x) for x in d['seeds_asked']])}; {seeds_text(missing)} did not run."] * bool(missing)
            + [f"Hand designs trained in this run: {listing(d['designs'])}; a “—” was not run."] * ("designs" in d)
        )
        split = seeds_split(d)
        header = ["seed", "bonas run", "its network", f"{HAND} (whole budget)", "article's best (whole budget)", "bonas − hand"]
        blocks.append(section(f"### {d['budget']} on {src.machine}, {plural(len(d['seeds']), 'seed')}", res.cite((f, None)),
                              verdict, split, gaps, table(header, seed_rows(d), "rlllll")))  # fmt: skip
    intro = (
        "`bonas run` as shipped (its search starts from the standard designs, its finalists race, the survivor trains to "
        "the deadline) against hand designs trained by the same final training for the **whole** budget, seed by seed."
    )
    return section("## Results per budget, several seeds", intro, *blocks)


def own_data(res: Results) -> str:
    if "own_data.json" not in res.files():
        return ""
    d = res.data("own_data.json")
    blocks = [res.cite(("own_data.json", None))]
    if "speed" in d:
        s = d["speed"]
        m = s["median_images_per_s"]
        rss = {arm: max(r["maxrss_mb"] for r in runs) for arm, runs in s["runs"].items()}
        blocks.append(
            f"One network ({s['network'].get('stem', 'no')} stem) trained 3 epochs on 4 000 of the {num(d['photos'])} "
            f"photos at 128 px, in a new process per run, {len(s['runs']['streamed'])} runs per path, alternating: "
            f"{num(m['in memory'])} images/s with the images held in memory (peak {num(rss['in memory'])} MB resident), "
            f"{num(m['streamed'])} streamed from the store's file (peak {num(rss['streamed'])} MB): {s['ratio']:.2f}x."
        )
    rows = []
    for r in d.get("runs", []):
        rec, mem = r["record"], r["memory"]
        rows.append([f"{r['image_size']} px", f4(rec["test_acc"]), rec.get("arch", ""), str(rec["trials_this_run"]),
                     f"{rec['final_epochs']}", f"{num(mem['largest_process_mb'])} MB", str(mem["processes"]),
                     "streamed" if r["data"]["streamed"] else "in memory"])  # fmt: skip
    if rows:
        header = ["image_size", "test accuracy", "network", "trials", "final epochs", "largest process", "processes", "images"]
        blocks.append(f"`bonas run --budget {d['runs'][0]['budget']}` on the folder, everything but `root` and `image_size` at "
                      "its default, each process's peak resident memory sampled every 0.2 s:")  # fmt: skip
        blocks.append(table(header, rows, "rrlrrrrl"))
    intro = (
        f"A folder of {num(d['photos'])} 160x120 JPEG photos, 10 classes (bench/photos.py: Fashion-MNIST's clothes, "
        "coloured, scaled and placed on cluttered backgrounds), through bonas as a new user runs it."
    )
    return section("## Your own photos", intro, *blocks)


def selection(res: Results) -> str:
    if "selection.json" not in res.files():
        return ""
    d = res.data("selection.json")
    rows = [
        [f"#{f['trial']}", f["arch"], f4(f["search_val_acc"]), f4(f["test_acc"]), str(f["final_epochs"])] for f in d["finalists"]
    ]
    regret = ", ".join(f"{rule} {v:.2f} pt (#{d['picks'][rule]})" for rule, v in d["regret_points"].items())
    rho = ", ".join(f"{k} {v:.2f}" for k, v in d["rank_correlation"].items())
    fid = ", ".join(f"{k}: {v:.2f}" for k, v in d["fidelity_rank_correlation"].items())
    rounds = "; ".join(
        f"round {r['round']} ({r['seconds_each']:.0f} s each): "
        + ", ".join(f"#{e['trial']} {f4(e['val_acc'])}" for e in r["standing"])
        for r in d["race"]
    )
    best_rule = min(d["regret_points"], key=d["regret_points"].get)
    truths = [f["test_acc"] for f in d["finalists"]]
    return section(
        "## Which rule picks the final network",
        res.cite(("selection.json", None)),
        f"The {len(d['finalists'])} finalists of a {d['settings']['search']:.0f}-second search (seed {d['settings']['seed']}), "
        f"each trained as the final training trains for {d['settings']['final']:.0f} s and tested once (the ground truth, "
        f"{f4(min(truths))} to {f4(max(truths))}). Regret of each rule's pick (the best finalist's test accuracy less the "
        f"pick's): {regret}. Rank correlation with the ground truth: {rho}. At equal iterations, the finalists' ranking "
        f"against the ground truth (Spearman): {fid}.",
        f"The race ({d['settings']['race']:.0f} s on the whole training split, validation accuracy): {rounds}.",
        f"Least regret: **{best_rule}**, on one seed; `bonas run` races its finalists by default (`[final] finalists`). "
        f"The finalists' ground truths span {100 * (max(truths) - min(truths)):.2f} pt, each from one training: the rank "
        "correlations are of a close field and noisy.",
        table(["trial", "network", "search val_acc", "test accuracy (ground truth)", "epochs"], rows, "llrrr"),
    )


def final_recipe(res: Results) -> str:
    if "final_recipe.json" not in res.files():
        return ""
    d = res.data("final_recipe.json")
    base = d["arms"][0]["test_acc"]
    rows = [[a["arm"], f4(a["test_acc"]), pt(a["test_acc"] - base), f"{a['seconds']:.0f} s"] for a in d["arms"]]
    where = [f"{a.get('git_commit', d['git_commit'])[:7]}, {machine_text(a.get('cpu', d['machine']))}" for a in d["arms"]]
    head = ["arm", "test accuracy", "vs base", "time"]
    if len(set(where)) > 1:  # bench/final_recipe.py --keep: earlier rows of the same network and training code
        rows = [[*row, w] for row, w in zip(rows, where, strict=True)]
        head.append("measured at, on")
    missing = [a for a in d.get("arms_asked", []) if a not in {r["arm"] for r in d["arms"]}]
    unfinished = [f"The run was stopped before these arms: {', '.join(missing)}."] if missing else []
    n = d["test_images"]
    clear = [a["arm"] for a in d["arms"][1:] if abs(a["test_acc"] - base) >= 2 * se_diff(a["test_acc"], base, n)]
    unfinished.append(
        "Apart from the base by two standard errors of the difference or more: "
        + (", ".join(clear) if clear else "no arm (each is one training of one seed: a tie is a tie)")
        + "."
    )
    return section(
        "## The final training's recipe at its real length",
        res.cite(("final_recipe.json", None)),
        f"`{d['network']}`, {d['epochs']} epochs of {num(d['arms'][0]['train_images'])} images through bonas' final "
        f"training, one seed, tested once on {num(d['test_images'])} images (one standard error: "
        f"{pt(se(base, d['test_images']))}).",
        *unfinished,
        *(
            [
                "Rows measured at an earlier commit were kept (`--keep`): the bonas modules their training loaded and "
                "the config are unchanged since. Each arm trains a fixed number of epochs, so only its time depends "
                "on the CPU: compare times within one machine."
            ]
            if len(head) > 4
            else []
        ),
        table(head, rows, "lrrr" + "l" * (len(head) - 4)),
    )


SECTIONS: tuple[Callable[[Results], str], ...] = (
    quickstart,
    data_path,
    lambda res: "## Performance",
    startup,
    overhead,
    lambda res: "## Storage and parallel workers",
    storage_throughput,
    storage_sqlite,
    storage_real,
    storage_many,
    storage_long_trials,
    lambda res: "## Search quality",
    sampler_section,
    pruner_section,
    tpe_section,
    sampling_cost,
    epochs_per_trial,
    lambda res: "## Repeated proposals",
    repeats_a,
    repeats_b,
    mo_pruning,
    fidelity_medians,
    fidelity_seeds,
    zero_cost,
    screening,
    recipe,
    final_recipe,
    selection,
    budget_seeds,
    budget_table,
    own_data,
)


README = "README.md"
README_START = "<!-- results: rendered by bench/render.py from bench/results/*.json; edit the renderer, not these lines -->"
README_END = "<!-- results end -->"


def readme(root: Path, res: Results) -> str | None:
    """The README with its results block (between README_START and README_END) rendered; None without the block."""
    path = root / README
    text = path.read_text() if path.exists() else ""
    if README_START not in text or README_END not in text:
        return None
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{glance(res)}\n{README_END}{tail}"


def render(root: Path = ROOT) -> dict[str, str]:
    """The pages, by path relative to ``root``: deterministic for one working tree and one set of results; the
    README's results block too, when it has one."""
    res = Results(root)
    blocks = [header(res), section("## At a glance", glance(res)), summary(res), *(b for s in SECTIONS if (b := s(res)))]
    pages = {PAGE: "\n\n".join(blocks) + "\n"}
    front = readme(root, res)
    if front is not None:
        pages[README] = front
    return pages


def check(root: Path, pages: dict[str, str]) -> list[str]:
    """Unified diffs between the committed pages and what renders now; empty when they agree."""
    diffs = []
    for path, text in sorted(pages.items()):
        file = root / path
        old = file.read_text() if file.exists() else ""
        if old != text:
            diffs.append("".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True), f"a/{path}", f"b/{path}")))
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 with a diff when the committed pages differ from a render")
    ap.add_argument("--glance", action="store_true", help="print the short summary proposed for the README")
    args = ap.parse_args(argv)
    if args.glance:
        print(glance(Results(ROOT)))
        return 0
    pages = render(ROOT)
    if args.check:
        diffs = check(ROOT, pages)
        sys.stdout.write("".join(diffs) or "docs are up to date\n")
        return 1 if diffs else 0
    for path, text in pages.items():
        (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / path).write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
