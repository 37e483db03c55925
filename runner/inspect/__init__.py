"""The read layer: what Redis says of the deployment's messages, for `ksr` and the console.

Reads only (nothing here writes, claims or acks), from Redis only, so any replica (or a
laptop with REDIS_URL) sees the whole deployment. Results are frozen dataclasses; every
time is Unix milliseconds and every duration milliseconds; text is as Redis holds it, and
escaping it is the renderer's job (a message id can be `<img src=x onerror=...>`).

    layout = Layout.from_settings(settings)            # every key name
    find(conn, id, layout=layout)      -> list[Sighting]   every place the id is (places.py)
    where_of(sightings)                -> (where, Sighting) where it is now, in one word
    timeline(conn, id, layout=layout)  -> list[Moment]     what happened, ordered (timeline.py)
    recent(conn, layout=layout, state=, stream=, service=, namespace=, since_ms=, limit=,
           cursor=)                    -> RecentPage       newest first, paged (recent.py)
    dead_by_reason(conn, stream, layout=layout) -> {reason: count}           (dead.py)
    dead_letters / iter_dead(conn, layout=, stream=, reason=)  dead entries   (dead.py)
    pending(conn, layout=layout, stream=, count=) -> list[PendingEntry]      (pending.py)
    backlog(conn, layout=layout)       -> list[Backlog]    per stream, paused or not (backlog.py)

What bounds each scan is in its module's docstring.
"""

from __future__ import annotations

from runner.inspect.backlog import Backlog, backlog
from runner.inspect.dead import dead_by_reason, dead_letters, iter_dead
from runner.inspect.layout import Layout
from runner.inspect.pending import PendingEntry, pending
from runner.inspect.places import Bounds, Place, Sighting, find, read_record, where_of
from runner.inspect.recent import Recent, RecentPage, recent
from runner.inspect.timeline import Moment, MomentKind, timeline

__all__ = [
    "Backlog",
    "Bounds",
    "Layout",
    "Moment",
    "MomentKind",
    "PendingEntry",
    "Place",
    "Recent",
    "RecentPage",
    "Sighting",
    "backlog",
    "dead_by_reason",
    "dead_letters",
    "find",
    "iter_dead",
    "pending",
    "read_record",
    "recent",
    "timeline",
    "where_of",
]
