"""Clocks for tests that pin the wall time (records, events, due times) to a known Unix time."""

from __future__ import annotations

import datetime as _dt

from election.clock import SYSTEM_CLOCK, FakeClock


def clock_at(unix: float) -> FakeClock:
    """A FakeClock whose wall time (`time()`) reads `unix` until advanced or stepped."""
    return FakeClock(wall_start=_dt.datetime.fromtimestamp(unix, _dt.UTC))


def clock_behind(seconds: float) -> FakeClock:
    """A FakeClock whose wall time is the real time of the call, less `seconds`."""
    return clock_at(SYSTEM_CLOCK.time() - seconds)
