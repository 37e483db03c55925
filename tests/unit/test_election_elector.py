"""The elector state machine, table-driven, on a fake clock and the in-memory lock."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from election.clock import FakeClock
from election.config import ElectionConfig
from election.elector import Elector
from election.errors import ConflictError, LockUnavailable
from election.memory_lock import MemoryLock
from election.record import LeaderRecord

CFG = ElectionConfig(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
ME, OTHER = "me", "other"
HOUR = dt.timedelta(hours=1)


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@dataclass
class Harness:
    clock: FakeClock
    lock: MemoryLock
    elector: Elector
    events: list[tuple[str, Any]] = field(default_factory=list)


def harness(
    *,
    identity: str = ME,
    clock: FakeClock | None = None,
    lock: MemoryLock | None = None,
    config: ElectionConfig = CFG,
    rng: Any = None,
    **kw: Any,
) -> Harness:
    clock = clock or FakeClock()
    lock = lock or MemoryLock()
    events: list[tuple[str, Any]] = []
    elector = Elector(
        lock,
        identity=identity,
        config=config,
        clock=clock,
        rng=rng or FixedRandom(0.5),
        on_started_leading=lambda term: events.append(("started", term)),
        on_stopped_leading=lambda: events.append(("stopped", None)),
        on_new_leader=lambda who: events.append(("new_leader", who)),
        **kw,
    )
    return Harness(clock, lock, elector, events)


def rec(
    holder: str | None, *, transitions: int = 0, lease: float = 15.0, renew: dt.datetime | None = None
) -> LeaderRecord:
    return LeaderRecord(
        holder=holder, lease_duration=lease, acquire_time=renew, renew_time=renew, transitions=transitions
    )


# One step from a stored record. `seen_for`: None = this candidate has never looked before
# the step; a number = it first saw the record that many seconds before the step.
# `write_fails`: the create/update call raises this.
STEP_TABLE = [
    # name, stored, seen_for, write_fails, leads, holder after, transitions after, events
    ("free lock: create it", None, None, None, True, ME, 0, [("new_leader", ME), ("started", 0)]),
    (
        "released record: take it at once",
        rec(None, transitions=4),
        None,
        None,
        True,
        ME,
        5,
        [("new_leader", ME), ("started", 5)],
    ),
    ("held, first seen now: wait", rec(OTHER, transitions=2), None, None, False, OTHER, 2, [("new_leader", OTHER)]),
    (
        "held, seen just under a lease ago: wait",
        rec(OTHER, transitions=2),
        14.9,
        None,
        False,
        OTHER,
        2,
        [("new_leader", OTHER)],
    ),
    (
        "held, seen a full lease ago: take over",
        rec(OTHER, transitions=2),
        15.0,
        None,
        True,
        ME,
        3,
        [("new_leader", OTHER), ("new_leader", ME), ("started", 3)],
    ),
    (
        "held with the record's own shorter lease: expiry uses it",
        rec(OTHER, lease=5.0),
        5.0,
        None,
        True,
        ME,
        1,
        [("new_leader", OTHER), ("new_leader", ME), ("started", 1)],
    ),
    (
        "skew: remote renewTime an hour old, first seen now: wait",
        rec(OTHER, transitions=7, renew=dt.datetime(2023, 12, 31, 23, tzinfo=dt.UTC)),
        None,
        None,
        False,
        OTHER,
        7,
        [("new_leader", OTHER)],
    ),
    (
        "skew: remote renewTime an hour in the future, seen a lease ago: take over",
        rec(OTHER, transitions=7, renew=dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC)),
        15.0,
        None,
        True,
        ME,
        8,
        [("new_leader", OTHER), ("new_leader", ME), ("started", 8)],
    ),
    (
        "our own identity in the record after a restart: take it back as a new term",
        rec(ME, transitions=3),
        None,
        None,
        True,
        ME,
        4,
        [("new_leader", ME), ("started", 4)],
    ),
    ("free lock, someone creates it first", None, None, ConflictError("exists"), False, None, None, []),
    (
        "expired, someone updates it first",
        rec(OTHER, transitions=2),
        15.0,
        ConflictError("409"),
        False,
        OTHER,
        2,
        [("new_leader", OTHER)],
    ),
    ("free lock, server unreachable on write", None, None, LockUnavailable("refused"), False, None, None, []),
]


@pytest.mark.parametrize(
    "name,stored,seen_for,write_fails,leads,holder,transitions,events", STEP_TABLE, ids=[row[0] for row in STEP_TABLE]
)
def test_one_step(
    name: str,
    stored: LeaderRecord | None,
    seen_for: float | None,
    write_fails: Exception | None,
    leads: bool,
    holder: str | None,
    transitions: int | None,
    events: list[tuple[str, Any]],
) -> None:
    h = harness()
    h.lock.put(stored)
    if seen_for is not None:
        h.lock.fail_ops = {"update": ConflictError("not yet"), "create": ConflictError("not yet")}
        h.elector.step()  # observe only
        h.lock.fail_ops = {}
        h.clock.advance(seen_for)
    if write_fails is not None:
        h.lock.fail_ops = {"create": write_fails, "update": write_fails}  # type: ignore[dict-item]

    assert h.elector.step() is leads
    assert h.elector.is_leading() is leads
    after = h.lock.get()
    assert (after.holder if after else None) == holder
    assert (after.transitions if after else None) == transitions
    assert h.events == events
    if leads:
        assert h.elector.term == transitions
        assert h.elector.holds_term(transitions)  # type: ignore[arg-type]
        assert h.elector.leader == ME


def test_renew_keeps_the_term_and_moves_the_version() -> None:
    h = harness()
    assert h.elector.step()
    first = h.lock.get()
    h.clock.advance(CFG.retry_period)
    assert h.elector.step()
    second = h.lock.get()
    assert first is not None and second is not None
    assert second.transitions == first.transitions == 0
    assert second.acquire_time == first.acquire_time
    assert second.renew_time == first.renew_time + dt.timedelta(seconds=CFG.retry_period)  # type: ignore[operator]
    assert second.version != first.version
    assert h.events == [("new_leader", ME), ("started", 0)]


@pytest.mark.parametrize("how", ["another writer took the record", "renew update conflicts"])
def test_leader_steps_down_at_once_when_it_loses_the_record(how: str) -> None:
    h = harness()
    assert h.elector.step()
    h.clock.advance(CFG.retry_period)
    if how == "another writer took the record":
        h.lock.put(rec(OTHER, transitions=1))
    else:
        h.lock.fail_ops = {"update": ConflictError("409 Conflict")}
    assert h.elector.step() is False
    assert h.elector.is_leading() is False
    assert ("stopped", None) in h.events
    assert h.events.count(("stopped", None)) == 1


# renew deadline 10, retry 2: every renew fails from t=0 on; the leader keeps leading while
# the last successful renew (sent at t=0) is younger than 10 s, and steps down at 10 s.
@pytest.mark.parametrize("lease,deadline,retry", [(15.0, 10.0, 2.0), (3.0, 2.0, 0.5), (60.0, 30.0, 5.0)])
def test_steps_down_when_renewing_fails_past_the_deadline(lease: float, deadline: float, retry: float) -> None:
    cfg = ElectionConfig(lease_duration=lease, renew_deadline=deadline, retry_period=retry)
    h = harness(config=cfg)
    assert h.elector.step()
    h.lock.fail_with = LockUnavailable("connection refused")
    t = 0.0
    while t + retry < deadline:
        h.clock.advance(retry)
        t += retry
        assert h.elector.step() is True, f"still inside the deadline at {t}"
        assert ("stopped", None) not in h.events
    # the loop wakes at the deadline itself, not a retry later
    assert h.elector.next_delay() == pytest.approx(deadline - t)
    h.clock.advance(deadline - t)
    assert h.elector.is_leading() is False
    assert h.elector.step() is False
    assert h.events[-1] == ("stopped", None)
    assert h.elector.status().until == pytest.approx(1000.0 + deadline)


def test_is_leading_is_computed_from_the_clock_not_a_flag() -> None:
    h = harness()
    assert h.elector.step()
    h.clock.advance(CFG.renew_deadline - 0.001)
    assert h.elector.is_leading()
    h.clock.advance(0.001)  # no step: the loop is stuck, yet the fencing check fails on time
    assert not h.elector.is_leading()
    assert h.elector.status().believes_leading
    assert h.events == [("new_leader", ME), ("started", 0)]


@pytest.mark.parametrize(
    "tolerance,age,healthy",
    [
        (2.0, 0.0, True),
        (2.0, 16.9, True),
        (2.0, 17.0, True),
        (2.0, 17.01, False),
        (0.0, 15.01, False),
        (30.0, 44.0, True),
    ],
)
def test_healthy_fails_when_a_believed_leader_has_not_renewed(tolerance: float, age: float, healthy: bool) -> None:
    h = harness(health_tolerance=tolerance)
    assert h.elector.healthy()  # not leading: nothing to be stuck on
    assert h.elector.step()
    h.clock.advance(age)
    assert h.elector.healthy() is healthy


def test_follower_is_always_healthy() -> None:
    h = harness()
    h.lock.put(rec(OTHER))
    h.elector.step()
    h.clock.advance(1000)
    assert h.elector.healthy()


def test_release_clears_the_holder_and_another_takes_over_at_its_next_step() -> None:
    lock, clock = MemoryLock(), FakeClock()
    a = harness(identity="a", lock=lock, clock=clock)
    b = harness(identity="b", lock=lock, clock=clock)
    assert a.elector.step()
    assert not b.elector.step()
    assert a.elector.release() is True
    assert not a.elector.is_leading()
    released = lock.get()
    assert released is not None and released.holder is None and released.transitions == 0
    assert a.events[-1] == ("stopped", None)
    clock.advance(CFG.retry_period)  # well inside the lease a would otherwise have had
    assert b.elector.step()
    assert b.elector.term == 1
    assert a.elector.release() is False  # releasing twice is harmless


def test_release_when_the_server_is_gone_still_stops_leading() -> None:
    h = harness()
    assert h.elector.step()
    h.lock.fail_with = LockUnavailable("refused")
    assert h.elector.release() is True
    assert not h.elector.is_leading()
    assert h.events[-1] == ("stopped", None)


def test_transitions_count_every_tenure() -> None:
    lock, clock = MemoryLock(), FakeClock()
    a = harness(identity="a", lock=lock, clock=clock)
    b = harness(identity="b", lock=lock, clock=clock)
    terms: list[int | None] = []

    assert a.elector.step()
    terms.append(a.elector.term)  # a creates: 0
    a.elector.release()
    assert b.elector.step()
    terms.append(b.elector.term)  # b takes the released: 1
    assert not a.elector.step()  # a sees b, starts counting
    clock.advance(CFG.lease_duration)  # b goes silent
    assert a.elector.step()
    terms.append(a.elector.term)  # a takes over: 2
    lock.fail_with = LockUnavailable("partition")
    clock.advance(CFG.renew_deadline)
    assert not a.elector.step()  # a steps down
    lock.fail_with = None
    assert a.elector.step()
    terms.append(a.elector.term)  # own record again, new term: 3
    clock.advance(CFG.retry_period)
    assert a.elector.step()
    terms.append(a.elector.term)  # a renewal keeps it: 3
    assert terms == [0, 1, 2, 3, 3]


def test_a_vanished_record_is_recreated_above_the_highest_term_seen() -> None:
    h = harness()
    h.lock.put(rec(OTHER, transitions=41))
    h.elector.step()
    h.lock.put(None)  # redis restarted without persistence
    assert h.elector.step()
    assert h.elector.term == 42


@pytest.mark.parametrize("draw,expected", [(0.0, 2.0), (0.5, 2.2), (0.999999, 2.4)])
def test_follower_retry_jitter_bounds(draw: float, expected: float) -> None:
    h = harness(rng=FixedRandom(draw))
    assert h.elector.retry_delay() == pytest.approx(expected, abs=1e-5)
    assert CFG.retry_period <= h.elector.next_delay() < CFG.retry_period * CFG.jitter


def test_jitter_with_the_real_random_source_stays_in_bounds() -> None:
    import random

    h = harness(rng=random.Random(7))
    delays = [h.elector.retry_delay() for _ in range(2000)]
    assert min(delays) >= CFG.retry_period
    assert max(delays) < CFG.retry_period * CFG.jitter
    assert max(delays) - min(delays) > 0.3  # it does jitter


@pytest.mark.parametrize(
    "seen_for,draw,expected",
    [
        (0.0, 0.0, 2.0),  # lease far away: the jittered retry
        (14.0, 0.0, 1.0 + 0.01),  # lease ends in 1 s: wake right after it
        (14.0, 0.5, 1.0 + 0.01 + 0.2),
        (14.9, 0.999, 0.1 + 0.01 + 0.3996),
    ],
)
def test_follower_wakes_when_the_observed_lease_expires(seen_for: float, draw: float, expected: float) -> None:
    h = harness(rng=FixedRandom(draw))
    h.lock.put(rec(OTHER))
    h.elector.step()
    h.clock.advance(seen_for)
    assert h.elector.next_delay() == pytest.approx(expected, abs=1e-6)


def test_leader_renews_every_retry_period_without_jitter() -> None:
    h = harness(rng=FixedRandom(0.999))
    h.elector.step()
    assert h.elector.next_delay() == CFG.retry_period


def test_a_failing_callback_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("callback bug")

    clock, lock = FakeClock(), MemoryLock()
    e = Elector(
        lock,
        identity=ME,
        config=CFG,
        clock=clock,
        rng=FixedRandom(0.0),
        on_started_leading=boom,
        on_stopped_leading=boom,
        on_new_leader=boom,
    )
    with caplog.at_level(logging.ERROR, logger="election.elector"):
        assert e.step()
        clock.advance(CFG.retry_period)
        assert e.step()
        assert e.release()
    assert [r.message for r in caplog.records] == [
        "on_new_leader callback failed; the election goes on",
        "on_started_leading callback failed; the election goes on",
        "on_stopped_leading callback failed; the election goes on",
    ]


def test_leadership_changes_are_logged_at_info_and_renewals_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    with caplog.at_level(logging.DEBUG, logger="election.elector"):
        h.elector.step()
        h.clock.advance(CFG.retry_period)
        h.elector.step()
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels["me became the leader on memory lock ksr-leader (term 0)"] == logging.INFO
    assert levels["me renewed memory lock ksr-leader (term 0)"] == logging.DEBUG


def test_run_acquires_renews_and_releases_on_stop() -> None:
    clock, lock = FakeClock(), MemoryLock()
    stop = threading.Event()
    renewals: list[float] = []

    class StoppingClock(FakeClock):
        def wait(self, event: threading.Event, timeout: float) -> bool:
            renewals.append(timeout)
            if len(renewals) == 5:
                event.set()
            return super().wait(event, timeout)

    clock = StoppingClock()
    h = harness(clock=clock, lock=lock)
    h.elector.run(stop)
    assert renewals == [CFG.retry_period] * 5
    record = lock.get()
    assert record is not None and record.holder is None  # released on the way out
    assert lock.calls.count("update") == 5  # 4 renewals + the release
    assert h.events == [("new_leader", ME), ("started", 0), ("stopped", None)]
    assert not h.elector.is_leading()


def test_run_survives_an_unexpected_error_in_a_step(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenLock(MemoryLock):
        def get(self) -> LeaderRecord | None:
            raise KeyError("bug")

    clock = FakeClock()
    stop = threading.Event()
    e = Elector(BrokenLock(), identity=ME, config=CFG, clock=clock, rng=FixedRandom(0.0))
    original_wait = clock.wait

    def wait(event: threading.Event, timeout: float) -> bool:
        if clock.monotonic() > 1010:
            event.set()
        return original_wait(event, timeout)

    clock.wait = wait  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="election.elector"):
        e.run(stop)
    assert len(caplog.records) >= 5


def test_two_candidates_with_skewed_wall_clocks_never_overlap() -> None:
    """b's wall clock is an hour ahead of a's, so a's renewTime always looks an hour old to b."""
    lock = MemoryLock()
    ca = FakeClock(wall_start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    cb = FakeClock(wall_start=dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC))
    a = harness(identity="a", lock=lock, clock=ca)
    b = harness(identity="b", lock=lock, clock=cb)
    assert a.elector.step()
    for _ in range(20):
        ca.advance(CFG.retry_period)
        cb.advance(CFG.retry_period)
        assert a.elector.step()
        assert not b.elector.step()
    assert b.events == [("new_leader", "a")]


