"""The group's pending entries (delivered, not acked): who holds each, for how long, and
which message it carries. Bounded by `count` per stream (XPENDING's own paging)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from runner.inspect.layout import Layout
from runner.message import payload_id
from runner.store.errors import redis_errors
from runner.store.replies import text
from runner.store.streams import entry_time_ms

__all__ = ["PendingEntry", "pending"]


@dataclass(frozen=True)
class PendingEntry:
    stream: str
    entry_id: str
    added_ms: int | None  # the entry id's time (its XADD)
    consumer: str  # the consumer holding it
    idle_ms: int  # since its last delivery
    deliveries: int  # the group's delivery counter
    message_id: str | None  # None: the entry is gone (trimmed, deleted) or carries no readable id


def pending(
    conn: redis.Redis,
    *,
    layout: Layout,
    stream: str | None = None,
    count: int = 100,
    min_idle_ms: int | None = None,
    consumer: str | None = None,
) -> list[PendingEntry]:
    """The first `count` pending entries of `stream` (default: each stream), oldest first."""
    out: list[PendingEntry] = []
    for name in [stream] if stream else layout.streams:
        with redis_errors():
            try:
                rows = conn.xpending_range(
                    name, layout.group, min="-", max="+", count=count, consumername=consumer, idle=min_idle_ms
                )
            except redis.ResponseError:  # no stream or no group
                continue
            pipe = conn.pipeline(transaction=False)
            for row in rows:
                pipe.xrange(name, row["message_id"], row["message_id"])
            entries = pipe.execute() if rows else []
        for row, found in zip(rows, entries):
            entry_id = text(row["message_id"])
            payload = found[0][1].get(b"payload") if found else None
            out.append(
                PendingEntry(
                    stream=name,
                    entry_id=entry_id,
                    added_ms=entry_time_ms(entry_id),
                    consumer=text(row["consumer"]),
                    idle_ms=int(row["time_since_delivered"]),
                    deliveries=int(row["times_delivered"]),
                    message_id=None if payload is None else payload_id(text(payload)),
                )
            )
    return out
