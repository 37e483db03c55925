"""Durations as operators write them: `30`, `2.5`, `30s`, `500ms`, `5m`, `1h`.

Shared by the election's and the runner's settings (election imports nothing from runner,
so the one parser lives here). Problems are raised as ValueError whose text says what is
wrong without the variable's name: the caller knows the name and adds it.
"""

from __future__ import annotations

import math
import re

__all__ = ["SECONDS_PROBLEM", "parse_seconds"]

SECONDS_PROBLEM = "must be a number of seconds > 0"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))\s*(ms|s|m|h)?\s*$", re.I)


def parse_seconds(text: str) -> float:
    """Seconds from `text`: a number with an optional unit (ms, s, m, h; seconds without one).
    Raises ValueError unless the result is a finite number above zero."""
    match = _DURATION.match(text)
    value = math.nan
    if match:
        number, unit = match.groups()
        value = float(number) * _UNITS[(unit or "s").lower()]
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{SECONDS_PROBLEM}, got {text!r}")
    return value
