"""Rebuilding a trial's network from its stored params alone (what ``bonas show`` prints, what retrain trains).

The study's stored config gives the space; the stored data shape gives the input; the trial's params
replay through the space (Optuna's FixedTrial) into the same ArchSpec the trial trained.
"""

from __future__ import annotations

import dataclasses
import sys

from optuna.trial import FrozenTrial

from bonas.core import records as R
from bonas.core.errors import StudyError
from bonas.core.spec import ArchSpec, TrainSpec
from bonas.model.build import build_model, format_summary, resolutions, summarize
from bonas.nas.space import specs_from_params
from bonas.study.studies import Opened, stored_data, trial_of


def input_of(opened: Opened) -> tuple[tuple[int, int, int], int, str]:
    """(input shape, number of classes, data set) the study was searched on."""
    data = stored_data(opened.study)
    if not data:
        raise StudyError(f"study {opened.study.study_name!r} has no stored data shape; was it made by bonas?")
    return tuple(data["input_shape"]), data["n_classes"], data["dataset"]


def specs_of(opened: Opened, trial: FrozenTrial, shape: tuple[int, int, int]) -> tuple[ArchSpec, TrainSpec]:
    c = opened.config
    try:
        return specs_from_params(trial.params, c.space, c.training, c.data, shape)
    except (ValueError, KeyError) as err:
        raise StudyError(f"trial {trial.number} cannot be rebuilt from its params ({err})") from None


def show(opened: Opened, number: int) -> str:
    """The trial's network rebuilt from its params: architecture, training knobs, layers, params, FLOPs."""
    t = trial_of(opened.study, number)
    shape, n_classes, dataset = input_of(opened)
    arch, train = specs_of(opened, t, shape)
    net = build_model(arch, shape, n_classes)
    r = R.TrialRecord.of(t)
    if r.arch is not None and ArchSpec.from_dict(r.arch) != arch:
        print("warning: the rebuilt architecture differs from the one stored on the trial", file=sys.stderr)
    lines = [
        f"trial {t.number} of {opened.study.study_name!r}: {t.state.name}, "
        f"val_acc {'-' if r.val_acc is None else f'{r.val_acc:.4f}'}",
        f"  input {'x'.join(map(str, shape))}, {n_classes} classes ({dataset})",
        f"  architecture  {arch.describe()}",
        "  resolution    " + " -> ".join(f"{name} {h}x{w}" for name, h, w in resolutions(arch, shape)),
        f"  training      {', '.join(f'{k}={v}' for k, v in dataclasses.asdict(train).items())}",
        "",
        format_summary(summarize(net, shape)),
    ]
    return "\n".join(lines)
