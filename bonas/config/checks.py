"""The shapes of a config's value checks, shared by every section: each failure is one ConfigError line naming
the file, the key, the value and what would work."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from bonas.core.errors import ConfigError

Fail = Callable[[str, str], NoReturn]  # fail(key, why): raise the one line for ``key``


def failer(source: str, section: str = "") -> Fail:
    """A ``fail(key, why)`` for one section of the config read from ``source`` (keys become ``section.key``)."""

    def fail(key: str, why: str) -> NoReturn:
        raise ConfigError(f"{source}: {section + '.' if section else ''}{key}: {why}")

    return fail


def nearest(key: str, valid: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else f" (valid keys: {', '.join(sorted(valid))})"


def one_of(fail: Fail, key: str, value: str, allowed: Iterable[str]) -> None:
    """``value`` must be one of ``allowed`` (a registry's keys, read when the check runs)."""
    allowed = tuple(allowed)
    if value not in allowed:
        match = difflib.get_close_matches(value, allowed, n=1, cutoff=0.5)
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        fail(key, f"unknown value {value!r}{hint}; choose one of: {', '.join(allowed)}")


def choices(fail: Fail, key: str, values: list[Any], allowed: Iterable[str] = (), positive: bool = False) -> None:
    """A non-empty list of distinct choices, each allowed (when ``allowed`` is given) and >= 1 (``positive``)."""
    allowed = tuple(allowed)
    if not values:
        fail(key, "the choice list is empty; give at least one value")
    if len(set(values)) != len(values):
        fail(key, f"choices must be unique, got {values}")
    for v in values:
        if allowed:
            one_of(fail, key, v, allowed)
        if positive and v < 1:
            fail(key, f"choices must be >= 1, got {v}")


def bounds(
    fail: Fail,
    key: str,
    values: list[Any],
    integer: bool = False,
    positive: bool = False,
    lower: float | None = None,
    upper: float | None = None,
) -> None:
    """A ``[min, max]`` range: two values, in order, whole when ``integer``, > 0 when sampled on a log scale."""
    if len(values) != 2:
        fail(key, f"expected [min, max], got {values}")
    lo, hi = values
    if integer and (not float(lo).is_integer() or not float(hi).is_integer()):
        fail(key, f"expected whole numbers, got {values}")
    if lo > hi:
        fail(key, f"min > max: min={lo}, max={hi}; write [min, max]")
    if positive and lo <= 0 and lo != hi:
        fail(key, f"min must be > 0 (sampled on a log scale), got {lo}; use [0, 0] to fix it at 0")
    if lower is not None and lo < lower:
        fail(key, f"min must be >= {lower}, got {lo}")
    if upper is not None and hi > upper:
        fail(key, f"max must be <= {upper}, got {hi}")


def at_least(fail: Fail, key: str, value: float, lowest: float, why: str = "") -> None:
    if value < lowest:
        fail(key, f"must be >= {lowest:g}{' ' + why if why else ''}, got {value}")


def between(fail: Fail, key: str, value: float, lo: float, hi: float, why: str = "") -> None:
    """Strictly between ``lo`` and ``hi``."""
    if not lo < value < hi:
        fail(key, f"must be between {lo:g} and {hi:g}{' ' + why if why else ''}, got {value}")


def applies(fail: Fail, written: dict[str, Any], name: str, takes: set[str], table: str) -> None:
    """Keys written in a [sampler]/[pruner] table must be ones the chosen ``name`` takes: a key set for another
    choice is an error, not silently ignored."""
    for key in written:
        if key != "name" and key not in takes:
            fail(key, f"does not apply to {table} '{name}' (it takes: {', '.join(sorted(takes)) or 'nothing'})")
