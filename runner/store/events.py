"""The events stream `ksr:events`: every status transition, for producers without a webhook.

One entry per transition, capped near `maxlen` entries (`MAXLEN ~`, so Redis trims whole
nodes cheaply). The tracker's is appended in the same Lua step as the callback's mark
(`NewEvent` travels with `StateStore.mark_callback` / `record_job`); `append_event` writes
one on its own. Fields:

    id       the message id
    status   0 | 1 | 2 | 3 | 99, as in the callback
    detail   JSON object, the callback's detail
    job      the Job name (absent before a Job exists)
    ts       Unix time in milliseconds

Readers follow it with XREAD from the last id they saw; nobody acks it.

An operator's action from the console (`append_operator_event`) is an entry too, without
`status` (readers see -1): `id` is the message id or the target (`ksr:jobs:default:dead
reason=policy`), `action` and `by` say what and who, `detail` holds the counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK
from ksr_client.entries import entries_of
from runner.store.errors import redis_errors
from runner.store.replies import text

__all__ = [
    "DEFAULT_MAXLEN",
    "EVENTS_STREAM",
    "Event",
    "NewEvent",
    "append_event",
    "append_operator_event",
    "new_event",
    "parse_event",
    "read_events",
]

EVENTS_STREAM = "ksr:events"
DEFAULT_MAXLEN = 100_000


@dataclass(frozen=True)
class Event:
    event_id: str
    message_id: str
    status: int
    detail: dict[str, Any]
    job_name: str | None
    ts: int


@dataclass(frozen=True)
class NewEvent:
    """One transition to append: its `fields` in order, to `stream` capped near `maxlen`."""

    stream: str
    maxlen: int
    fields: dict[str, str | int]


def new_event(
    *,
    message_id: str,
    status: int,
    detail: dict[str, Any],
    job_name: str | None = None,
    stream: str = EVENTS_STREAM,
    maxlen: int = DEFAULT_MAXLEN,
    now: float | None = None,
) -> NewEvent:
    """The entry for one transition; `now` (Unix seconds) defaults to the current time."""
    fields: dict[str, str | int] = {
        "id": message_id,
        "status": int(status),
        "detail": json.dumps(detail, separators=(",", ":"), sort_keys=True),
        "ts": int((SYSTEM_CLOCK.time() if now is None else now) * 1000),
    }
    if job_name:
        fields["job"] = job_name
    return NewEvent(stream=stream, maxlen=maxlen, fields=fields)


def append_event(
    redis_client: redis.Redis,
    *,
    message_id: str,
    status: int,
    detail: dict[str, Any],
    job_name: str | None = None,
    stream: str = EVENTS_STREAM,
    maxlen: int = DEFAULT_MAXLEN,
    now: float | None = None,
) -> str:
    """XADD one transition; returns the event id."""
    new = new_event(
        message_id=message_id, status=status, detail=detail, job_name=job_name, stream=stream, maxlen=maxlen, now=now
    )
    with redis_errors():
        fields: dict[Any, Any] = dict(new.fields)
        result = redis_client.xadd(new.stream, fields, maxlen=new.maxlen, approximate=True)
    return text(result)


def append_operator_event(
    redis_client: redis.Redis,
    *,
    target: str,
    action: str,
    by: str,
    detail: dict[str, Any],
    stream: str = EVENTS_STREAM,
    maxlen: int = DEFAULT_MAXLEN,
    now: float | None = None,
) -> str:
    """XADD what an operator did (console actions): no status, so no producer mistakes it
    for a transition of its message."""
    fields: dict[Any, Any] = {
        "id": target,
        "action": action,
        "by": by,
        "detail": json.dumps({"action": action, "by": by, **detail}, separators=(",", ":"), sort_keys=True),
        "ts": int((SYSTEM_CLOCK.time() if now is None else now) * 1000),
    }
    with redis_errors():
        result = redis_client.xadd(stream, fields, maxlen=maxlen, approximate=True)
    return text(result)


def read_events(
    redis_client: redis.Redis,
    *,
    stream: str = EVENTS_STREAM,
    after: str = "0-0",
    count: int = 100,
    block_ms: int | None = None,
) -> list[Event]:
    """Events with ids after `after`, oldest first; with `block_ms`, wait that long for some
    (then `after="$"` means only events that arrive from now on)."""
    with redis_errors():
        if block_ms is None:
            rows = redis_client.xrange(stream, "(" + after, "+", count=count)
        else:
            reply = redis_client.xread({stream: after}, count=count, block=block_ms)
            rows = entries_of(reply)
    return [parse_event(i, f) for i, f in rows or []]


def parse_event(event_id: Any, fields: Any) -> Event:
    """One entry of the events stream as XRANGE / XREVRANGE return it."""
    job = fields.get(b"job")
    try:
        detail = json.loads(fields.get(b"detail", b"{}"))
    except ValueError:  # written by someone else: keep the raw text
        detail = {"raw": text(fields.get(b"detail"))}
    return Event(
        event_id=text(event_id),
        message_id=text(fields.get(b"id", b"")),
        status=int(fields.get(b"status", b"-1")),
        detail=detail if isinstance(detail, dict) else {"value": detail},
        job_name=None if job is None else text(job),
        ts=int(fields.get(b"ts", b"0")),
    )
