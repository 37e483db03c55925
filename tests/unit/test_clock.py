"""The fake clock's wall time: it follows monotonic time and steps on its own."""

from __future__ import annotations

from election.clock import SYSTEM_CLOCK, FakeClock


def test_fake_wall_time_follows_monotonic_time_and_steps_alone() -> None:
    clock = FakeClock(start=10.0)
    wall, mono = clock.time(), clock.monotonic()
    clock.advance(2.5)
    assert (clock.time() - wall, clock.monotonic() - mono) == (2.5, 2.5)
    clock.step_wall(-3600)
    assert (clock.time() - wall, clock.monotonic() - mono) == (2.5 - 3600, 2.5)


def test_the_system_clock_gives_unix_seconds() -> None:
    assert abs(SYSTEM_CLOCK.time() - SYSTEM_CLOCK.now().timestamp()) < 5
