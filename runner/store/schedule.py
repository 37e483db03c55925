"""Delayed messages held until due: per source stream a sorted set and a payload hash.

    <stream>:scheduled            sorted set: message id -> due time (Unix ms)
    <stream>:scheduled:payloads   hash: message id -> the payload as it was sent

One pair per stream keeps the priority: a due message goes back into the stream it came
from. The leader writes through fenced Lua scripts (schedule.lua, move_due.lua: the move
and the removal in one script); cancel.lua is for anyone (the CLI, runner.client).
The cancel requests the leader still has to carry out (a Job to delete, a 99 to send) are
the set `ksr:cancels` (see runner.pipeline.cancels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.state import StaleTerm

__all__ = ["CANCELS_KEY", "MOVE_BATCH", "CancelOutcome", "Scheduled", "ScheduledStore", "payloads_key", "scheduled_key"]

CANCELS_KEY = "ksr:cancels"
MOVE_BATCH = 500  # messages moved per script call: one call must not block Redis long


def scheduled_key(stream: str) -> str:
    return f"{stream}:scheduled"


def payloads_key(stream: str) -> str:
    return f"{stream}:scheduled:payloads"


@dataclass(frozen=True)
class Scheduled:
    message_id: str
    stream: str
    due: float  # Unix time
    payload: str


@dataclass(frozen=True)
class CancelOutcome:
    kind: str  # FINISHED | CANCELLED | REQUESTED (cancel.lua)
    detail: str  # the state (FINISHED, REQUESTED) or the stage (CANCELLED: scheduled | pending)


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


class ScheduledStore:
    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        streams: Iterable[str],
        record_prefix: str = "ksr:msg:",
        term_key: str = "ksr:term",
        cancels_key: str = CANCELS_KEY,
    ) -> None:
        self.redis = redis_client
        self.streams = tuple(streams)
        self.record_prefix = record_prefix
        self.term_key = term_key
        self.cancels_key = cancels_key
        self._schedule = scripts.load(redis_client, "schedule", fenced=True)
        self._move = scripts.load(redis_client, "move_due", fenced=True)
        self._cancel = scripts.load(redis_client, "cancel", states=True)

    def _fenced(self, script: Any, keys: list[str], args: list[Any], term: int | None) -> list[Any]:
        with redis_errors():
            reply = script(keys=[self.term_key, *keys], args=["" if term is None else int(term), *args])
        if _s(reply[0]) == "STALE":
            raise StaleTerm(int(term or 0), int(reply[1]))
        return list(reply)

    # -- the leader ------------------------------------------------------------------------

    def schedule(self, stream: str, message_id: str, *, due: float, payload: str, term: int | None) -> bool | None:
        """Hold the message until `due`. True: held now; False: already held (the same id
        scheduled twice); None: the id has a state record, so it is not held (the
        dispatcher's claim decides: a duplicate, or a cancelled id)."""
        reply = self._fenced(
            self._schedule,
            [scheduled_key(stream), payloads_key(stream), self.record_prefix + message_id],
            [message_id, int(due * 1000), payload],
            term,
        )
        if _s(reply[0]) == "KNOWN":
            return None
        return int(reply[1]) == 1

    def move_due(self, stream: str, *, now: float, term: int | None, limit: int = MOVE_BATCH) -> int:
        """XADD every message due by `now` back into `stream`; returns how many moved."""
        reply = self._fenced(
            self._move, [scheduled_key(stream), payloads_key(stream), stream], [int(now * 1000), limit], term
        )
        return int(reply[1])

    # -- anyone ----------------------------------------------------------------------------

    def cancel(self, message_id: str, *, now: float, ttl_seconds: int) -> CancelOutcome:
        keys = [self.record_prefix + message_id, self.cancels_key]
        for stream in self.streams:
            keys += [scheduled_key(stream), payloads_key(stream)]
        with redis_errors():
            reply = self._cancel(keys=keys, args=[message_id, int(now * 1000), int(ttl_seconds), *self.streams])
        return CancelOutcome(_s(reply[0]), _s(reply[1]))

    def next_due(self) -> float | None:
        """The earliest due time over every stream, or None when nothing is held."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for stream in self.streams:
                pipe.zrange(scheduled_key(stream), 0, 0, withscores=True)
            firsts = [row[0][1] for row in pipe.execute() if row]
        return min(firsts) / 1000.0 if firsts else None

    def waiting(self) -> dict[str, int]:
        """How many messages each stream holds."""
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for stream in self.streams:
                pipe.zcard(scheduled_key(stream))
            return {stream: int(n) for stream, n in zip(self.streams, pipe.execute())}

    def find(self, message_id: str) -> Scheduled | None:
        with redis_errors():
            for stream in self.streams:
                due = self.redis.zscore(scheduled_key(stream), message_id)
                if due is not None:
                    payload = self.redis.hget(payloads_key(stream), message_id)
                    return Scheduled(message_id, stream, due / 1000.0, _s(payload or b""))
        return None

    def listing(self, *, limit: int = 1000) -> list[Scheduled]:
        """The held messages, earliest first (at most `limit` per stream)."""
        out: list[Scheduled] = []
        with redis_errors():
            for stream in self.streams:
                rows: list[Any] = list(self.redis.zrange(scheduled_key(stream), 0, limit - 1, withscores=True))
                ids = [_s(row[0]) for row in rows]
                payloads: list[Any] = list(self.redis.hmget(payloads_key(stream), ids)) if ids else []
                out += [
                    Scheduled(mid, stream, float(row[1]) / 1000.0, _s(p or b""))
                    for mid, row, p in zip(ids, rows, payloads)
                ]
        return sorted(out, key=lambda s: (s.due, s.message_id))
