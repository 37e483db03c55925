"""The producer's side in Python: submit a message (now, at a time, or after a delay), look
it up, wait for it to end, cancel it. docs/producer.md shows it in use.

    from runner.client import Client
    client = Client()                                   # settings from the environment
    mid = client.submit(message, delay=30)              # validated here, before the XADD
    client.status(mid).where                            # "scheduled"
    client.wait(mid, timeout=600).state                 # "completed"
    client.cancel(mid)                                  # or raises AlreadyFinished

A message is validated with the runner's own code (schema, and the due time against
KSR_SCHEDULE_MAX_AHEAD), so an invalid one raises InvalidMessage naming the field and never
reaches a stream. `wait` blocks on the events stream (XREAD BLOCK); it never polls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.errors import KsrError
from runner.lifecycle import CallbackStatus, State
from runner.message import parse_message, payload_id
from runner.pipeline.delay import due_time
from runner.settings import Settings
from runner.store.connection import connect
from runner.store.deadletter import DEAD_ERROR_CODE
from runner.store.errors import redis_errors
from runner.store.events import read_events
from runner.store.replication import add_replicated
from runner.store.replies import text
from runner.store.schedule import ScheduledStore
from runner.store.state import StateStore

__all__ = ["AlreadyFinished", "Cancellation", "Client", "Status", "WaitTimeout", "rfc3339"]

FINAL_STATUSES = frozenset(s for s in CallbackStatus if s.final)
UNREAD_SCAN_LIMIT = 10_000  # entries looked through per stream to find an unread message
_BLOCK_SLICE_MS = 5_000  # one XREAD waits at most this long (the socket timeout must outlast it)


class AlreadyFinished(KsrError):
    """Cancel of a message that has ended: nothing was changed."""

    def __init__(self, message_id: str, state: str) -> None:
        self.message_id = message_id
        self.state = state
        super().__init__(f"message {message_id} has already finished ({state}); nothing to cancel")


class WaitTimeout(KsrError):
    def __init__(self, message_id: str, timeout: float, status: Status) -> None:
        self.status = status
        super().__init__(f"message {message_id} did not finish within {timeout:g}s (now {status.where})")


@dataclass(frozen=True)
class Status:
    """Where a message is now. `where`: scheduled | pending | running | finished | unknown."""

    id: str
    where: str
    state: State | None = None  # the state record's state (runner.lifecycle), None without one
    stream: str | None = None
    due: float | None = None  # scheduled: Unix time it is due
    record: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.where == "finished"


@dataclass(frozen=True)
class Cancellation:
    id: str
    stage: str  # scheduled | pending | running (the Job is being deleted by the leader)


def rfc3339(when: datetime | float) -> str:
    """A datetime (aware) or Unix time as RFC 3339 with an offset."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("at: a datetime without a time zone is ambiguous; give tzinfo")
        return when.isoformat()
    return datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")


