"""What `/status` (and the status page) shows of scheduling, read from Redis by any replica:
delayed messages waiting and the next due time, and each recurring schedule with its next
run (in its own time zone and in UTC), the last tick handled, and whether an operator
suspended it (`ksr schedules pause`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK
from runner.schedules.config import Schedule
from runner.schedules.cron import in_zone
from runner.schedules.ticker import last_fired
from runner.store.pause import Paused, PauseStore
from runner.store.schedule import ScheduledStore

__all__ = ["iso", "schedule_rows", "scheduling_overview"]


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def scheduling_overview(
    redis_client: redis.Redis,
    *,
    streams: Sequence[str],
    schedules: Sequence[Schedule],
    pause_namespace: str,
    now: float | None = None,
) -> dict[str, Any]:
    now = SYSTEM_CLOCK.time() if now is None else now
    store = ScheduledStore(redis_client, streams=streams)
    next_due = store.next_due()
    return {
        "waiting": sum(store.waiting().values()),
        "next_due": iso(next_due),
        "next_due_in": None if next_due is None else round(max(0.0, next_due - now), 3),
        "schedules": schedule_rows(redis_client, schedules, now=now, pause_namespace=pause_namespace),
    }


def schedule_rows(
    redis_client: redis.Redis, schedules: Sequence[Schedule], *, now: float, pause_namespace: str
) -> list[dict[str, Any]]:
    """Each schedule with its next run after `now` (local and UTC), the last tick handled, and
    `suspended` ({at, by}, or None). A suspended one's next run is when it would fire if resumed."""
    last = last_fired(redis_client, [s.name for s in schedules])
    suspended = PauseStore(redis_client, namespace=pause_namespace).suspended_schedules()
    rows = []
    for s in schedules:
        tick = s.cron.next_after(now)
        rows.append(
            {
                "name": s.name,
                "cron": s.cron.expr,
                "timezone": s.timezone,
                "stream": s.stream,
                "catch_up": s.catch_up,
                "next_run": in_zone(tick, s.timezone),
                "next_run_utc": iso(tick.timestamp()),
                "last_tick_utc": iso(last[s.name]),
                "suspended": _suspension(suspended.get(s.name)),
            }
        )
    return rows


def _suspension(p: Paused | None) -> dict[str, Any] | None:
    return None if p is None else {"at": iso(p.at_ms / 1000), "by": p.by or None}
