"""Inspecting the job streams without reading them: a group's pending entries, and each
stream's length, pending count, lag and dead letters. What `ksr pending`, `ksr status` and
the leader's stream gauges show; reading with the group is runner.store.stream_reader's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from runner.store.errors import redis_errors
from runner.store.replies import text
from runner.store.streams import DEAD_SUFFIX, entry_time_ms

__all__ = ["PendingInfo", "PendingSummary", "StreamInspection", "StreamStats"]


@dataclass(frozen=True)
class PendingInfo:
    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(frozen=True)
class PendingSummary:
    count: int
    min_id: str | None
    max_id: str | None
    consumers: dict[str, int]


@dataclass(frozen=True)
class StreamStats:
    """`lag` is None when Redis cannot tell (it says so after deletions in the stream).
    `oldest_age`: seconds since the oldest entry not yet acked (pending or not yet
    delivered) was added, by Redis's clock; 0 when none waits."""

    length: int
    pending: int
    lag: int | None
    dead: int
    oldest_age: float = 0.0


class StreamInspection:
    """Group `group` on `streams`, as seen from outside: nothing here reads, claims or acks."""

    def __init__(self, redis_client: redis.Redis, *, streams: Sequence[str], group: str) -> None:
        self.redis = redis_client
        self.streams = list(streams)
        self.group = group

    def pending(
        self,
        stream: str,
        *,
        consumer: str | None = None,
        min_idle_ms: int | None = None,
        start: str = "-",
        end: str = "+",
        count: int = 100,
    ) -> list[PendingInfo]:
        with redis_errors():
            rows = self.redis.xpending_range(
                stream, self.group, min=start, max=end, count=count, consumername=consumer, idle=min_idle_ms
            )
        return [
            PendingInfo(
                text(r["message_id"]), text(r["consumer"]), int(r["time_since_delivered"]), int(r["times_delivered"])
            )
            for r in rows
        ]

    def pending_summary(self, stream: str) -> PendingSummary:
        with redis_errors():
            summary = self.redis.xpending(stream, self.group)
        return PendingSummary(
            count=int(summary["pending"]),
            min_id=text(summary["min"]) if summary["min"] else None,
            max_id=text(summary["max"]) if summary["max"] else None,
            consumers={text(c["name"]): int(c["pending"]) for c in summary["consumers"]},
        )

    def stats(self) -> dict[str, StreamStats]:
        """length, pending, lag, dead-letter length and oldest waiting entry's age of every
        stream, for our group: one round trip, and a second for the streams with entries
        not yet delivered (the first of them is the one after the group's last-delivered id)."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.time()
            for stream in self.streams:
                pipe.xlen(stream)
                pipe.xinfo_groups(stream)
                pipe.xlen(stream + DEAD_SUFFIX)
                pipe.xpending(stream, self.group)
            replies = pipe.execute(raise_on_error=False)
        now = replies[0]
        if isinstance(now, Exception):
            raise now
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        rows: dict[str, tuple[int, dict[str, Any], int, str | None]] = {}
        for n, stream in enumerate(self.streams):
            length, groups, dead, pending = replies[1 + 4 * n : 5 + 4 * n]
            if isinstance(length, Exception) or isinstance(dead, Exception):
                raise length if isinstance(length, Exception) else dead
            ours: dict[str, Any] = {}
            if not isinstance(groups, Exception):  # no such stream: nothing to report
                ours = next((g for g in groups if text(g["name"]) == self.group), {})
            oldest_pending = None
            if ours and not isinstance(pending, Exception) and pending.get("min"):
                oldest_pending = text(pending["min"])
            rows[stream] = (int(length), ours, int(dead), oldest_pending)
        undelivered = self._first_undelivered({s: r[1] for s, r in rows.items()})
        out = {}
        for stream, (length, ours, dead, oldest_pending) in rows.items():
            lag = ours.get("lag")
            times = [entry_time_ms(i) for i in (oldest_pending, undelivered.get(stream)) if i is not None]
            oldest_ms = min((t for t in times if t is not None), default=None)
            out[stream] = StreamStats(
                length=length,
                pending=int(ours.get("pending", 0)),
                lag=None if lag is None else int(lag),
                dead=dead,
                oldest_age=0.0 if oldest_ms is None else max(0, now_ms - oldest_ms) / 1000.0,
            )
        return out

    def _first_undelivered(self, groups: dict[str, dict[str, Any]]) -> dict[str, str]:
        """stream -> id of its first entry the group has not been given yet, for the streams
        whose lag is not 0 (None: Redis cannot tell, so look)."""
        wanted = [(s, text(g["last-delivered-id"])) for s, g in groups.items() if g and g.get("lag") != 0]
        if not wanted:
            return {}
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for stream, last in wanted:
                pipe.xrange(stream, min="(" + last, max="+", count=1)
            replies = pipe.execute(raise_on_error=False)
        return {
            stream: text(reply[0][0])
            for (stream, _), reply in zip(wanted, replies)
            if not isinstance(reply, Exception) and reply
        }
