"""The producer's side: submit a message (now, at a time, or after a delay), look it up, wait
for it to end, cancel it. docs/producer.md shows it in use.

    from ksr_client import Client
    client = Client()                                   # Config.from_env()
    mid = client.submit(message, delay=30)
    client.status(mid).where                            # "scheduled"
    client.wait(mid, timeout=600).state                 # "completed"
    client.cancel(mid)                                  # or raises AlreadyFinished

`wait` blocks on the events stream (XREAD BLOCK); it never polls. Alone, `submit` checks
only what it must to name the message (a JSON object with an `id`, within the size limit):
the runner validates the rest and dead-letters what it refuses, which `wait` reports as
state `dead` with the reason in `status.record["dead_reason"]`. With the runner installed,
`runner.client.Client` validates with the runner's own code before the XADD.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis

from ksr_client import _contract as contract
from ksr_client.config import Config
from ksr_client.entries import entries_of, payload_id, text

__all__ = [
    "AlreadyFinished",
    "Cancellation",
    "Client",
    "ClientError",
    "InvalidMessage",
    "Status",
    "UnknownStream",
    "WaitTimeout",
    "rfc3339",
]

UNREAD_SCAN_LIMIT = 10_000  # entries looked through per stream to find an unread message
BLOCK_SLICE_MS = 5_000  # one XREAD waits at most this long (the socket timeout must outlast it)


class ClientError(Exception):
    """Root of the errors this library raises on purpose."""


class InvalidMessage(ClientError, ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class UnknownStream(ClientError, ValueError):
    def __init__(self, stream: str, streams: tuple[str, ...]) -> None:
        super().__init__(f"stream: {stream!r} is not one of KSR_STREAMS ({', '.join(streams)})")


class AlreadyFinished(ClientError):
    """Cancel of a message that has ended: nothing was changed."""

    def __init__(self, message_id: str, state: str) -> None:
        self.message_id = message_id
        self.state = state
        super().__init__(f"message {message_id} has already finished ({state}); nothing to cancel")


class WaitTimeout(ClientError):
    def __init__(self, message_id: str, timeout: float, status: Status) -> None:
        self.status = status
        super().__init__(f"message {message_id} did not finish within {timeout:g}s (now {status.where})")


class Clock(Protocol):
    def time(self) -> float: ...  # Unix time, for what Redis and the runner read

    def monotonic(self) -> float: ...  # for deadlines


class _SystemClock:
    def time(self) -> float:
        return time.time()  # noqa: TID251 - the library's own default clock

    def monotonic(self) -> float:
        return time.monotonic()  # noqa: TID251


@dataclass(frozen=True)
class Status:
    """Where a message is now. `where`: scheduled | pending | running | finished | unknown;
    `state` the runner's (completed, failed, exception, cancelled, dead, or claimed, created,
    running), None without a record."""

    id: str
    where: str
    state: str | None = None
    stream: str | None = None
    due: float | None = None  # scheduled: Unix time it is due
    record: Mapping[str, str] = field(default_factory=dict)  # the state record's fields

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
        self,
        config: Config | None = None,
        *,
        redis_client: redis.Redis | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or Config.from_env()
        self.clock: Clock = clock or _SystemClock()
        self.redis = redis_client or redis.Redis.from_url(
            self.config.redis_url, socket_timeout=BLOCK_SLICE_MS / 1000 + 5
        )
        self._cancel = self.redis.register_script(contract.CANCEL_LUA)

    # -- hooks (runner.client puts the runner's validation and replication here) -------------

    def check(self, payload: str) -> str:
        """The id of the message in `payload`, or InvalidMessage naming the field."""
        size = len(payload.encode("utf-8", "surrogatepass"))
        if size > self.config.max_message_bytes:
            raise InvalidMessage("payload", f"larger than {self.config.max_message_bytes} bytes ({size})")
        message_id = json.loads(payload).get("id")
        if not isinstance(message_id, str) or not message_id:
            raise InvalidMessage("id", "required: a non-empty string")
        return message_id

    def add(self, stream: str, payload: str) -> None:
        self.redis.xadd(stream, {"payload": payload})

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
        stream = stream or self.config.default_stream
        if stream not in self.config.streams:
            raise UnknownStream(stream, self.config.streams)
        payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        message_id = self.check(payload)
        self.add(stream, payload)
        return message_id

    # -- status ------------------------------------------------------------------------------

    def record(self, message_id: str) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.redis.hgetall(self.config.key_prefix + message_id).items()}

    def status(self, message_id: str) -> Status:
        record = self.record(message_id)
        state = record.get(contract.FIELD_STATE) or None
        has_job = bool(record.get(contract.FIELD_JOB_NAME))
        dead = state == contract.STATE_DEAD and not has_job
        if not record or dead:
            # A dead letter's record does not make its id a duplicate: the same id sent
            # again (or replayed) after the dead entry, and not claimed yet, is where the
            # message is now, read by the leader or not.
            held = self._scheduled(message_id)
            if held is not None:
                return Status(message_id, "scheduled", stream=held[0], due=held[1])
            stream = self._unread_in(message_id, after=record.get(contract.FIELD_ENTRY_ID) if dead else None)
            if not record or stream:
                return Status(message_id, "pending" if stream else "unknown", stream=stream)
        where = "finished" if state in contract.TERMINAL_STATES else "running" if has_job else "pending"
        return Status(message_id, where, state=state, stream=record.get(contract.FIELD_STREAM), record=record)

    def _scheduled(self, message_id: str) -> tuple[str, float] | None:
        for stream in self.config.streams:
            due = self.redis.zscore(stream + contract.SCHEDULED_SUFFIX, message_id)
            if due is not None:
                return stream, due / 1000.0
        return None

    def _unread_in(self, message_id: str, *, after: str | None = None) -> str | None:
        """The stream holding `message_id` not yet delivered to the group, or (with `after`,
        an entry id) added after that entry, delivered or not (a bounded scan)."""
        needle = json.dumps(message_id)
        for stream in self.config.streams:
            start = "-"
            try:
                for g in self.redis.xinfo_groups(stream):
                    if text(g.get("name")) == self.config.group:
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
        """Block until the message ends (event status 2, 3 or 99 on the events stream; a
        dead letter's event is a 99 too); returns its status, or raises WaitTimeout after
        `timeout` seconds."""
        deadline = self.clock.monotonic() + timeout
        events = self.config.events_stream
        last = self.redis.xrevrange(events, "+", "-", count=1)
        after = text(last[0][0]) if last else "0-0"
        status = self.status(message_id)  # after noting the position: no end can slip between
        while not status.finished:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise WaitTimeout(message_id, timeout, self.status(message_id))
            block = max(1, min(BLOCK_SLICE_MS, int(left * 1000)))
            reply = self.redis.xread({events: after}, count=500, block=block)
            for event_id, fields in entries_of(reply):
                after = text(event_id)
                code = int(fields.get(b"status", b"-1"))
                if text(fields.get(b"id", b"")) == message_id and code in contract.FINAL_STATUSES:
                    return self._ended(message_id, code, _detail(fields))
        return status

    def _ended(self, message_id: str, code: int, detail: Mapping[str, Any]) -> Status:
        """The status once its final event is out: the tracker appends the event just
        before it ends the record, so the state may come from the event."""
        status = self.status(message_id)
        if status.finished:
            return status
        raw = detail.get("error")
        error_code = str(raw.get("errorCode")) if isinstance(raw, dict) else ""
        state = contract.STATUS_STATES.get(code) or contract.ERROR_CODE_STATES.get(error_code, contract.STATE_EXCEPTION)
        return Status(message_id, "finished", state=state, stream=status.stream, record=status.record)

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, message_id: str) -> Cancellation:
        """Cancel wherever it is; the producer gets one 99 `Cancelled`. Raises AlreadyFinished
        (and changes nothing) when it has ended."""
        keys = [self.config.key_prefix + message_id, contract.CANCELS_KEY]
        for stream in self.config.streams:
            keys += [stream + contract.SCHEDULED_SUFFIX, stream + contract.PAYLOADS_SUFFIX]
        now_ms = int(self.clock.time() * 1000)
        kind, detail = (
            text(part)
            for part in self._cancel(keys=keys, args=[message_id, now_ms, self.config.state_ttl, *self.config.streams])
        )
        if kind == "FINISHED":
            raise AlreadyFinished(message_id, detail)
        if kind == "CANCELLED":
            return Cancellation(message_id, detail)
        return Cancellation(message_id, "running")  # claimed, created or running: the leader ends it

    def close(self) -> None:
        self.redis.close()


def _detail(fields: Mapping[bytes, Any]) -> dict[str, Any]:
    try:
        detail = json.loads(fields.get(b"detail", b"{}"))
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


def _entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (ms, sequence); (0, 0) when it is not one."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
