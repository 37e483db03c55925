"""Durations for people: `format_age` renders seconds the way every `ksr` command and
every refusal message shows them (3s, 4m12s, 2h05m, 3d04h)."""

from __future__ import annotations

__all__ = ["format_age"]


def format_age(seconds: float | None) -> str:
    """3s, 4m12s, 2h05m, 3d04h: short and sortable by eye."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
