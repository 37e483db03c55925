"""Time and randomness as parameters.

Everything that waits or judges elapsed time takes a `Clock`; everything that jitters takes
a `RandomSource`. Production code uses `SystemClock` and `random.Random()`; tests use
`FakeClock`, which only moves when told to (or when something waits on it), so state
machines are tested without sleeping. Nothing here knows about elections: `runner` reuses it.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "RandomSource", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic time for measuring, wall time for records meant to be read by people."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (CLOCK_MONOTONIC); only differences mean anything."""
        ...

    def now(self) -> _dt.datetime:
        """Wall-clock time, timezone-aware UTC. Informational only: never judge expiry on it."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds, for timestamps other processes read (records, events,
        callbacks). It can step: elapsed time is judged on `monotonic`, never on this."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for `seconds` (no-op for zero or negative)."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until `event` is set or `timeout` seconds pass; return whether it is set."""
        ...


class RandomSource(Protocol):
    """The part of `random.Random` we use: a float in [0.0, 1.0)."""

    def random(self) -> float: ...


class SystemClock:
    """The real clocks: `time.monotonic()` and UTC wall time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> _dt.datetime:
        return _dt.datetime.now(_dt.UTC)

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when advanced; `sleep` and `wait` advance it instead of blocking.

    `wall_offset` lets a test give this clock a wall time unrelated to its monotonic time
    (for example to simulate clock skew between candidates).
    """

    def __init__(self, start: float = 1000.0, *, wall_start: _dt.datetime | None = None) -> None:
        self._mono = float(start)
        self._start = float(start)
        self._wall_start = wall_start or _dt.datetime(2024, 1, 1, tzinfo=_dt.UTC)
        self._wall_step = 0.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> _dt.datetime:
        with self._lock:
            return self._wall_start + _dt.timedelta(seconds=self._mono - self._start + self._wall_step)

    def time(self) -> float:
        return self.now().timestamp()

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock only (forward or back), as NTP or an operator would."""
        with self._lock:
            self._wall_step += seconds

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        self.sleep(max(0.0, timeout))
        return event.is_set()

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._mono:.3f})"
