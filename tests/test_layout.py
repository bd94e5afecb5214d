"""The package's shape: layers that import one way, no import circles, small modules and functions.

Read from the source with ``ast`` (every import, module-level or inside a function, counts), so the rules
hold for what the code says, not for what a test happened to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "bonas"
# Bottom to top: a module may import its own layer and the ones below, never one above.
LAYERS = ["core", "config", "study", "results", "data", "model", "training", "nas", "commands", "top"]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """The bonas modules ``path`` imports (``from bonas.x import y`` names module ``bonas.x.y`` when it is one)."""
    known = modules()
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bonas")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("bonas"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found - {name}


def test_every_import_goes_down_or_sideways():
    wrong = []
    for name, path in modules().items():
        for target in imports_of(path, name):
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(name)):
                wrong.append(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {name: imports_of(path, name) & set(modules()) for name, path in modules().items()}
    # a package's __init__ re-exporting its modules is not a circle with them
    graph = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in trail:
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in done:
                visit(nxt, [*trail, nxt])
        done.add(node)

    done: set[str] = set()
    for start in graph:
        if start not in done:
            visit(start, [start])
    assert not circles, "\n".join(sorted(set(circles)))


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_and_functions_stay_small(name):
    path = modules()[name]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: " + ", ".join(long)
