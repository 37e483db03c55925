"""`recent`: the messages that moved lately, newest first, filtered and paged.

Built from what the deployment keeps anyway: the events stream (`ksr:events`, one entry per
transition: 0 created, 1 started, 2/3/99 the end, a dead letter's 99; capped near
KSR_EVENTS_MAXLEN) orders the messages by their newest event, and each message's state
record (kept KSR_STATE_TTL after its end) gives its state, stream, service and namespace.
So what `recent` can list is bounded by those two: a message whose events were trimmed away
is not listed; one whose record expired is listed from its events alone (state read from
the last event, `recorded` False; the stream, service and namespace filters then cannot
match it). A message with no event yet (claimed, its create waiting, or not read) is not
listed: `find` sees it, and `pending` lists the stream's side. An operator's action (an
event without a status, runner.operate.audit) moves no message: skipped.

Paging: each call reads the events from the newest down, at most `scan_limit` of them, and
skips the messages whose newest event is at or after `cursor` (the previous page's
`next_cursor`), so a message is on one page only even while new events arrive; `complete`
is False when the scan bound stopped the page before it was full or the stream's end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from runner.inspect.layout import Layout
from runner.lifecycle import CallbackStatus, State
from runner.store.deadletter import DEAD_ERROR_CODE
from runner.store.errors import redis_errors
from runner.store.events import Event, parse_event
from runner.store.record import StateRecord
from runner.store.replies import text
from runner.store.streams import id_key

__all__ = ["Recent", "RecentPage", "recent"]

_PAGE = 500
DEFAULT_SCAN_LIMIT = 20_000  # events read per call, at most


@dataclass(frozen=True)
class Recent:
    message_id: str
    at_ms: int  # its newest event (Unix ms)
    event_id: str  # that event's id in the events stream
    status: int  # that event's callback status
    state: State | None  # the record's state, or read from the last event when it has none
    recorded: bool  # a state record exists
    stream: str | None = None
    service: str | None = None
    namespace: str | None = None
    job_name: str | None = None
    error_code: str | None = None  # the last event's errorCode, if it carries one


@dataclass(frozen=True)
class RecentPage:
    items: list[Recent]
    next_cursor: str | None  # pass as `cursor` for the next, older page; None: nothing older
    scanned: int  # events read
    complete: bool  # False: `scan_limit` stopped the scan (older matches may exist)


def recent(
    conn: redis.Redis,
    *,
    layout: Layout,
    state: State | str | None = None,
    stream: str | None = None,
    service: str | None = None,
    namespace: str | None = None,
    since_ms: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
) -> RecentPage:
    """Up to `limit` messages, newest first, matching every filter given (`since_ms`: with an
    event at or after it). ValueError for a `state` that is not one of runner.lifecycle's."""
    wanted = None if state is None else State(state)
    if limit < 1:
        raise ValueError(f"limit: must be at least 1, got {limit}")
    seen: set[str] = set()
    items: list[Recent] = []
    scanned = 0
    complete = True  # the scan reached the end of what matters (the stream's start, or `since_ms`)
    full = False  # more than `limit` matched, or the page filled before the scan ended
    with redis_errors():
        batch: list[Event] = []
        for event in _newest_first(conn, layout.events_stream, scan_limit):
            scanned += 1
            if since_ms is not None and event.ts < since_ms:
                break
            if event.message_id in seen or not event.message_id or event.status < 0:
                continue  # an operator's action (runner.operate.audit) is no move of a message
            seen.add(event.message_id)
            if cursor is not None and id_key(event.event_id) >= id_key(cursor):
                continue  # listed on an earlier page (its newest event is that new)
            batch.append(event)
            if len(batch) >= _PAGE:
                items += _matching(conn, layout, batch, wanted, stream, service, namespace)
                batch = []
                if len(items) >= limit:
                    full = True
                    break
        else:
            complete = scanned < scan_limit
        items += _matching(conn, layout, batch, wanted, stream, service, namespace)
    page = items[:limit]
    more = full or len(items) > limit or not complete
    return RecentPage(page, page[-1].event_id if page and more else None, scanned, complete)


def _newest_first(conn: redis.Redis, key: str, limit: int) -> Iterator[Event]:
    end = "+"
    seen = 0
    while seen < limit:
        rows = conn.xrevrange(key, end, "-", count=min(_PAGE, limit - seen))
        if not rows:
            return
        for entry_id, fields in rows:
            yield parse_event(entry_id, fields)
        seen += len(rows)
        end = "(" + text(rows[-1][0])


def _matching(
    conn: redis.Redis,
    layout: Layout,
    events: list[Event],
    state: State | None,
    stream: str | None,
    service: str | None,
    namespace: str | None,
) -> list[Recent]:
    if not events:
        return []
    pipe = conn.pipeline(transaction=False)
    for event in events:
        pipe.hgetall(layout.record_key(event.message_id))
    out = []
    for event, raw in zip(events, pipe.execute()):
        record = StateRecord.from_reply(raw)
        item = _item(event, record)
        if state is not None and item.state is not state:
            continue
        if stream is not None and item.stream != stream:
            continue
        if service is not None and item.service != service:
            continue
        if namespace is not None and item.namespace != namespace:
            continue
        out.append(item)
    return out


def _item(event: Event, record: StateRecord) -> Recent:
    error: Any = event.detail.get("error")
    code = str(error.get("errorCode")) if isinstance(error, dict) and error.get("errorCode") else None
    return Recent(
        message_id=event.message_id,
        at_ms=event.ts,
        event_id=event.event_id,
        status=event.status,
        state=record.state if record else _state_of(event.status, code),
        recorded=bool(record),
        stream=record.stream or None,
        service=record.get("service") or None,
        namespace=record.namespace or None,
        job_name=record.job_name or event.job_name or None,
        error_code=code,
    )


def _state_of(status: int, error_code: str | None) -> State | None:
    """The state a message's last event implies, for one whose record is gone."""
    if status == CallbackStatus.EXCEPTION:
        return {"Cancelled": State.CANCELLED, DEAD_ERROR_CODE: State.DEAD}.get(error_code or "", State.EXCEPTION)
    return {
        CallbackStatus.CREATED: State.CREATED,
        CallbackStatus.STARTED: State.RUNNING,
        CallbackStatus.COMPLETED: State.COMPLETED,
        CallbackStatus.FAILED: State.FAILED,
    }.get(status)  # type: ignore[call-overload]
