"""What each console page shows, read from Redis (any replica sees the whole deployment).
Nothing here writes, except that reading the heartbeats drops the index entries of replicas
whose heartbeat expired."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from runner.durations import format_age
from runner.schedules.config import Schedule
from runner.schedules.overview import iso, scheduling_overview
from runner.settings import Settings
from runner.store.deadletter import DeadEntry, list_dead
from runner.store.presence import Heartbeat, PresenceKeys, read_heartbeats, read_throughput
from runner.store.replies import text
from runner.store.stream_inspection import PendingInfo, StreamInspection

__all__ = [
    "DEAD_SCAN_LIMIT",
    "FAILURE_SCAN_EVENTS",
    "dead_entries",
    "dead_groups",
    "failure_groups",
    "message_id_of",
    "overview",
    "pending_rows",
]

DEAD_SCAN_LIMIT = 10_000  # dead letters read per stream for the groups; more are counted, not grouped
FAILURE_SCAN_EVENTS = 5_000  # the newest events grouped by error code
PENDING_LIMIT = 200


def message_id_of(payload: bytes) -> str | None:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


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
    inspection = StreamInspection(client, streams=settings.streams.streams, group=settings.streams.group)
    stats = inspection.stats()
    oldest = inspection.oldest_waiting_ms()
    streams = []
    for name, row in stats.items():
        born = oldest.get(name)
        streams.append(
            {
                "name": name,
                "ready": row.lag,
                "pending": row.pending,
                "lag": row.lag,
                "dead": row.dead,
                "length": row.length,
                "oldest_age": None if born is None else format_age(max(0.0, now - born / 1000)),
            }
        )
    active = int(client.scard(settings.state.active_key))
    return {
        "leader": leader,
        "term": term,
        "leading_since": iso(leader_beat.leading_since) if leader_beat else None,
        "leading_for": _ago(now, leader_beat.leading_since) if leader_beat else None,
        "replicas": [_replica_row(b, now) for b in beats],
        "streams": streams,
        "active_jobs": active,
        "max_active_jobs": settings.kube.max_active_jobs,
        "scheduling": scheduling_overview(client, streams=settings.streams.streams, schedules=schedules, now=now),
        "throughput": read_throughput(client, keys, now=now),
    }


@dataclass(frozen=True)
class DeadGroup:
    stream: str
    reason: str
    count: int
    newest_error: str
    newest_at: str | None


def dead_entries(client: redis.Redis, stream: str, *, reason: str | None = None) -> list[DeadEntry]:
    """The dead letters of `stream` (up to DEAD_SCAN_LIMIT, oldest first), of `reason` if given."""
    entries = list_dead(client, stream, count=DEAD_SCAN_LIMIT)
    return [e for e in entries if reason is None or e.reason == reason]


def dead_groups(client: redis.Redis, streams: Sequence[str]) -> list[DeadGroup]:
    groups = []
    for stream in streams:
        by_reason: dict[str, list[DeadEntry]] = defaultdict(list)
        for entry in dead_entries(client, stream):
            by_reason[entry.reason].append(entry)
        for reason, entries in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            newest = entries[-1]
            groups.append(
                DeadGroup(
                    stream, reason, len(entries), newest.error, iso(newest.dead_at / 1000 if newest.dead_at else None)
                )
            )
    return groups


def failure_groups(client: redis.Redis, events_stream: str) -> list[dict[str, Any]]:
    """Failed and exception ends (callbacks 3 and 99) among the newest events, by error code."""
    rows = client.xrevrange(events_stream, "+", "-", count=FAILURE_SCAN_EVENTS)
    counts: Counter[str] = Counter()
    example: dict[str, dict[str, Any]] = {}
    for _event_id, fields in rows or []:
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
                "at": iso(int(fields.get(b"ts", b"0")) / 1000),
                "status": status,
            }
    return [{"code": code, "count": n, **example[code]} for code, n in counts.most_common()]


def pending_rows(client: redis.Redis, settings: Settings) -> list[tuple[str, PendingInfo]]:
    inspection = StreamInspection(client, streams=settings.streams.streams, group=settings.streams.group)
    out = []
    for stream in settings.streams.streams:
        try:
            out.extend((stream, p) for p in inspection.pending(stream, count=PENDING_LIMIT))
        except redis.ResponseError:  # no stream or group yet
            continue
    return out
