"""tests/support/timing.py's holds against the runner's own decisions, on a fake clock: an
outage of the length a test plans does outlast what it claims to (the step-down, the lease,
the callbacks' backoff ramp), and a setting that would make the hold meaningless is refused,
naming the variable."""

from __future__ import annotations

import random

import pytest

from election.clock import FakeClock
from election.elector import Elector
from election.errors import LockUnavailable
from election.memory_lock import MemoryLock
from runner import backoff
from runner.callbacks.owed import retry_delay
from tests.support.pipeline import base_env
from tests.support.timing import Timings, ramp

ENV = base_env(redis_url="redis://127.0.0.1:6379/0", namespace="ns", kubeconfig=None)  # no servers read


def test_ramp_sums_the_waits_below_the_cap() -> None:
    assert ramp(base=0.5, cap=4) == 0.5 + 1 + 2
    assert ramp(base=0.2, cap=4) == pytest.approx(0.2 + 0.4 + 0.8 + 1.6 + 3.2)
    assert ramp(base=2, cap=2) == 0


def _attempts_through(outage: float, timings: Timings, seed: int) -> tuple[int, bool]:
    """Drive a callback's retries as the courier does (retry_delay after each refused
    attempt) for `outage` fake seconds: (attempts made, still owed at the end)."""
    c = timings.settings.callbacks
    clock = FakeClock(start=0.0)
    rng = random.Random(seed)
    first_owed, attempt = clock.time(), 0
    while clock.time() - first_owed < outage:
        attempt += 1  # refused: the receiver is down
        wait = retry_delay(
            attempt=attempt,
            first_owed=first_owed,
            now=clock.time(),
            retry_after=None,
            base=c.backoff_base,
            cap=c.backoff_cap,
            max_attempts=c.max_attempts,
            horizon=c.retry_horizon,
            rng=rng,
        )
        if wait is None:
            return attempt, False
        clock.advance(wait)
    return attempt, True


@pytest.mark.parametrize(
    "overrides",
    [
        {"KSR_CALLBACK_MAX_ATTEMPTS": "60", "KSR_CALLBACK_BACKOFF_CAP": "4", "KSR_CALLBACK_TIMEOUT": "2"},
        {"KSR_CALLBACK_BACKOFF_BASE": "0.2", "KSR_CALLBACK_BACKOFF_CAP": "4", "KSR_CALLBACK_MAX_ATTEMPTS": "40"},
        {"KSR_CALLBACK_MAX_ATTEMPTS": "20"},  # base_env's base 0.5 s and cap 2 s
    ],
)
def test_a_planned_receiver_outage_reaches_the_cap_and_is_still_owed_at_its_end(overrides: dict[str, str]) -> None:
    t = Timings.of({**ENV, **overrides})
    c = t.settings.callbacks
    outage = t.callback_outage(capped=2)
    to_cap = 1
    while backoff.delay(to_cap, base=c.backoff_base, cap=c.backoff_cap) < c.backoff_cap:
        to_cap += 1
    for seed in range(200):
        attempts, owed = _attempts_through(outage, t, seed)
        assert owed, f"seed {seed}: the callback ended after {attempts} attempts, inside a {outage:.1f}s outage"
        assert attempts >= to_cap + 2, f"seed {seed}: {attempts} attempts never waited the cap twice"


def test_an_outage_past_the_owner_lease_is_longer_than_the_lease() -> None:
    t = Timings.of({**ENV, "KSR_CALLBACK_TIMEOUT": "2", "KSR_CALLBACK_MAX_ATTEMPTS": "60"})
    assert t.owner_lease == 14.0  # (timeout 2 + 10) s of RQ job timeout, + 2
    assert t.callback_outage(outlast_owner_lease=True) > t.owner_lease > t.callback_outage()


@pytest.mark.parametrize(
    "overrides,variable",
    [
        ({"KSR_CALLBACK_RETRY_HORIZON": "12", "KSR_CALLBACK_BACKOFF_CAP": "4"}, "KSR_CALLBACK_RETRY_HORIZON"),
        ({"KSR_CALLBACK_MAX_ATTEMPTS": "5", "KSR_CALLBACK_BACKOFF_CAP": "4"}, "KSR_CALLBACK_MAX_ATTEMPTS"),
        ({}, "KSR_CALLBACK_MAX_ATTEMPTS"),  # base_env's 12 attempts, 2 s cap: about 9 in the outage
    ],
)
def test_settings_that_would_end_the_callback_inside_the_outage_are_refused(
    overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ValueError, match=variable):
        Timings.of({**ENV, **overrides}).callback_outage()


def _leader_and_follower(t: Timings) -> tuple[FakeClock, MemoryLock, Elector, Elector]:
    clock, lock = FakeClock(), MemoryLock()
    cfg = t.settings.election
    a = Elector(lock, identity="a", config=cfg, clock=clock, rng=random.Random(1))
    b = Elector(lock, identity="b", config=cfg, clock=clock, rng=random.Random(2))
    assert a.step() and not b.step()
    return clock, lock, a, b


def _run_until(clock: FakeClock, elector: Elector, done, *, bound: float) -> float:
    """Step `elector` at the times its loop would, until `done()`; the fake seconds it took."""
    start = clock.monotonic()
    while not done():
        assert clock.monotonic() - start <= bound, f"not done within {bound:.2f}s"
        clock.advance(elector.next_delay())
        elector.step()
    return clock.monotonic() - start


def test_a_leader_cut_from_its_lock_stops_leading_within_step_down() -> None:
    t = Timings.of(ENV)
    clock, lock, a, _ = _leader_and_follower(t)
    lock.fail_with = LockUnavailable("connection refused")
    took = _run_until(clock, a, lambda: not a.is_leading(), bound=t.step_down())
    assert took >= t.settings.election.renew_deadline - t.settings.election.retry_period


def test_a_follower_takes_the_lease_of_a_silent_leader_within_lease_lapsed() -> None:
    t = Timings.of(ENV)
    clock, _, a, b = _leader_and_follower(t)
    # a goes silent (its apiserver away); b, which saw the record at the start, takes over.
    took = _run_until(clock, b, b.is_leading, bound=t.lease_lapsed())
    assert took >= t.settings.election.lease_duration
    assert t.apiserver_outage() >= max(took, t.step_down())


def test_the_redis_outage_outlasts_the_loops_backoff_ramp() -> None:
    # The loop's waits after 1, 2, ... failed turns (runner/pipeline/loop.py).
    from runner.pipeline.loop import ERROR_BACKOFF_CAP

    waits = [backoff.delay(n + 1, base=0.25, cap=ERROR_BACKOFF_CAP) for n in range(1, 20)]
    capped = next(i for i, w in enumerate(waits) if w == ERROR_BACKOFF_CAP)
    assert Timings.of(ENV).redis_outage() >= sum(waits[: capped + 1])
