"""Each stream's backlog as an operator reads it: what waits unread and how old the oldest
is, what is pending, what is dead, and whether the stream is paused (a paused stream's
backlog keeps ageing: that is how a forgotten pause shows)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from runner.inspect.layout import Layout
from runner.store.errors import redis_errors
from runner.store.pause import Paused, PauseStore
from runner.store.replies import text
from runner.store.stream_inspection import StreamInspection
from runner.store.streams import entry_time_ms

__all__ = ["Backlog", "backlog"]


@dataclass(frozen=True)
class Backlog:
    stream: str
    length: int  # XLEN: acked entries the leader has not trimmed yet included
    unread: int | None  # the group's lag: entries not delivered yet (None: Redis cannot tell)
    pending: int  # delivered, not acked
    dead: int  # entries of <stream>:dead
    oldest_unread_ms: int | None  # the XADD time of the oldest entry not delivered yet
    oldest_pending_ms: int | None  # the XADD time of the oldest pending entry
    paused: Paused | None  # set while the stream is paused

    def age_ms(self, now_ms: int) -> int | None:
        """How long the oldest waiting entry (unread, else pending) has waited."""
        oldest = self.oldest_unread_ms or self.oldest_pending_ms
        return None if oldest is None else max(0, now_ms - oldest)


def backlog(conn: redis.Redis, *, layout: Layout) -> list[Backlog]:
    """Every stream of the layout, in priority order."""
    stats = StreamInspection(conn, streams=layout.streams, group=layout.group).stats()
    paused = PauseStore(conn, namespace=layout.namespace).paused_streams()
    out = []
    with redis_errors():
        for stream in layout.streams:
            oldest_unread = oldest_pending = None
            try:
                groups = conn.xinfo_groups(stream)
            except redis.ResponseError:  # no stream yet
                groups = []
            ours = next((g for g in groups if text(g.get("name")) == layout.group), None)
            start = "(" + text(ours["last-delivered-id"]) if ours else "-"
            first = conn.xrange(stream, start, "+", count=1) if stats[stream].length else []
            if first:
                oldest_unread = entry_time_ms(text(first[0][0]))
            if ours and stats[stream].pending:
                summary = conn.xpending(stream, layout.group)
                oldest_pending = entry_time_ms(text(summary["min"])) if summary.get("min") else None
            s = stats[stream]
            out.append(
                Backlog(
                    stream=stream,
                    length=s.length,
                    unread=s.lag,
                    pending=s.pending,
                    dead=s.dead,
                    oldest_unread_ms=oldest_unread,
                    oldest_pending_ms=oldest_pending,
                    paused=paused.get(stream),
                )
            )
    return out
