"""What each console page shows, read from Redis through runner.inspect (any replica sees
the whole deployment). Nothing here writes, except that reading the heartbeats drops the
index entries of replicas whose heartbeat expired. Text stays as Redis holds it: escaping is
the templates' (autoescape), so a hostile id is data here."""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from probes.console.masking import masked_payload
from runner.durations import format_age
from runner.inspect import (
    Layout,
    Moment,
    MomentKind,
    PendingEntry,
    Place,
    Sighting,
    backlog,
    find,
    iter_dead,
    pending,
    read_record,
    recent,
    timeline,
    where_of,
)
from runner.lifecycle import RECORD_STATES, TERMINAL_STATES, State
from runner.operate import may_redeliver
from runner.schedules.config import Schedule
from runner.schedules.overview import iso, scheduling_overview
from runner.settings import Settings
from runner.store.deadletter import DeadEntry
from runner.store.presence import Heartbeat, PresenceKeys, read_heartbeats, read_throughput
from runner.store.record import StateRecord
from runner.store.replies import text

__all__ = [
    "DEAD_SCAN_LIMIT",
    "FAILURE_SCAN_EVENTS",
    "SINCE_CHOICES",
    "STATE_CHOICES",
    "MessageDetail",
    "dead_entries",
    "dead_groups",
    "failure_groups",
    "message_detail",
    "message_list",
    "ms_time",
    "overview",
    "pending_rows",
    "schedules_view",
]

DEAD_SCAN_LIMIT = 10_000  # dead letters read per stream for the groups; more are counted, not grouped
FAILURE_SCAN_EVENTS = 5_000  # the newest events grouped by error code
PENDING_LIMIT = 200
PAGE_SIZE = 50
SINCE_CHOICES = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
STATE_CHOICES = tuple(sorted(s.value for s in RECORD_STATES))
CANCELLABLE = ("scheduled", "pending", "running")


