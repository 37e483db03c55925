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
    """`lag` is None when Redis cannot tell (it says so after deletions in the stream)."""

    length: int
    pending: int
    lag: int | None
    dead: int


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
        """length, pending, lag and dead-letter length of every stream, for our group."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xlen(stream)
                pipe.xinfo_groups(stream)
                pipe.xlen(stream + DEAD_SUFFIX)
            replies = pipe.execute(raise_on_error=False)
        out = {}
        for n, stream in enumerate(self.streams):
            length, groups, dead = replies[3 * n : 3 * n + 3]
            if isinstance(length, Exception) or isinstance(dead, Exception):
                raise length if isinstance(length, Exception) else dead
            ours: dict[str, Any] = {}
            if not isinstance(groups, Exception):  # no such stream: nothing to report
                ours = next((g for g in groups if text(g["name"]) == self.group), {})
            lag = ours.get("lag")
            out[stream] = StreamStats(
                length=int(length),
                pending=int(ours.get("pending", 0)),
                lag=None if lag is None else int(lag),
                dead=int(dead),
            )
        return out

    def oldest_waiting_ms(self) -> dict[str, int | None]:
        """Per stream, the time (Unix ms, from its id) of the oldest entry not yet acked:
        the oldest pending one or the first not yet read, whichever is older; None when
        nothing waits. A paused stream's backlog keeps its age here."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for stream in self.streams:
                pipe.xinfo_groups(stream)
            groups = pipe.execute(raise_on_error=False)
            pipe = self.redis.pipeline(transaction=False)
            for stream, reply in zip(self.streams, groups):
                ours: dict[str, Any] = {}
                if not isinstance(reply, Exception):
                    ours = next((g for g in reply if text(g["name"]) == self.group), {})
                last = text(ours.get("last-delivered-id") or b"0-0")
                pipe.xrange(stream, "(" + last, "+", count=1)
                if ours:
                    pipe.xpending(stream, self.group)
                else:
                    pipe.echo(b"")  # keeps the replies in pairs
            replies = pipe.execute(raise_on_error=False)
        out: dict[str, int | None] = {}
        for n, stream in enumerate(self.streams):
            unread, pending = replies[2 * n : 2 * n + 2]
            times = []
            if isinstance(unread, list) and unread:
                times.append(entry_time_ms(text(unread[0][0])))
            if isinstance(pending, dict) and pending.get("min"):
                times.append(entry_time_ms(text(pending["min"])))
            found = [t for t in times if t is not None]
            out[stream] = min(found) if found else None
        return out
