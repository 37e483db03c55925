"""Dead letters across the streams: counted by reason, listed by reason.

A dead stream is capped near its maxlen (runner.store.deadletter.DEFAULT_MAXLEN, 100,000
entries), so reading one whole is bounded by that cap; `limit` bounds it further per
stream. Counting reads every entry's fields (Redis has no index by reason): for a console
that refreshes, count at most as often as the page needs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from runner.inspect.layout import Layout
from runner.store.deadletter import DEFAULT_MAXLEN, DeadEntry, list_dead
from runner.store.errors import redis_errors
from runner.store.streams import next_id

__all__ = ["dead_by_reason", "dead_letters", "iter_dead"]

_PAGE = 500


def iter_dead(
    conn: redis.Redis,
    *,
    layout: Layout,
    stream: str | None = None,
    reason: str | None = None,
    limit: int = DEFAULT_MAXLEN,
) -> Iterator[DeadEntry]:
    """The dead entries of `stream` (default: every stream, in priority order), oldest first
    in each, with `reason` when given; at most `limit` entries read per stream."""
    for name in [stream] if stream else layout.streams:
        start, read = "-", 0
        while read < limit:
            with redis_errors():
                page = list_dead(
                    conn, name, count=min(_PAGE, limit - read), start=start, stream_suffix=layout.dead_suffix
                )
            if not page:
                break
            read += len(page)
            start = next_id(page[-1].dead_id)
            yield from (e for e in page if reason is None or e.reason == reason)


def dead_letters(
    conn: redis.Redis,
    *,
    layout: Layout,
    stream: str | None = None,
    reason: str | None = None,
    count: int = 50,
) -> list[DeadEntry]:
    """Up to `count` dead entries (as iter_dead orders them), with `reason` when given."""
    out: list[DeadEntry] = []
    for entry in iter_dead(conn, layout=layout, stream=stream, reason=reason):
        out.append(entry)
        if len(out) >= count:
            break
    return out


def dead_by_reason(
    conn: redis.Redis, stream: str | None = None, *, layout: Layout, limit: int = DEFAULT_MAXLEN
) -> dict[str, int]:
    """{reason: count} over the dead streams (or `stream`'s), most frequent first."""
    counts: dict[str, int] = {}
    for entry in iter_dead(conn, layout=layout, stream=stream, limit=limit):
        counts[entry.reason] = counts.get(entry.reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
