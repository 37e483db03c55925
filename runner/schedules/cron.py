"""Tick arithmetic for one 5-field cron expression in an IANA time zone, on cronsim.

Ticks are aware datetimes; the caller stores and compares them as UTC instants. cronsim
follows Debian cron across DST: a wall time skipped by spring-forward fires once right
after the change, a wall time repeated by fall-back fires once (its first occurrence),
and expressions with a wildcard hour keep firing in absolute time through both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

__all__ = ["Cron", "CronSimError", "in_zone", "tick_id", "utc_ms"]

MAX_COUNTED = 10_000  # ticks counted as missed after a long gap: a bound, not a figure


def utc_ms(tick: datetime) -> int:
    return int(tick.timestamp() * 1000)


class Cron:
    def __init__(self, expr: str, tz: str = "UTC") -> None:
        if len(expr.split()) != 5:
            raise CronSimError(f"must have 5 fields (minute hour day month weekday), got {len(expr.split())}")
        self.expr = expr
        self.tz = ZoneInfo(tz)
        CronSim(expr, datetime(2000, 1, 1, tzinfo=self.tz))  # raises CronSimError on a bad field: any start will do

    def _local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, tz=UTC).astimezone(self.tz)

    def next_after(self, at: float) -> datetime:
        """The first tick strictly after Unix time `at`."""
        local = self._local(at)
        # cronsim starts from the next whole minute when `at` has seconds; from the minute
        # itself otherwise, which is a tick we must not repeat: step one second past it.
        tick = next(CronSim(self.expr, local))
        while tick.timestamp() <= at:
            tick = next(CronSim(self.expr, self._local(tick.timestamp() + 1)))
        return tick

    def latest_at_or_before(self, at: float) -> datetime | None:
        """The last tick at or before Unix time `at`."""
        tick = next(CronSim(self.expr, self._local(at + 60), reverse=True), None)
        while tick is not None and tick.timestamp() > at:
            tick = next(CronSim(self.expr, self._local(tick.timestamp() - 1), reverse=True), None)
        return tick

    def between(self, after: float, until: float) -> Iterator[datetime]:
        """Ticks in (after, until], oldest first, at most MAX_COUNTED."""
        tick = self.next_after(after)
        for _ in range(MAX_COUNTED):
            if tick.timestamp() > until:
                return
            yield tick
            tick = self.next_after(tick.timestamp())


def tick_id(name: str, tick: datetime) -> str:
    """The message id of a tick: `<name>-<tick in UTC>`, e.g. nightly-20261201T013000Z."""
    return f"{name}-{tick.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def in_zone(tick: datetime, tz: str) -> str:
    return tick.astimezone(ZoneInfo(tz)).isoformat()
