"""Creates that wait: entries whose Job the apiserver refused for now (a ResourceQuota full,
429, 5xx, timeouts), held out of the stream until their next try.

An entry left pending would be delivered again at every rescan and the group's delivery
counter would dead-letter it as poison within minutes, while the refusal is nobody's fault
and passes by itself. So a refused entry is moved here instead, in one Lua step with its
XACK (lua/defer_create.lua): a copy of its fields (`f:<name>`), the group's delivery counter when it arrived, when
it was first refused (`since`, the start of KSR_CREATE_HORIZON), how many tries, and the
apiserver's last words. `<ns>:waiting` is a sorted set of these entries by the time of
their next try; every entry has a hash `<ns>:waiting:<member>` (member `<stream>/<entry id>`).

The leader takes due entries before reading new ones; what becomes of them then is the
dispatcher's: a Job (then `forget`), another wait (`defer` again), or a dead letter, which
removes the entry from here in its own Lua step (runner.store.deadletter.Leftovers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.state import StaleTerm
from runner.store.streams import Entry

__all__ = ["Waiting", "WaitingCreates", "waiting_index"]

log = logging.getLogger(__name__)

_FIELD = b"f:"


def waiting_index(active_key: str) -> str:
    """`<ns>:waiting` beside the active set `<ns>:active` (CACHE_JOB_KEY_PREFIX's namespace)."""
    return active_key.rsplit(":", 1)[0] + ":waiting"


@dataclass(frozen=True)
class Waiting:
    """An entry taken from the waiting set, as it was when it was refused."""

    entry: Entry
    member: str
    since: float  # Unix seconds of the first refusal
    tries: int
    error: str  # the apiserver's words at the last refusal


class WaitingCreates:
    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        index: str,
        group: str,
        term_key: str = "ksr:term",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.redis = redis_client
        self.index = index
        self.group = group
        self.term_key = term_key
        self.clock = clock
        self._defer = scripts.load(redis_client, "defer_create", fenced=True)

    @staticmethod
    def member(entry: Entry) -> str:
        return f"{entry.stream}/{entry.entry_id}"

    def key(self, member: str) -> str:
        return f"{self.index}:{member}"

    def defer(self, entry: Entry, *, message_id: str, due: float, error: str, term: int) -> None:
        """Hold `entry` until `due` (Unix seconds) and XACK it, in one step (fenced by `term`)."""
        member = self.member(entry)
        fields: list[Any] = [
            "stream",
            entry.stream,
            "entry_id",
            entry.entry_id,
            "deliveries",
            entry.deliveries,
            "message_id",
            message_id,
            "error",
            error,
        ]
        for name, value in entry.fields.items():
            fields += [_FIELD + name, value]
        with redis_errors():
            reply = self._defer(
                keys=[self.term_key, self.index, self.key(member), entry.stream],
                args=[
                    int(term),
                    self.group,
                    entry.entry_id,
                    member,
                    f"{due:.3f}",
                    int(self.clock.time() * 1000),
                    *fields,
                ],
            )
        if _s(reply[0]) == "STALE":
            raise StaleTerm(int(term), int(reply[1]))

    def due(self, *, limit: int) -> list[Waiting]:
        """Up to `limit` entries whose next try is now, earliest first."""
        with redis_errors():
            members = [
                _s(m) for m in self.redis.zrangebyscore(self.index, "-inf", self.clock.time(), start=0, num=limit)
            ]
            if not members:
                return []
            pipe = self.redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self.key(member))
            hashes = pipe.execute()
        out = []
        for member, raw in zip(members, hashes):
            try:
                out.append(_waiting(member, raw))
            except (KeyError, ValueError) as e:  # its hash is gone or damaged: nothing left to try
                log.warning("waiting create %s has no usable record (%s); dropped", member, e)
                with redis_errors():
                    self.redis.zrem(self.index, member)
                    self.redis.delete(self.key(member))
        return out

    def forget(self, entry: Entry) -> None:
        """The entry got its Job (or was a duplicate): it waits no more."""
        member = self.member(entry)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(self.index, member)
            pipe.delete(self.key(member))
            pipe.execute()

    def count(self) -> int:
        with redis_errors():
            return int(self.redis.zcard(self.index))


def _waiting(member: str, raw: dict[bytes, bytes]) -> Waiting:
    entry = Entry(
        stream=_s(raw[b"stream"]),
        entry_id=_s(raw[b"entry_id"]),
        fields={k[len(_FIELD) :]: v for k, v in raw.items() if k.startswith(_FIELD)},
        deliveries=int(raw.get(b"deliveries", b"1")),
        from_pending=True,
    )
    return Waiting(
        entry=entry,
        member=member,
        since=int(raw[b"since"]) / 1000.0,
        tries=int(raw.get(b"tries", b"0")),
        error=raw.get(b"error", b"").decode("utf-8", "replace"),
    )


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)