def ms_time(at_ms: int | None) -> str | None:
    """UTC, to the millisecond: 2026-12-07T16:20:01.123Z."""
    if at_ms is None:
        return None
    moment = _dt.datetime.fromtimestamp(at_ms / 1000, _dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def _ago(now: float, then: float | None) -> str | None:
    return None if then is None else format_age(max(0.0, now - then))


def _replica_row(beat: Heartbeat, now: float) -> dict[str, Any]:
    return {
        "identity": beat.identity,
        "version": beat.version,
        "started": iso(beat.started),
        "up": _ago(now, beat.started),
        "last_seen": iso(beat.last_seen),
        "seen_ago": _ago(now, beat.last_seen),
        "leading": beat.leading,
    }


def overview(client: redis.Redis, settings: Settings, schedules: Sequence[Schedule], *, now: float) -> dict[str, Any]:
    keys = PresenceKeys.for_prefix(settings.state.key_prefix)
    beats = read_heartbeats(client, keys)
    leader_beat = next((b for b in beats if b.leading), None)
    seen = [b for b in beats if b.leader is not None]
    leader = leader_beat.identity if leader_beat else (seen[0].leader if seen else None)
    term = leader_beat.term if leader_beat else (max(b.term or 0 for b in seen) if seen else None)
    now_ms = int(now * 1000)
    streams = []
    for row in backlog(client, layout=Layout.from_settings(settings)):
        age = row.age_ms(now_ms)
        streams.append(
            {
                "name": row.stream,
                "ready": row.unread,
                "pending": row.pending,
                "dead": row.dead,
                "length": row.length,
                "oldest_age": None if age is None else format_age(age / 1000),
                "paused": row.paused is not None,
                "paused_by": row.paused.by if row.paused else None,
                "paused_at": ms_time(row.paused.at_ms) if row.paused and row.paused.at_ms else None,
            }
        )
    return {
        "leader": leader,
        "term": term,
        "leading_since": iso(leader_beat.leading_since) if leader_beat else None,
        "leading_for": _ago(now, leader_beat.leading_since) if leader_beat else None,
        "replicas": [_replica_row(b, now) for b in beats],
        "streams": streams,
        "active_jobs": int(client.scard(settings.state.active_key)),
        "max_active_jobs": settings.kube.max_active_jobs,
        "scheduling": schedules_view(client, settings, schedules, now=now),
        "throughput": read_throughput(client, keys, now=now),
    }


def schedules_view(
    client: redis.Redis, settings: Settings, schedules: Sequence[Schedule], *, now: float
) -> dict[str, Any]:
    """scheduling_overview, as ksr status shows it (each schedule's `suspended`: {at, by} or None)."""
    namespace = Layout.from_settings(settings).namespace
    return scheduling_overview(
        client, streams=settings.streams.streams, schedules=schedules, pause_namespace=namespace, now=now
    )


# -- messages ----------------------------------------------------------------------------------


def message_list(
    client: redis.Redis,
    settings: Settings,
    *,
    state: str | None,
    stream: str | None,
    service: str | None,
    namespace: str | None,
    since: str | None,
    cursor: str | None,
    now: float,
) -> dict[str, Any]:
    """A page of runner.inspect.recent, newest first; unknown filter values are dropped (the
    page says which filters it used)."""
    state = state if state in STATE_CHOICES else None
    stream = stream if stream in settings.streams.streams else None
    since_ms = int((now - SINCE_CHOICES[since]) * 1000) if since in SINCE_CHOICES else None
    page = recent(
        client,
        layout=Layout.from_settings(settings),
        state=state,
        stream=stream,
        service=service or None,
        namespace=namespace or None,
        since_ms=since_ms,
        limit=PAGE_SIZE,
        cursor=cursor or None,
    )
    rows = [
        {
            "id": item.message_id,
            "state": item.state.value if item.state else "?",
            "stream": item.stream,
            "service": item.service,
            "namespace": item.namespace,
            "job_name": item.job_name,
            "error_code": item.error_code,
            "at": ms_time(item.at_ms),
            "ago": _ago(now, item.at_ms / 1000),
        }
        for item in page.items
    ]
    return {
        "rows": rows,
        "next_cursor": page.next_cursor,
        "complete": page.complete,
        "scanned": page.scanned,
        "filters": {
            "state": state,
            "stream": stream,
            "service": service or None,
            "namespace": namespace or None,
            "since": since if since in SINCE_CHOICES else None,
        },
    }


@dataclass(frozen=True)
class MessageDetail:
    message_id: str
    where: str  # scheduled | pending | running | finished | dead | unknown
    sightings: list[Sighting]
    record: StateRecord
    moments: list[dict[str, Any]]
    payload: str | None  # pretty, secrets masked
    dead: Sighting | None  # the dead letter to replay, when that is where it is
    cancellable: bool
    resendable: bool  # finished (not dead) with a payload: runner.operate.resend's rule
    callbacks: list[CallbackRow]


@dataclass(frozen=True)
class CallbackRow:
    status: int
    delivery: str  # delivered | gone | failed | expired | in flight | no webhook
    attempts: int
    redeliverable: bool  # runner.operate.may_redeliver: the row offers "re-deliver"


def _callback_rows(record: StateRecord) -> list[CallbackRow]:
    rows = []
    for status in record.callbacks():
        delivery = record.callback_outcome(status) or ("in flight" if record.webhook else "no webhook")
        rows.append(CallbackRow(int(status), delivery, record.callback_attempts(status), may_redeliver(record, status)))
    return rows


def _moment_row(m: Moment) -> dict[str, Any]:
    if m.kind is MomentKind.CALLBACK_ATTEMPT:
        what = f"callback {m.callback} attempt {m.attempt}"
    elif m.kind in (MomentKind.CALLBACK_OWED, MomentKind.CALLBACK_DONE):
        what = f"callback {m.callback}" + (f": {m.outcome}" if m.outcome else "")
    else:
        what = " ".join(p for p in (m.stream if m.kind is MomentKind.ADDED else None, m.entry_id) if p)
    return {
        "at": ms_time(m.at_ms),
        "at_ms": m.at_ms,
        "kind": m.kind.value,
        "what": what,
        "detail": m.detail,
        "http_status": m.http_status,
        "duration_ms": m.duration_ms,
        "outcome": m.outcome,
        "next_retry": ms_time(m.next_retry_ms),
        "attempt": m.kind is MomentKind.CALLBACK_ATTEMPT,
    }


def message_detail(client: redis.Redis, settings: Settings, message_id: str) -> MessageDetail:
    layout = Layout.from_settings(settings)
    record = read_record(client, message_id, layout)
    sightings = find(client, message_id, layout=layout, record=record)
    moments = timeline(client, message_id, layout=layout, sightings=sightings, record=record)
    where, _ = where_of(sightings)
    raw = next((s.payload for s in sightings if s.payload), None)
    payload = None
    if raw is not None:
        doc, parsed = masked_payload(raw)
        payload = json.dumps(doc, indent=2, ensure_ascii=False) if parsed else str(doc)
    # A policy or schema dead letter has a `dead` record (where_of says finished) or none.
    ended_dead = where == "dead" or (where == "finished" and record is not None and record.state is State.DEAD)
    dead = next((s for s in sightings if s.place is Place.DEAD), None) if ended_dead else None
    return MessageDetail(
        message_id=message_id,
        where=where,
        sightings=sightings,
        record=record or StateRecord(),
        moments=[_moment_row(m) for m in moments],
        payload=payload,
        dead=dead,
        cancellable=where in CANCELLABLE,
        resendable=bool(
            record and record.state in TERMINAL_STATES and record.state is not State.DEAD and payload is not None
        ),
        callbacks=_callback_rows(record or StateRecord()),
    )


# -- dead letters, failures, pending ---------------------------------------------------------


@dataclass(frozen=True)
class DeadGroup:
    stream: str
    reason: str
    count: int
    newest_error: str
    newest_at: str | None


def dead_entries(client: redis.Redis, settings: Settings, stream: str, *, reason: str | None = None) -> list[DeadEntry]:
    """The dead letters of `stream` (up to DEAD_SCAN_LIMIT, oldest first), of `reason` if given."""
    layout = Layout.from_settings(settings)
    return list(iter_dead(client, layout=layout, stream=stream, reason=reason, limit=DEAD_SCAN_LIMIT))


def dead_groups(client: redis.Redis, settings: Settings) -> list[DeadGroup]:
    groups = []
    for stream in settings.streams.streams:
        by_reason: dict[str, list[DeadEntry]] = defaultdict(list)
        for entry in dead_entries(client, settings, stream):
            by_reason[entry.reason].append(entry)
        for reason, entries in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            newest = entries[-1]
            groups.append(DeadGroup(stream, reason, len(entries), newest.error, ms_time(newest.dead_at or None)))
    return groups


def failure_groups(client: redis.Redis, events_stream: str) -> list[dict[str, Any]]:
    """Failed and exception ends (callbacks 3 and 99) among the newest events, by error code."""
    rows = client.xrevrange(events_stream, "+", "-", count=FAILURE_SCAN_EVENTS)
    counts: Counter[str] = Counter()
    example: dict[str, dict[str, Any]] = {}
    for _event_id, fields in rows or []:
        fields = fields or {}
        try:
            status = int(fields.get(b"status", b"-1"))
        except ValueError:
            continue
        if status not in (3, 99):
            continue
        try:
            detail = json.loads(fields.get(b"detail", b"{}"))
        except ValueError:
            detail = {}
        error = detail.get("error") if isinstance(detail, dict) else None
        code = str(error.get("errorCode")) if isinstance(error, dict) and error.get("errorCode") else "(none)"
        counts[code] += 1
        if code not in example:  # the newest of each code
            example[code] = {
                "message_id": text(fields.get(b"id", b"")),
                "message": str(error.get("message", ""))[:300] if isinstance(error, dict) else "",
                "at": ms_time(int(fields.get(b"ts", b"0"))),
                "status": status,
            }
    return [{"code": code, "count": n, **example[code]} for code, n in counts.most_common()]


def pending_rows(client: redis.Redis, settings: Settings) -> list[PendingEntry]:
    return pending(client, layout=Layout.from_settings(settings), count=PENDING_LIMIT)
