"""Study configs for the benches: a preset's TOML with one of its tables taken out, to be set anew."""

from __future__ import annotations

import re


def without_table(text: str, name: str) -> str:
    """``text`` without its ``[name]`` table: the header and its lines up to the next table."""
    return re.sub(rf"\n\[{re.escape(name)}\]\n(?:[^\[\n].*\n|\n)*", "\n", text)
