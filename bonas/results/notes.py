"""Trial and study notes for optuna-dashboard: Markdown rendered from the trial record alone.

Every trial gets a note (optuna-dashboard's note API): its architecture as a table of layers, output
shapes, parameters and FLOPs, the totals, the epochs it ran and why it ended. The note is built from the
stored :class:`~bonas.records.TrialRecord`, so it needs no network and no training stack.
"""

from __future__ import annotations

from typing import Any

from bonas.core.records import TrialRecord


def si(n: float | None) -> str:
    """12345 -> 12.3k; None -> '-'."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def note_markdown(r: TrialRecord, max_epochs: int, kept: bool = False) -> str:
    acc = r.values[0] if r.values else None
    lines = [f"### Trial {r.number}: {r.state.name}" + (f", val_acc {acc:.4f}" if acc is not None else ""), ""]
    if r.arch_line:
        lines += [f"`{r.arch_line}`", ""]
    if r.layers:
        lines += ["| layer | type | output | params | FLOPs |", "|---|---|---|---:|---:|"]
        for name, kind, shape, params, flops in r.layers:
            lines.append(f"| {name} | {kind} | {'×'.join(str(s) for s in shape)} | {params:,} | {si(flops)} |")
        total_p, total_f = sum(row[3] for row in r.layers), sum(row[4] for row in r.layers)
        lines += [f"| **total** | | | **{total_p:,}** | **{si(total_f)}** |", ""]
        lines.append(f"- **parameters** {total_p:,} · **FLOPs per image** {total_f:,} ({si(total_f)})")
    if r.epochs is not None:
        resumed = f" (resumed from a checkpoint at epoch {r.resumed_at})" if r.resumed_at else ""
        lines.append(f"- **epochs run** {r.epochs} of {max_epochs}{resumed}")
    if r.reason:
        lines.append(f"- **ended** {r.reason}")
    if r.train:
        knobs = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.train.items())
        lines.append(f"- **training** {knobs}")
    if r.seconds is not None:
        lines.append(f"- **training time** {r.seconds:.1f} s")
    if r.retry_of is not None:
        lines.append(f"- **retry of** trial {r.retry_of}")
    if kept:
        lines.append("- **artifacts** weights (checkpoint), ArchSpec and learning curve, kept while this trial is in the top k")
    return "\n".join(lines) + "\n"


def write_note(study_or_trial: Any, body: str) -> None:
    from optuna_dashboard import save_note  # imported here: the dashboard package costs ~1 s to import

    save_note(study_or_trial, body)


def study_note(config_dict: dict[str, Any], data_info: dict[str, Any], command: str) -> str:
    space = config_dict.get("space", {})
    lines = [
        f"## bonas study `{config_dict.get('name')}`",
        "",
        f"- **data** {data_info.get('dataset')}: {data_info.get('n_train')} train / {data_info.get('n_val')} validation images, "
        f"input {'×'.join(map(str, data_info.get('input_shape', [])))}, {data_info.get('n_classes')} classes",
        f"- **sampler** {config_dict.get('sampler', {}).get('name')}, **pruner** {config_dict.get('pruner', {}).get('name')}, "
        f"**epochs per trial** {config_dict.get('training', {}).get('max_epochs')}",
        f"- **space** blocks {space.get('n_blocks')}, widths {space.get('widths') or space.get('width_range')}, "
        f"kernels {space.get('kernel_sizes')}, "
        f"pooling {space.get('pooling')}, heads {space.get('heads')}, dense layers {space.get('dense_layers')}",
        f"- **reproduce** `{command}`",
        "",
        "Each trial's note shows its architecture layer by layer; the resolved config, package versions and "
        "hardware are in the study's user attributes.",
    ]
    return "\n".join(lines) + "\n"
