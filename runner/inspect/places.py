"""`find`: every place a message id can be in Redis, each with what that place says of it.

The places, in the order a message passes them:

    unread     an entry in its stream the group has not been given yet (after the group's
               last-delivered id; the whole stream when the group does not exist)
    scheduled  held until due in `<stream>:scheduled` (runAt / delaySeconds)
    pending    an entry delivered to a consumer and not acked (the group's PEL): holder, idle
    waiting    its create refused for now, held in the waiting set (runner.store.waiting)
    claimed    a record `claimed`: read, no Job yet
    running    a record `created` or `running`: the Job exists
    finished   a record in a terminal state (completed, failed, exception, cancelled, dead)
    dead       an entry of `<stream>:dead`, with its reason

A message can be in several at once (a replayed dead letter is `unread` again while its
`finished: dead` record stays; an id XADDed twice has two entries). Redis has no index from
a message id to its entries, so the streams are scanned, and every scan is bounded: at
most `Bounds.unread` entries per stream after the group's last-delivered id, the first
`Bounds.pending` entries of each PEL, the newest `Bounds.dead` entries of each dead stream.
An entry beyond those is not found by the scan; the record's own pointers (its entry id,
its dead entry id) are always looked at, so a message with a record is found wherever its
record says it is.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from runner.inspect.layout import Layout
from runner.lifecycle import LIVE_STATES, State
from runner.message import payload_id
from runner.store.errors import redis_errors
from runner.store.record import Field, StateRecord
from runner.store.replies import text, text_fields
from runner.store.schedule import payloads_key, scheduled_key
from runner.store.streams import entry_time_ms

__all__ = ["Bounds", "Place", "Sighting", "find", "read_record", "where_of"]

_PAGE = 500  # entries per XRANGE while scanning


class Place(enum.StrEnum):
    UNREAD = "unread"
    SCHEDULED = "scheduled"
    PENDING = "pending"
    WAITING = "waiting"
    CLAIMED = "claimed"
    RUNNING = "running"
    FINISHED = "finished"
    DEAD = "dead"


@dataclass(frozen=True)
class Bounds:
    """How far `find` scans for entries that no record points at (entries per stream)."""

    unread: int = 10_000
    pending: int = 1_000
    dead: int = 2_000


@dataclass(frozen=True)
class Sighting:
    """The message seen in one place. Fields a place does not have are None. Times are Unix
    ms; text is as Redis holds it (unescaped: escaping is the renderer's)."""

    place: Place
    stream: str | None = None
    entry_id: str | None = None  # unread, pending, waiting: the stream entry; dead: the dead entry
    state: State | None = None  # claimed, running, finished: the record's state
    since_ms: int | None = None  # when it got here: entry time, claimed/created/started/finished at, dead_at
    due_ms: int | None = None  # scheduled: due; waiting: the next try
    consumer: str | None = None  # pending: the consumer holding it
    idle_ms: int | None = None  # pending: since its last delivery
    deliveries: int | None = None  # pending: the group's counter; dead: when dead-lettered; waiting: tries
    reason: str | None = None  # dead: the reason code; finished: the errorCode, if any
    error: str | None = None  # dead: the error; waiting: the apiserver's last words; finished: the message
    original_id: str | None = None  # dead: the entry id it had in its stream
    job_name: str | None = None
    namespace: str | None = None
    pod_name: str | None = None
    payload: bytes | None = None  # the message as this place holds it, when it holds one


def where_of(sightings: list[Sighting]) -> tuple[str, Sighting | None]:
    """scheduled | pending | running | finished | dead | unknown, and the sighting it says.
    A live record wins; then a copy waiting to be read; then the end; a dead record does not
    make the id a duplicate, so a copy sent again after it is where the message is now."""
    by = {s.place: s for s in sightings}
    if Place.RUNNING in by:
        return "running", by[Place.RUNNING]
    finished = by.get(Place.FINISHED)
    if finished is not None and finished.state is not State.DEAD:
        return "finished", finished
    for place, where in (
        (Place.CLAIMED, "pending"),
        (Place.WAITING, "pending"),
        (Place.PENDING, "pending"),
        (Place.SCHEDULED, "scheduled"),
        (Place.UNREAD, "pending"),
    ):
        if place in by:
            return where, by[place]
    if finished is not None:
        return "finished", finished
    if Place.DEAD in by:
        return "dead", by[Place.DEAD]
    return "unknown", None


def read_record(conn: redis.Redis, message_id: str, layout: Layout) -> StateRecord | None:
    with redis_errors():
        record = StateRecord.from_reply(conn.hgetall(layout.record_key(message_id)))
    return record or None


def find(
    conn: redis.Redis, message_id: str, *, layout: Layout, bounds: Bounds = Bounds(), record: StateRecord | None = None
) -> list[Sighting]:
    """Every place `message_id` is, in the order of Place (then by time); [] when none.
    `record` saves reading it again when the caller has it."""
    record = record if record is not None else read_record(conn, message_id, layout)
    out: list[Sighting] = []
    with redis_errors():
        for stream in layout.streams:
            out += _unread(conn, stream, message_id, layout, bounds)
            out += _scheduled(conn, stream, message_id)
            out += _pending(conn, stream, message_id, layout, bounds, record)
            out += _dead(conn, stream, message_id, layout, bounds, record)
        if record is not None:
            out += _waiting(conn, message_id, layout, record)
            out.append(_recorded(conn, record))
    order = list(Place)
    return sorted(out, key=lambda s: (order.index(s.place), s.since_ms or 0, s.entry_id or ""))


# -- the streams ------------------------------------------------------------------------------


def _group_of(conn: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """Our group's XINFO GROUPS row; None when the stream or the group does not exist."""
    try:
        groups = conn.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        return None
    return next(({text(k): v for k, v in g.items()} for g in groups if text(g.get("name")) == group), None)


def _matches(fields: Any, message_id: str, needle: str) -> bool:
    payload = text((fields or {}).get(b"payload", b""))
    return needle in payload and payload_id(payload) == message_id


def _scan(conn: redis.Redis, key: str, start: str, limit: int) -> Iterator[tuple[str, Any]]:
    """Entries of `key` from `start` (XRANGE syntax), oldest first, at most `limit`."""
    seen = 0
    while seen < limit:
        rows = conn.xrange(key, start, "+", count=min(_PAGE, limit - seen))
        if not rows:
            return
        for entry_id, fields in rows:
            yield text(entry_id), fields
        seen += len(rows)
        start = "(" + text(rows[-1][0])


def _unread(conn: redis.Redis, stream: str, message_id: str, layout: Layout, bounds: Bounds) -> list[Sighting]:
    group = _group_of(conn, stream, layout.group)
    if group is None and not conn.exists(stream):
        return []
    start = "(" + text(group["last-delivered-id"]) if group else "-"
    needle = json.dumps(message_id)
    return [
        Sighting(
            Place.UNREAD,
            stream=stream,
            entry_id=entry_id,
            since_ms=entry_time_ms(entry_id),
            payload=_payload(fields),
        )
        for entry_id, fields in _scan(conn, stream, start, bounds.unread)
        if _matches(fields, message_id, needle)
    ]


def _scheduled(conn: redis.Redis, stream: str, message_id: str) -> list[Sighting]:
    due = conn.zscore(scheduled_key(stream), message_id)
    if due is None:
        return []
    payload = conn.hget(payloads_key(stream), message_id)
    return [Sighting(Place.SCHEDULED, stream=stream, due_ms=int(due), payload=_payload(payload))]


def _pending(
    conn: redis.Redis, stream: str, message_id: str, layout: Layout, bounds: Bounds, record: StateRecord | None
) -> list[Sighting]:
    """PEL entries carrying the id: the record's own entry, and the first `bounds.pending`."""
    try:
        rows = conn.xpending_range(stream, layout.group, min="-", max="+", count=bounds.pending)
        if record is not None and record.stream == stream and record.entry_id:
            rows = list(rows) + list(
                conn.xpending_range(stream, layout.group, min=record.entry_id, max=record.entry_id, count=1)
            )
    except redis.ResponseError:  # no stream or no group: nothing pending
        return []
    held = {text(r["message_id"]): r for r in rows}
    if not held:
        return []
    pipe = conn.pipeline(transaction=False)
    for entry_id in held:
        pipe.xrange(stream, entry_id, entry_id)
    needle = json.dumps(message_id)
    out = []
    for (entry_id, row), found in zip(held.items(), pipe.execute()):
        fields: Any = found[0][1] if found else {}
        if not _matches(fields, message_id, needle):
            continue
        out.append(
            Sighting(
                Place.PENDING,
                stream=stream,
                entry_id=entry_id,
                since_ms=entry_time_ms(entry_id),
                consumer=text(row["consumer"]),
                idle_ms=int(row["time_since_delivered"]),
                deliveries=int(row["times_delivered"]),
                payload=_payload(fields),
            )
        )
    return out


def _dead(
    conn: redis.Redis, stream: str, message_id: str, layout: Layout, bounds: Bounds, record: StateRecord | None
) -> list[Sighting]:
    """Dead entries carrying the id: the newest `bounds.dead`, and the one the record names."""
    key = layout.dead_stream(stream)
    needle = json.dumps(message_id)
    rows: dict[str, Any] = {text(i): f for i, f in conn.xrevrange(key, "+", "-", count=bounds.dead) or []}
    dead_id = record.get(Field.DEAD_ID) if record is not None and record.stream == stream else None
    if dead_id and dead_id not in rows:
        rows.update({text(i): f for i, f in conn.xrange(key, dead_id, dead_id) or []})
    out = []
    for entry_id, fields in rows.items():
        if not _matches(fields, message_id, needle):
            continue
        got = text_fields({k: v for k, v in (fields or {}).items() if k != b"payload"})
        out.append(
            Sighting(
                Place.DEAD,
                stream=stream,
                entry_id=entry_id,
                since_ms=_int(got.get("dead_at")) or entry_time_ms(entry_id),
                deliveries=_int(got.get("deliveries")),
                reason=got.get("reason") or None,
                error=got.get("error") or None,
                original_id=got.get("original_id") or None,
                payload=_payload(fields),
            )
        )
    return out


# -- the record and what hangs on it ----------------------------------------------------------


def _waiting(conn: redis.Redis, message_id: str, layout: Layout, record: StateRecord) -> list[Sighting]:
    if record.state is not State.CLAIMED or not record.entry_id:
        return []
    member = f"{record.stream}/{record.entry_id}"
    score = conn.zscore(layout.waiting_index, member)
    if score is None:
        return []
    raw: Any = conn.hgetall(f"{layout.waiting_index}:{member}")
    held = text_fields(raw)
    payload = _payload(raw.get(b"f:payload"))
    return [
        Sighting(
            Place.WAITING,
            stream=record.stream,
            entry_id=record.entry_id,
            since_ms=_int(held.get("since")),
            due_ms=int(float(score) * 1000),
            deliveries=_int(held.get("tries")),
            error=held.get("error") or None,
            payload=payload,
        )
    ]


def _recorded(conn: redis.Redis, record: StateRecord) -> Sighting:
    state = record.state
    place = Place.FINISHED
    since = record.get(Field.FINISHED_AT)
    if state is State.CLAIMED:
        place, since = Place.CLAIMED, record.get(Field.CLAIMED_AT)
    elif state in LIVE_STATES:
        place = Place.RUNNING
        since = str(record.started_at_ms or "") if state is State.RUNNING else record.get(Field.CREATED_AT)
    error: dict[str, Any] = {}
    for status in reversed(record.callbacks()):
        raw = record.callback_detail(status).get("error")
        if isinstance(raw, dict):
            error = raw
            break
    payload = None
    if record.stream and record.entry_id:
        found = conn.xrange(record.stream, record.entry_id, record.entry_id)
        payload = _payload(found[0][1]) if found else None
    return Sighting(
        place,
        stream=record.stream or None,
        entry_id=record.entry_id or None,
        state=state,
        since_ms=_int(since),
        reason=(record.get(Field.DEAD_REASON) or str(error.get("errorCode") or "")) or None,
        error=(record.get(Field.DEAD_ERROR) or str(error.get("message") or "")) or None,
        job_name=record.job_name or None,
        namespace=record.namespace or None,
        pod_name=record.pod_name or None,
        payload=payload,
    )


def _payload(fields: Any) -> bytes | None:
    """An entry's (or hash's) payload as bytes; None when it has none."""
    value = (fields or {}).get(b"payload") if isinstance(fields, dict) or fields is None else fields
    if value is None:
        return None
    return bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
