"""`timeline`: what happened to one message, in order, in Unix milliseconds.

Each moment comes from what Redis keeps, never from a guess:

    added            a stream entry's id (the XADD's ms): every entry `find` saw, the record's
                     own, and a dead letter's original
    read             a PEL entry's last delivery (Redis TIME minus its idle time); an entry
                     that was acked keeps no delivery time: its claim is the read
    due              a held message's due time (it may lie ahead)
    claimed          the record's claimed_at
    waiting          the first refusal of its create (the waiting set's `since`), with tries;
                     its next try is `due` of that place
    job_created      the record's created_at
    pod_started      the record's started_at
    cancel_requested, cancelled, ended (finished_at, with the state), dead_lettered (dead_at)
    callback_owed    a callback marked (cb_<s>): owed from then
    callback_attempt one webhook attempt (cbl_<s>, runner.store.record.CallbackAttempt): HTTP
                     status, duration, outcome, next retry
    callback_done    its final outcome when no attempt note tells it (a 410 seen before,
                     expired, or delivered by a runner that kept no notes)

Moments at the same ms keep the lifecycle's order (a Job is created before its pod starts).
The record's fields are printed by `ksr jobs show` through this list, so its order is the
order of the times, not of the fields (the out-of-order `finished_at` before `started_at`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import redis

from runner.inspect.layout import Layout
from runner.inspect.places import Bounds, Place, Sighting, find, read_record
from runner.store.errors import redis_errors
from runner.store.record import Field, StateRecord
from runner.store.streams import entry_time_ms

__all__ = ["Moment", "MomentKind", "timeline"]


class MomentKind(enum.StrEnum):
    ADDED = "added"
    READ = "read"
    DUE = "due"
    CLAIMED = "claimed"
    WAITING = "waiting"
    JOB_CREATED = "job_created"
    POD_STARTED = "pod_started"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLED = "cancelled"
    ENDED = "ended"
    DEAD_LETTERED = "dead_lettered"
    CALLBACK_OWED = "callback_owed"
    CALLBACK_ATTEMPT = "callback_attempt"
    CALLBACK_DONE = "callback_done"


_RANK = {kind: n for n, kind in enumerate(MomentKind)}


@dataclass(frozen=True)
class Moment:
    """One thing that happened, at `at_ms` (Unix ms). `detail` is plain text (unescaped).
    The callback fields are set on callback moments only."""

    kind: MomentKind
    at_ms: int
    stream: str | None = None
    entry_id: str | None = None
    detail: str = ""
    callback: int | None = None  # the callback status (0, 1, 2, 3, 99)
    attempt: int | None = None
    http_status: int | None = None  # None: no HTTP answer (refused, timed out, unreachable)
    duration_ms: int | None = None
    outcome: str | None = None  # delivered | retry | gone | failed | expired
    next_retry_ms: int | None = None


def timeline(
    conn: redis.Redis,
    message_id: str,
    *,
    layout: Layout,
    bounds: Bounds = Bounds(),
    sightings: list[Sighting] | None = None,
    record: StateRecord | None = None,
) -> list[Moment]:
    """The message's moments, oldest first. `sightings` and `record` (from `find` and
    `read_record`) save reading them again when the caller has them."""
    with redis_errors():
        if record is None:
            record = read_record(conn, message_id, layout)
        if sightings is None:
            sightings = find(conn, message_id, layout=layout, bounds=bounds, record=record)
        now_ms = _redis_ms(conn) if any(s.place is Place.PENDING for s in sightings) else 0
    moments: list[Moment] = []
    added: set[tuple[str, str]] = set()

    def add_entry(stream: str | None, entry_id: str | None) -> None:
        at = entry_time_ms(entry_id or "")
        if stream and entry_id and at is not None and (stream, entry_id) not in added:
            added.add((stream, entry_id))
            moments.append(Moment(MomentKind.ADDED, at, stream=stream, entry_id=entry_id))

    for s in sightings:
        if s.place in (Place.UNREAD, Place.PENDING, Place.WAITING):
            add_entry(s.stream, s.entry_id)
        if s.place is Place.PENDING and s.idle_ms is not None:
            detail = f"by {s.consumer}, delivery {s.deliveries}"
            moments.append(Moment(MomentKind.READ, now_ms - s.idle_ms, s.stream, s.entry_id, detail))
        elif s.place is Place.SCHEDULED and s.due_ms is not None:
            moments.append(Moment(MomentKind.DUE, s.due_ms, stream=s.stream, detail="held until due"))
        elif s.place is Place.WAITING and s.since_ms is not None:
            detail = f"create refused, {s.deliveries or 0} tries: {s.error or ''}".rstrip(": ")
            moments.append(Moment(MomentKind.WAITING, s.since_ms, s.stream, s.entry_id, detail))
        elif s.place is Place.DEAD:
            add_entry(s.stream, s.original_id)
            if s.since_ms is not None:
                detail = f"{s.reason or 'dead'}: {s.error or ''}".rstrip(": ")
                moments.append(Moment(MomentKind.DEAD_LETTERED, s.since_ms, s.stream, s.entry_id, detail))
    if record is not None:
        add_entry(record.stream, record.entry_id)
        moments += _record_moments(record)
    return sorted(moments, key=lambda m: (m.at_ms, _RANK[m.kind], m.callback or 0, m.attempt or 0))


def _record_moments(record: StateRecord) -> list[Moment]:
    out: list[Moment] = []

    def at(kind: MomentKind, ms: int | None, detail: str = "") -> None:
        if ms:
            out.append(Moment(kind, ms, stream=record.stream or None, detail=detail))

    at(MomentKind.CLAIMED, record.claimed_at_ms)
    at(MomentKind.JOB_CREATED, record.created_at_ms, record.job_name)
    at(MomentKind.POD_STARTED, record.started_at_ms, record.pod_name)
    at(MomentKind.CANCEL_REQUESTED, _ms(record.get("cancel_requested")))
    at(MomentKind.CANCELLED, _ms(record.get("cancelled_at")), record.get("cancel_stage", ""))
    if record.is_terminal and record.state is not None:
        at(MomentKind.ENDED, _ms(record.get(Field.FINISHED_AT)), record.state.value)
    webhook = record.webhook
    for status in record.callbacks():
        code = int(status)
        marked = _ms(record.get(Field.marked(code)))
        if marked:
            what = "owed to the webhook" if webhook else "no webhook: an event only"
            out.append(Moment(MomentKind.CALLBACK_OWED, marked, detail=what, callback=code))
        notes = record.callback_attempt_log(code)
        for note in notes:
            out.append(
                Moment(
                    MomentKind.CALLBACK_ATTEMPT,
                    note.at_ms,
                    detail=note.detail,
                    callback=code,
                    attempt=note.number,
                    http_status=note.http_status,
                    duration_ms=note.duration_ms,
                    outcome=note.outcome,
                    next_retry_ms=note.next_retry_ms,
                )
            )
        outcome = record.callback_outcome(code)
        noted = notes[-1].outcome if notes else None
        if outcome and outcome != noted:
            # No time is kept for an outcome reached without a new attempt: it is shown at
            # the last thing known of the callback.
            last = max([marked or 0, *(n.at_ms + n.duration_ms for n in notes)])
            unnoted = record.callback_attempts(code) - len(notes)
            detail = f"{unnoted} attempts not noted" if unnoted > 0 and not notes else ""
            out.append(Moment(MomentKind.CALLBACK_DONE, last, detail=detail, callback=code, outcome=outcome))
    return out


def _ms(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _redis_ms(conn: redis.Redis) -> int:
    seconds, micros = conn.time()
    return int(seconds) * 1000 + int(micros) // 1000
