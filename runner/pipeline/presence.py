"""The runner's side of runner.store.presence: its heartbeat for the console, and, while it
leads, the throughput it counted.

An observer of the signals seam (as the metrics and the status board are): it keeps counts
in memory and writes them with the heartbeat on the loop's beat, at most every
`interval` seconds, so a dispatched message costs no Redis round trip of its own.
"""

from __future__ import annotations

import threading
from collections import defaultdict

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner import __version__
from runner.lifecycle import State
from runner.signals import Beat, Dispatched, JobFinished, Leadership, Signal
from runner.store.presence import Heartbeat, PresenceKeys, add_throughput, write_heartbeat

__all__ = ["HEARTBEAT_INTERVAL", "PresenceObserver"]

HEARTBEAT_INTERVAL = 3.0  # seconds between writes
HEARTBEAT_TTL = 15  # seconds: a replica silent this long leaves the console's list
_FAILED = (State.FAILED, State.EXCEPTION)


class PresenceObserver:
    """Thread-safe: signals arrive from the loop, the create workers and the watch threads."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        identity: str,
        key_prefix: str,
        clock: Clock = SYSTEM_CLOCK,
        interval: float = HEARTBEAT_INTERVAL,
        ttl_seconds: int = HEARTBEAT_TTL,
    ) -> None:
        self._client = client
        self._keys = PresenceKeys.for_prefix(key_prefix)
        self._identity = identity
        self._clock = clock
        self._interval = interval
        self._ttl = ttl_seconds
        self._started = clock.time()
        self._mutex = threading.Lock()
        self._leadership: tuple[bool, str | None, int | None] = (False, None, None)
        self._counts: defaultdict[int, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._last_write: float | None = None
        self._leading_since: float | None = None

    def __repr__(self) -> str:
        return f"PresenceObserver({self._identity})"

    def __call__(self, signal: Signal) -> None:
        match signal:
            case Beat():
                self._maybe_write()
            case Leadership(leading=leading, leader=leader, term=term):
                with self._mutex:
                    if leading and not (self._leadership[0] and self._leadership[2] == term):
                        self._leading_since = self._clock.time()
                    elif not leading:
                        self._leading_since = None
                    self._leadership = (leading, leader, term)
                self._maybe_write(force=True)
            case Dispatched():
                self._count("dispatched")
            case JobFinished(outcome=outcome):
                if outcome == State.COMPLETED:
                    self._count("completed")
                elif outcome in _FAILED:
                    self._count("failed")

    def _count(self, field: str) -> None:
        minute = int(self._clock.time() // 60)
        with self._mutex:
            self._counts[minute][field] += 1

    def _maybe_write(self, *, force: bool = False) -> None:
        now = self._clock.monotonic()
        with self._mutex:
            if not force and self._last_write is not None and now - self._last_write < self._interval:
                return
            self._last_write = now
            counts = {m: dict(f) for m, f in self._counts.items()}
            self._counts.clear()
            leading, leader, term = self._leadership
            since = self._leading_since
        beat = Heartbeat(
            identity=self._identity,
            version=__version__,
            started=self._started,
            last_seen=self._clock.time(),
            leading=leading,
            leader=leader,
            term=term,
            leading_since=since,
        )
        try:
            add_throughput(self._client, self._keys, counts)
            write_heartbeat(self._client, self._keys, beat, ttl_seconds=self._ttl)
        except Exception:
            with self._mutex:  # keep the counts for the next write
                for minute, fields in counts.items():
                    for name, n in fields.items():
                        self._counts[minute][name] += n
            raise