class Client:
    def __init__(
        self, settings: Settings | None = None, *, redis_client: redis.Redis | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.clock = clock
        s = self.settings
        self.redis = redis_client or connect(s.redis, socket_timeout=_BLOCK_SLICE_MS / 1000 + 5, retries=1)
        self.state = StateStore(
            self.redis,
            ttl_seconds=s.state.ttl_seconds,
            prefix=s.state.key_prefix,
            active_key=s.state.active_key,
            clock=clock,
        )
        self.scheduled = ScheduledStore(self.redis, streams=s.streams.streams, record_prefix=s.state.key_prefix)

    # -- submit ------------------------------------------------------------------------------

    def submit(
        self,
        message: Mapping[str, Any] | str,
        *,
        stream: str | None = None,
        at: datetime | float | None = None,
        delay: float | None = None,
    ) -> str:
        """XADD `message` (a dict or its JSON) to `stream` (default: the default priority
        stream); `at` or `delay` (seconds) set its runAt / delaySeconds. Returns its id."""
        doc = dict(json.loads(message) if isinstance(message, str) else message)
        if at is not None:
            doc["runAt"] = rfc3339(at)
        if delay is not None:
            doc["delaySeconds"] = delay
        s = self.settings
        stream = stream or s.streams.default_stream
        if stream not in s.streams.streams:
            raise KsrError(f"stream: {stream!r} is not one of KSR_STREAMS ({', '.join(s.streams.streams)})")
        payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        parsed = parse_message(payload, max_bytes=s.streams.max_message_bytes)
        now = self.clock.time()
        due_time(parsed, added_at=now, now=now, max_ahead=s.schedule.max_ahead)
        with redis_errors():
            add_replicated(self.redis, stream, [payload], replicas=s.redis.min_replicas, timeout=s.redis.wait_timeout)
        return parsed.id

    # -- status ------------------------------------------------------------------------------

    def status(self, message_id: str) -> Status:
        record = self.state.get(message_id)
        dead = record is not None and record.state is State.DEAD and not record.has_job
        if record is None or dead:
            # A dead letter's record does not make its id a duplicate: the same id sent
            # again (or replayed) after the dead entry, and not claimed yet, is where the
            # message is now, read by the leader or not.
            held = self.scheduled.find(message_id)
            if held is not None:
                return Status(message_id, "scheduled", stream=held.stream, due=held.due)
            stream = self._unread_in(message_id, after=record.entry_id if record is not None and dead else None)
            if record is None or stream:
                return Status(message_id, "pending" if stream else "unknown", stream=stream)
        where = "finished" if record.is_terminal else "running" if record.has_job else "pending"
        return Status(message_id, where, state=record.state, stream=record.get("stream"), record=record)

    def _unread_in(self, message_id: str, *, after: str | None = None) -> str | None:
        """The stream holding `message_id` not yet delivered to the group, or (with `after`,
        an entry id) added after that entry, delivered or not (a bounded scan)."""
        needle = json.dumps(message_id)
        group = self.settings.streams.group
        with redis_errors():
            for stream in self.settings.streams.streams:
                start = "-"
                try:
                    for g in self.redis.xinfo_groups(stream):
                        if text(g.get("name")) == group:
                            start = "(" + text(g.get("last-delivered-id"))
                except redis.ResponseError:  # no stream yet
                    continue
                if after and start != "-" and _entry_key(after) < _entry_key(start[1:]):
                    start = "(" + after
                seen = 0
                while seen < UNREAD_SCAN_LIMIT:
                    rows = self.redis.xrange(stream, start, "+", count=500)
                    if not rows:
                        break
                    for _, fields in rows:
                        payload = text((fields or {}).get(b"payload", b""))
                        if needle in payload and payload_id(payload) == message_id:
                            return stream
                    seen += len(rows)
                    start = "(" + text(rows[-1][0])
        return None

    # -- wait --------------------------------------------------------------------------------

    def wait(self, message_id: str, timeout: float) -> Status:
        """Block until the message ends (callback status 2, 3 or 99 on the events stream;
        a dead letter's event is a 99 too); returns its status, or raises WaitTimeout after
        `timeout` seconds."""
        deadline = self.clock.monotonic() + timeout
        events = self.settings.streams.events_stream
        with redis_errors():
            last = self.redis.xrevrange(events, "+", "-", count=1)
        after = text(last[0][0]) if last else "0-0"
        status = self.status(message_id)  # after noting the position: no end can slip between
        while not status.finished:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise WaitTimeout(message_id, timeout, self.status(message_id))
            block = max(1, min(_BLOCK_SLICE_MS, int(left * 1000)))
            batch = read_events(self.redis, stream=events, after=after, count=500, block_ms=block)
            for event in batch:
                after = event.event_id
                if event.message_id == message_id and event.status in FINAL_STATUSES:
                    return self._ended(message_id, event.status, event.detail)
        return status

    def _ended(self, message_id: str, code: int, detail: Mapping[str, Any]) -> Status:
        """The status once its final event is out: the tracker appends the event just
        before it ends the record, so the state may come from the event."""
        status = self.status(message_id)
        if status.finished:
            return status
        raw = detail.get("error")
        error: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        ends = {"Cancelled": State.CANCELLED, DEAD_ERROR_CODE: State.DEAD}
        state = {CallbackStatus.COMPLETED: State.COMPLETED, CallbackStatus.FAILED: State.FAILED}.get(
            CallbackStatus(code)
        ) or ends.get(str(error.get("errorCode")), State.EXCEPTION)
        return Status(message_id, "finished", state=state, stream=status.stream, record=status.record)

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, message_id: str) -> Cancellation:
        """Cancel wherever it is; the producer gets one 99 `Cancelled`. Raises AlreadyFinished
        (and changes nothing) when it has ended."""
        outcome = self.scheduled.cancel(message_id, now=self.clock.time(), ttl_seconds=self.settings.state.ttl_seconds)
        if outcome.kind == "FINISHED":
            raise AlreadyFinished(message_id, outcome.detail)
        if outcome.kind == "CANCELLED":
            return Cancellation(message_id, outcome.detail)
        return Cancellation(message_id, "running")  # claimed, created or running: the leader ends it

    def close(self) -> None:
        self.redis.close()


def _entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (ms, sequence); (0, 0) when it is not one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
