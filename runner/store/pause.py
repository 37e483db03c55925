"""Streams paused and schedules suspended by an operator, kept in Redis so every replica and
every leader after a failover honours them.

    <ns>:paused:streams     hash: stream name   -> {"at": ms, "by": who}  (JSON)
    <ns>:paused:schedules   hash: schedule name -> {"at": ms, "by": who}

`<ns>` is the namespace of the active set (`ksr` for `ksr:active`, CACHE_JOB_KEY_PREFIX's).
The leader's reader leaves a paused stream unread (its entries wait, its backlog ages); the
cron ticker fires nothing for a suspended schedule, and a resumed one fires from its next
tick on: the ticks missed while suspended are skipped, never caught up (docs/operations.md).
Pausing and resuming are one HSET / HDEL each: nothing to get half done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from runner.store.errors import redis_errors
from runner.store.replies import text

__all__ = ["Paused", "PauseStore", "pause_namespace"]


def pause_namespace(active_key: str) -> str:
    """`ksr` for the active set `ksr:active`."""
    return active_key.rsplit(":", 1)[0]


@dataclass(frozen=True)
class Paused:
    name: str
    at_ms: int  # when it was paused (Unix ms)
    by: str  # who paused it, as they said (free text)


class PauseStore:
    def __init__(self, conn: redis.Redis, *, namespace: str = "ksr") -> None:
        self.redis = conn
        self.streams_key = f"{namespace}:paused:streams"
        self.schedules_key = f"{namespace}:paused:schedules"

    # -- streams ----------------------------------------------------------------------------
    def pause_stream(self, stream: str, *, at_ms: int, by: str = "") -> bool:
        """True when it was not paused before."""
        return self._set(self.streams_key, stream, at_ms, by)

    def resume_stream(self, stream: str) -> bool:
        """True when it was paused."""
        return self._del(self.streams_key, stream)

    def paused_streams(self) -> dict[str, Paused]:
        return self._all(self.streams_key)

    def paused_names(self) -> set[str]:
        """The paused streams' names (one HKEYS): what the leader's reader skips."""
        with redis_errors():
            return {text(n) for n in self.redis.hkeys(self.streams_key)}

    # -- schedules ---------------------------------------------------------------------------
    def suspend_schedule(self, name: str, *, at_ms: int, by: str = "") -> bool:
        return self._set(self.schedules_key, name, at_ms, by)

    def resume_schedule(self, name: str) -> bool:
        return self._del(self.schedules_key, name)

    def suspended_names(self) -> set[str]:
        """The suspended schedules' names (one HKEYS): what the cron ticker skips."""
        with redis_errors():
            return {text(n) for n in self.redis.hkeys(self.schedules_key)}

    def suspended_schedules(self) -> dict[str, Paused]:
        return self._all(self.schedules_key)

    # -- the hashes --------------------------------------------------------------------------
    def _set(self, key: str, name: str, at_ms: int, by: str) -> bool:
        value = json.dumps({"at": int(at_ms), "by": by}, separators=(",", ":"))
        with redis_errors():
            return bool(self.redis.hsetnx(key, name, value))

    def _del(self, key: str, name: str) -> bool:
        with redis_errors():
            return bool(self.redis.hdel(key, name))

    def _all(self, key: str) -> dict[str, Paused]:
        with redis_errors():
            raw = self.redis.hgetall(key)
        out = {}
        for k, v in raw.items():
            name = text(k)
            try:
                doc = json.loads(v)
                out[name] = Paused(name, int(doc.get("at") or 0), str(doc.get("by") or ""))
            except (ValueError, AttributeError, TypeError):  # written by hand: still paused
                out[name] = Paused(name, 0, "")
        return dict(sorted(out.items()))