def test_empty_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="identity"):
        Elector(MemoryLock(), identity="")


def test_a_callback_may_release_without_deadlocking() -> None:
    lock, clock = MemoryLock(), FakeClock()
    elector: Elector
    seen: list[str] = []

    def give_up(term: int) -> None:
        seen.append(f"started {term}")
        assert elector.release()

    elector = Elector(
        lock,
        identity=ME,
        config=CFG,
        clock=clock,
        rng=FixedRandom(0.0),
        on_started_leading=give_up,
        on_stopped_leading=lambda: seen.append("stopped"),
    )
    done = threading.Event()
    worker = threading.Thread(target=lambda: (elector.step(), done.set()), daemon=True)
    worker.start()
    assert done.wait(5), "step() deadlocked on a callback that called release()"
    assert seen == ["started 0", "stopped"]
    record = lock.get()
    assert record is not None and record.holder is None


def test_a_follower_warns_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    h.lock.put(rec(OTHER))
    with caplog.at_level(logging.DEBUG, logger="election.elector"):
        for _outage in range(2):
            h.lock.fail_with = LockUnavailable("refused")
            for _ in range(3):
                h.elector.step()
            assert h.elector.status().last_error == "read: refused"
            h.lock.fail_with = None
            h.elector.step()
            assert h.elector.status().last_error is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]


