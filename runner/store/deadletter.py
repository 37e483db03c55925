"""Dead-letter streams `<stream>:dead`: entries that can never become a Job.

An entry is moved there with the reason, the error (naming the field), the group's own
delivery counter and its original id, and acked in the same Lua step (lua/dead_letter.lua),
so it is neither lost nor left pending to be read again. The same step ends the message
(`Leftovers`, `DeadRecord`): its state record says `dead` with the reason, the error and the
dead entry's id, for KSR_STATE_TTL, and one event (a 99 `DeadLettered`) goes to the events
stream, so `Client.wait`, `ksr jobs show` and event readers see the end; and its place among
the creates that wait (runner.store.waiting) is cleared.

Only a message that never got a Job ends `dead`: no record, or a claim without a Job, or
`dead` already. A record of a Job (a real Job, and what makes a replay a duplicate) or of
another end is left as it is. A `dead` record never makes the id a duplicate: the claim
starts afresh over it (lua/claim.lua), so a replay or a corrected message under the same id
runs. An entry without a usable message id (not JSON, no id, an id that is not one) has no
record to write: only its dead entry tells of it. The CLI lists, shows, replays and purges
them.

A dead entry's fields:

    payload          the original `payload` field, byte for byte
    field:<name>     any other field the original entry carried
    reason           short code (REASONS)
    error            human message naming the field, e.g. "job.gpuNumber: must be 1..4, got 9"
    deliveries       the group's delivery counter when it was dead-lettered
    original_id      the entry id in the original stream
    original_stream  the stream it came from
    dead_at          Unix time in milliseconds
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

from election.clock import SYSTEM_CLOCK
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.events import DEFAULT_MAXLEN as EVENTS_MAXLEN
from runner.store.events import EVENTS_STREAM, new_event
from runner.store.replies import text
from runner.store.streams import DEAD_SUFFIX, Entry

__all__ = [
    "DEAD_ERROR_CODE",
    "REASONS",
    "DeadEntry",
    "DeadRecord",
    "Leftovers",
    "dead_event_detail",
    "dead_letter",
    "dead_stream",
    "get_dead",
    "is_poison",
    "list_dead",
    "purge_dead",
    "replay_dead",
]

log = logging.getLogger(__name__)

REASONS = ("invalid", "policy", "api_rejected", "create_refused", "poison")
DEFAULT_MAXLEN = 100_000
ERROR_MAX_CHARS = 8192  # an apiserver message can be long; the dead letter needs the gist
_EXTRA = b"field:"
DEAD_STATUS = 99  # a dead letter's event reads as the message's end, like a 99
DEAD_ERROR_CODE = "DeadLettered"  # its errorCode


@dataclass(frozen=True)
class DeadEntry:
    dead_id: str
    original_stream: str
    original_id: str
    payload: bytes
    reason: str
    error: str
    deliveries: int
    dead_at: int
    extra_fields: dict[bytes, bytes]


@dataclass(frozen=True)
class Leftovers:
    """What a dead-lettered entry's message has in Redis, settled in the dead letter's step."""

    message_id: str  # "" when the entry carries no usable id: no record to write
    record_key: str  # its state record: becomes `dead` unless it records a Job or another end
    active_key: str
    waiting_index: str = ""  # the set of creates that wait, and this entry's place in it
    waiting_member: str = ""
    waiting_key: str = ""


@dataclass(frozen=True)
class DeadRecord:
    """How the end of a dead-lettered message with an id is kept: its `dead` record expires
    after `ttl_seconds` (KSR_STATE_TTL) and its event goes to `events_stream`."""

    ttl_seconds: int
    events_stream: str = EVENTS_STREAM
    events_maxlen: int = EVENTS_MAXLEN


def dead_event_detail(reason: str, error: str) -> dict[str, Any]:
    """The detail of a dead letter's event: shaped like a 99's, with the reason beside it."""
    return {"error": {"errorCode": DEAD_ERROR_CODE, "message": error}, "reason": reason}


def dead_stream(stream: str, suffix: str = DEAD_SUFFIX) -> str:
    return stream + suffix


def is_poison(deliveries: int, max_deliveries: int) -> bool:
    """True once an entry has been delivered more than `max_deliveries` times.

    `max_deliveries` is the number of attempts allowed; 0 or less disables the check.
    """
    return max_deliveries > 0 and deliveries > max_deliveries


def dead_letter(
    redis_client: redis.Redis,
    entry: Entry,
    *,
    group: str,
    reason: str,
    error: str,
    deliveries: int | None = None,
    stream_suffix: str = DEAD_SUFFIX,
    maxlen: int = DEFAULT_MAXLEN,
    now: float | None = None,
    leftovers: Leftovers | None = None,
    record: DeadRecord | None = None,
) -> str:
    """Move `entry` to `<stream>:dead` and XACK it for `group`, atomically, ending the
    message with it: with `leftovers` naming its id, its state record becomes `dead` (kept as
    `record` says, which is then required) and its event is appended; its place among the
    waiting creates is cleared.

    `deliveries` defaults to the entry's own (group) counter; `now` (Unix seconds) to the
    current time. The dead stream is capped near `maxlen`. Returns the dead entry id.
    """
    now = SYSTEM_CLOCK.time() if now is None else now
    error = error[:ERROR_MAX_CHARS]
    fields: dict[Any, Any] = {
        "payload": entry.fields.get(b"payload", b""),
        "reason": reason,
        "error": error,
        "deliveries": entry.deliveries if deliveries is None else deliveries,
        "original_id": entry.entry_id,
        "original_stream": entry.stream,
        "dead_at": int(now * 1000),
    }
    for name, value in entry.fields.items():
        if name != b"payload":
            fields[_EXTRA + name] = value
    flat = [x for pair in fields.items() for x in pair]
    dead_key = dead_stream(entry.stream, stream_suffix)
    left = leftovers or Leftovers(message_id="", record_key=dead_key, active_key=dead_key)
    event: list[Any] = []
    events_key, events_maxlen, ttl = dead_key, 0, 0  # placeholders: no id, no record, no event
    if left.message_id:
        if record is None:
            raise ValueError("dead_letter: a message id in leftovers needs its DeadRecord (the record's TTL)")
        new = new_event(
            message_id=left.message_id,
            status=DEAD_STATUS,
            detail=dead_event_detail(reason, error),
            stream=record.events_stream,
            maxlen=record.events_maxlen,
            now=now,
        )
        event = [x for pair in new.fields.items() for x in pair]
        events_key, events_maxlen, ttl = record.events_stream, record.events_maxlen, record.ttl_seconds
    with redis_errors():
        dead_id = scripts.load(redis_client, "dead_letter", states=True)(
            keys=[
                dead_key,
                entry.stream,
                left.record_key,
                left.active_key,
                left.waiting_index or dead_key,  # placeholders when there is nothing to clear
                left.waiting_key or dead_key,
                events_key,
            ],
            args=[
                group,
                entry.entry_id,
                maxlen,
                left.message_id,
                left.waiting_member if left.waiting_index else "",
                ttl,
                int(now * 1000),
                reason,
                error,
                events_maxlen,
                len(event),
                *event,
                *flat,
            ],
        )
    log.info(
        "dead-lettered %s %s (%s, %d deliveries): %s",
        entry.stream,
        entry.entry_id,
        reason,
        fields["deliveries"],
        fields["error"],
    )
    return text(dead_id)


def list_dead(
    redis_client: redis.Redis,
    stream: str,
    *,
    count: int = 50,
    start: str = "-",
    stream_suffix: str = DEAD_SUFFIX,
) -> list[DeadEntry]:
    """Up to `count` dead entries of `stream`, oldest first, from `start` (inclusive)."""
    with redis_errors():
        rows = redis_client.xrange(dead_stream(stream, stream_suffix), start, "+", count=count)
    return [_parse(i, f) for i, f in rows or []]


def get_dead(
    redis_client: redis.Redis, stream: str, dead_id: str, *, stream_suffix: str = DEAD_SUFFIX
) -> DeadEntry | None:
    with redis_errors():
        rows = redis_client.xrange(dead_stream(stream, stream_suffix), dead_id, dead_id)
    return _parse(*rows[0]) if rows else None


def replay_dead(
    redis_client: redis.Redis, stream: str, dead_id: str, *, stream_suffix: str = DEAD_SUFFIX
) -> str | None:
    """XADD the original fields back to `stream` and delete the dead entry (one Lua step).

    Returns the new entry id, or None when no such dead entry exists. Whether the entry may
    be replayed at all (still valid? a Job already? a record that may have expired?) is
    runner.pipeline.replay's decision: the pipeline treats a replayed id with a recorded Job as
    a duplicate.
    """
    with redis_errors():
        new_id = scripts.load(redis_client, "replay_dead")(
            keys=[stream, dead_stream(stream, stream_suffix)], args=[dead_id]
        )
    if new_id is None:
        return None
    log.info("replayed dead entry %s of %s as %s", dead_id, stream, text(new_id))
    return text(new_id)


def purge_dead(
    redis_client: redis.Redis,
    stream: str,
    ids: Sequence[str] | Literal["all"],
    *,
    stream_suffix: str = DEAD_SUFFIX,
) -> int:
    """Delete the given dead entries, or all of them; returns how many were removed."""
    key = dead_stream(stream, stream_suffix)
    with redis_errors():
        if ids == "all":
            pipe = redis_client.pipeline(transaction=True)
            pipe.xlen(key)
            pipe.delete(key)
            removed = int(pipe.execute()[0])
        elif not ids:
            return 0
        else:
            removed = int(redis_client.xdel(key, *ids))
    log.info("purged %d dead entries of %s", removed, stream)
    return removed


def _parse(dead_id: Any, fields: Any) -> DeadEntry:
    return DeadEntry(
        dead_id=text(dead_id),
        original_stream=text(fields.get(b"original_stream", b"")),
        original_id=text(fields.get(b"original_id", b"")),
        payload=fields.get(b"payload", b""),
        reason=text(fields.get(b"reason", b"")),
        error=text(fields.get(b"error", b"")),
        deliveries=int(fields.get(b"deliveries", b"0") or 0),
        dead_at=int(fields.get(b"dead_at", b"0") or 0),
        extra_fields={k[len(_EXTRA) :]: v for k, v in fields.items() if k.startswith(_EXTRA)},
    )
