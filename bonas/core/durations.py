"""Wall-clock budgets in text ('90s', '45m', '1h30m'): the one parser, with no import of the training stack, so a
mistyped ``--budget`` is answered before torch loads."""

from __future__ import annotations

import re

MIN_BUDGET_S = 10  # a budget under this cannot train anything


def parse_duration(text: str) -> float:
    """'90s', '45m', '1h', '1h30m', '2h15m30s' or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", t)
        if not t or parts is None or not any(parts.groups()):
            raise ValueError(f"expected a duration such as 90s, 45m, 1h or 1h30m, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if seconds < MIN_BUDGET_S:
        raise ValueError(f"a budget under {MIN_BUDGET_S} s cannot train anything, got {text!r}")
    return seconds
