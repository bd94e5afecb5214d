"""Shared fixtures: everything shrunk (digits subsets, 1-2 epochs, tiny widths, CPU, no workers).

System parts (PostgreSQL, MariaDB, chromium, Debian's Fashion-MNIST, network namespaces) may be missing
on a user's machine: their tests skip with a reason there. In CI (CI=true, set by .ci/run) a missing
part fails the test instead, so nothing is silently skipped.
"""

from __future__ import annotations

import pytest

from tests.helpers import write_tiny_config


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(name="tiny", **kw)`` writes a tiny study config into tmp_path and returns its path."""
    return lambda name="tiny", **kw: write_tiny_config(tmp_path, name, **kw)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Data caches in a per-session folder; no storage override leaking in from the shell."""
    monkeypatch.setenv("BONAS_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
    monkeypatch.delenv("BONAS_STORAGE", raising=False)