# -- advance_term: a lock created afresh starts at 0 while the runner's store kept a higher term


def test_advance_term_moves_the_record_and_the_tenure_above_the_floor(caplog: pytest.LogCaptureFixture) -> None:
    h = harness()
    assert h.elector.step()
    before = h.lock.get()
    assert before is not None and before.transitions == 0
    with caplog.at_level(logging.WARNING, logger="election.elector"):
        assert h.elector.advance_term(0, at_least=3) == 3
    after = h.lock.get()
    assert after is not None
    assert (after.holder, after.transitions, after.acquire_time) == (ME, 3, before.acquire_time)
    assert after.version != before.version
    assert h.elector.term == 3
    assert h.elector.holds_term(3) and not h.elector.holds_term(0)
    assert h.elector.status().tenure_term == 3
    assert [r.levelname for r in caplog.records if "from 0 to 3" in r.getMessage()] == ["WARNING"]
    h.clock.advance(CFG.retry_period)
    assert h.elector.step()  # renewals keep the advanced term
    renewed = h.lock.get()
    assert renewed is not None and renewed.transitions == 3
    assert h.events == [("new_leader", ME), ("started", 0)]  # the same tenure: no callbacks


def test_advance_term_is_a_renewal_for_the_deadline() -> None:
    h = harness()
    assert h.elector.step()
    h.clock.advance(CFG.renew_deadline - 1)
    assert h.elector.advance_term(0, at_least=5) == 5
    h.clock.advance(2)  # past the first renew's deadline, within the advance's
    assert h.elector.holds_term(5)


