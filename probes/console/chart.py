"""The throughput chart's geometry: per-minute counts in, SVG polyline points out. Pure, so
it is tested without a browser; the template draws it (inline SVG, no JavaScript library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Chart", "SERIES", "throughput_chart"]

SERIES = ("dispatched", "completed", "failed")
WIDTH, HEIGHT, PAD = 960, 200, 24


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    peak: int  # the top of the y axis
    lines: dict[str, str]  # series -> "x,y x,y ..." for <polyline points>
    totals: dict[str, int]
    first_minute: int | None
    last_minute: int | None


def _nice(n: int) -> int:
    """The smallest of 1, 2, 5 × 10^k at least n (an axis top people can read)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= n:
                return step * top
        top *= 10


def throughput_chart(rows: Sequence[Mapping[str, int]], *, width: int = WIDTH, height: int = HEIGHT) -> Chart:
    peak = _nice(max([1, *(int(r.get(s, 0)) for r in rows for s in SERIES)]))
    span = max(1, len(rows) - 1)
    inner_w, inner_h = width - 2 * PAD, height - 2 * PAD
    lines = {}
    for series in SERIES:
        points = []
        for i, row in enumerate(rows):
            x = PAD + inner_w * i / span
            y = PAD + inner_h * (1 - int(row.get(series, 0)) / peak)
            points.append(f"{x:.1f},{y:.1f}")
        lines[series] = " ".join(points)
    return Chart(
        width=width,
        height=height,
        peak=peak,
        lines=lines,
        totals={s: sum(int(r.get(s, 0)) for r in rows) for s in SERIES},
        first_minute=int(rows[0]["minute"]) if rows else None,
        last_minute=int(rows[-1]["minute"]) if rows else None,
    )
