"""What the console reads about the whole deployment that no single pod knows: every
replica's heartbeat and the per-minute throughput series.

Heartbeats: each replica's runner writes `<ns>:replica:<identity>` (JSON: identity, version,
started, last seen, leading and since when, leader, term) with a TTL of a few beats, and indexes it in the
sorted set `<ns>:replicas` (score: last seen). A reader drops index members whose key has
expired, so a replica that died leaves the list within one TTL.

Throughput: the leader adds what it counted to the hash `<ns>:throughput:<minute>` (fields
dispatched, completed, failed; minute = Unix time // 60), each hash expiring after
THROUGHPUT_KEEP_MINUTES, so the series is bounded without a trimming job.

`<ns>` is the state store's namespace (`ksr` for `ksr:msg:`), like the active set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from runner.store.errors import redis_errors
from runner.store.replies import text

__all__ = [
    "THROUGHPUT_FIELDS",
    "THROUGHPUT_KEEP_MINUTES",
    "Heartbeat",
    "PresenceKeys",
    "add_throughput",
    "read_heartbeats",
    "read_throughput",
    "write_heartbeat",
]

THROUGHPUT_FIELDS = ("dispatched", "completed", "failed")
THROUGHPUT_KEEP_MINUTES = 90  # the chart shows 60; the rest covers clock skew between leaders


@dataclass(frozen=True)
class PresenceKeys:
    namespace: str  # "ksr"

    @classmethod
    def for_prefix(cls, key_prefix: str) -> PresenceKeys:
        """From the records' prefix: `ksr:msg:` -> `ksr` (as StateSettings.active_key)."""
        return cls(":".join(key_prefix.split(":")[:-2]))

    @property
    def replicas(self) -> str:
        return f"{self.namespace}:replicas"

    def replica(self, identity: str) -> str:
        return f"{self.namespace}:replica:{identity}"

    def minute(self, minute: int) -> str:
        return f"{self.namespace}:throughput:{minute}"


@dataclass(frozen=True)
class Heartbeat:
    identity: str
    version: str
    started: float  # Unix time the runner started
    last_seen: float  # Unix time of this heartbeat
    leading: bool
    leader: str | None
    term: int | None
    leading_since: float | None = None  # Unix time this replica's term began, while it leads

    def to_json(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: Any) -> Heartbeat | None:
        try:
            doc = json.loads(raw)
            return cls(
                identity=str(doc["identity"]),
                version=str(doc["version"]),
                started=float(doc["started"]),
                last_seen=float(doc["last_seen"]),
                leading=bool(doc["leading"]),
                leader=None if doc.get("leader") is None else str(doc["leader"]),
                term=None if doc.get("term") is None else int(doc["term"]),
                leading_since=None if doc.get("leading_since") is None else float(doc["leading_since"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not ours, or an older shape: not shown


def write_heartbeat(client: redis.Redis, keys: PresenceKeys, beat: Heartbeat, *, ttl_seconds: int) -> None:
    """One round trip: the replica's key with its TTL, and its place in the index."""
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        pipe.set(keys.replica(beat.identity), beat.to_json(), ex=ttl_seconds)
        pipe.zadd(keys.replicas, {beat.identity: beat.last_seen})
        pipe.execute()


def read_heartbeats(client: redis.Redis, keys: PresenceKeys) -> list[Heartbeat]:
    """The replicas whose heartbeat has not expired, by identity; expired ones leave the index."""
    with redis_errors():
        members = [text(m) for m in client.zrange(keys.replicas, 0, -1)]
        if not members:
            return []
        raws = client.mget([keys.replica(m) for m in members])
        gone = [m for m, raw in zip(members, raws) if raw is None]
        if gone:
            client.zrem(keys.replicas, *gone)
    beats = [Heartbeat.from_json(raw) for raw in raws if raw is not None]
    return sorted((b for b in beats if b is not None), key=lambda b: b.identity)


def add_throughput(client: redis.Redis, keys: PresenceKeys, counts: Mapping[int, Mapping[str, int]]) -> None:
    """Add `counts` ({minute: {field: n}}) to the series, in one round trip."""
    if not counts:
        return
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        for minute, fields in counts.items():
            key = keys.minute(minute)
            for name, n in fields.items():
                if n:
                    pipe.hincrby(key, name, n)
            pipe.expire(key, THROUGHPUT_KEEP_MINUTES * 60)
        pipe.execute()


def read_throughput(client: redis.Redis, keys: PresenceKeys, *, now: float, minutes: int = 60) -> list[dict[str, int]]:
    """The last `minutes` minutes up to the one holding `now`, oldest first:
    [{"minute": m, "dispatched": n, "completed": n, "failed": n}, ...], zeros where nothing was counted."""
    last = int(now // 60)
    wanted = list(range(last - minutes + 1, last + 1))
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        for minute in wanted:
            pipe.hgetall(keys.minute(minute))
        replies = pipe.execute()
    out = []
    for minute, reply in zip(wanted, replies):
        fields = {text(k): int(v) for k, v in (reply or {}).items()}
        out.append({"minute": minute, **{name: fields.get(name, 0) for name in THROUGHPUT_FIELDS}})
    return out