def test_advance_term_below_or_at_the_current_term_writes_nothing() -> None:
    h = harness()
    h.lock.put(rec(None, transitions=7))
    assert h.elector.step() and h.elector.term == 8
    calls = list(h.lock.calls)
    assert h.elector.advance_term(8, at_least=8) == 8
    assert h.elector.advance_term(8, at_least=2) == 8
    assert h.lock.calls == calls


@pytest.mark.parametrize(
    "situation",
    ["a follower", "another tenure's term", "past the renew deadline", "another writer took the record"],
)
def test_advance_term_refuses_anyone_not_holding_that_term(situation: str) -> None:
    """A deposed leader must not jump above the new leader's term: it gets None, and the
    record stays what the others wrote."""
    h = harness()
    term = 0
    if situation == "a follower":
        h.lock.put(rec(OTHER, transitions=4))
        assert not h.elector.step()
        term = 4
    else:
        assert h.elector.step()
    if situation == "another tenure's term":
        term = 1
    elif situation == "past the renew deadline":
        h.clock.advance(CFG.renew_deadline)
    elif situation == "another writer took the record":
        h.lock.put(rec(OTHER, transitions=1))
    stored = h.lock.get()
    assert h.elector.advance_term(term, at_least=9) is None
    assert h.lock.get() == stored
    assert not h.elector.holds_term(9)
    if situation == "another writer took the record":
        # the conflict went to the lock, and the leader stepped down at once
        assert not h.elector.is_leading()
        assert ("stopped", None) in h.events


def test_advance_term_when_the_lock_is_unreachable_keeps_the_old_term() -> None:
    h = harness()
    assert h.elector.step()
    h.lock.fail_ops = {"update": LockUnavailable("timeout")}
    assert h.elector.advance_term(0, at_least=3) is None
    assert h.elector.holds_term(0)
    assert "timeout" in (h.elector.status().last_error or "")


def test_after_an_advance_the_next_tenure_continues_above_it() -> None:
    lock, clock = MemoryLock(), FakeClock()
    a = harness(identity="a", lock=lock, clock=clock)
    b = harness(identity="b", lock=lock, clock=clock)
    assert a.elector.step()
    assert not b.elector.step()
    assert a.elector.advance_term(0, at_least=6) == 6
    a.elector.release()
    assert b.elector.step()
    assert b.elector.term == 7
