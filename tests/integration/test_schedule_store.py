"""The scheduler's parts against a real Redis with an injected clock: the mover (fenced,
exactly once across a takeover) and the cron ticker (one message per tick across a
failover, catch-up policies for a leaderless gap)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runner.pipeline.scheduler import Scheduler
from runner.schedules.config import parse_schedules
from runner.schedules.ticker import Ticker
from runner.signals import ScheduledMoved, ScheduleTick, Signals
from runner.store.schedule import ScheduledStore
from runner.store.state import StaleTerm, StateStore
from tests.support.messages import message

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder(list):
    def __call__(self, signal: object) -> None:
        self.append(signal)


def _payload(mid: str) -> str:
    return json.dumps({**message(mid, "default"), "delaySeconds": 1})


def _ids(redis_client, stream: str) -> list[str]:
    return [json.loads(f[b"payload"])["id"] for _, f in redis_client.xrange(stream)]


def test_mover_moves_each_due_message_once_keeping_its_id_and_a_stale_leader_moves_none(redis_client):
    state = StateStore(redis_client, ttl_seconds=3600)
    store = ScheduledStore(redis_client, streams=STREAMS)
    state.advance_term(1)
    for i, stream in enumerate(STREAMS):
        assert store.schedule(stream, f"m{i}", due=T0 + 1 + i, payload=_payload(f"m{i}"), term=1) is True
    assert store.schedule(STREAMS[0], "m0", due=T0 + 9, payload=_payload("m0"), term=1) is False  # twice: once
    clock, seen = Clock(T0 + 1.5), Recorder()
    scheduler = Scheduler(store=store, beat=None, cancels=None, poll=1.0, signals=Signals([seen]), wall_clock=clock)
    assert scheduler.run_once(1) == pytest.approx(0.5)  # asleep until the next due time, not a poll
    assert _ids(redis_client, STREAMS[0]) == ["m0"] and not redis_client.exists(STREAMS[1])
    ((_, fields),) = redis_client.xrange(STREAMS[0])
    assert fields[b"scheduled_for"] == str(int((T0 + 1) * 1000)).encode()
    assert [s for s in seen if isinstance(s, ScheduledMoved)] == [ScheduledMoved(STREAMS[0], 1)]
    state.advance_term(2)  # a takeover: the old leader's move is refused, nothing lost
    clock.now = T0 + 10
    with pytest.raises(StaleTerm):
        scheduler.run_once(1)
    assert store.waiting() == {STREAMS[0]: 0, STREAMS[1]: 1, STREAMS[2]: 1}
    assert scheduler.run_once(2) == 1.0  # nothing left: sleep one poll
    assert [_ids(redis_client, s) for s in STREAMS] == [["m0"], ["m1"], ["m2"]]
    assert store.next_due() is None


def _ticker(redis_client, signals: Signals, **entry: object) -> Ticker:
    doc = {
        "name": "every-minute",
        "cron": "* * * * *",
        "message": {k: v for k, v in message("x", "default").items() if k != "id"},
    }
    schedules = parse_schedules({"schedules": [{**doc, **entry}]}, streams=STREAMS, default_stream=STREAMS[1])
    return Ticker(redis_client, schedules, signals=signals, poll=1.0)


def test_a_tick_fires_once_across_a_failover(redis_client):
    state = StateStore(redis_client, ttl_seconds=3600)
    seen = Recorder()
    old, new = _ticker(redis_client, Signals([seen])), _ticker(redis_client, Signals([seen]))
    state.advance_term(1)
    assert old.run(T0 + 0.5, 1) == T0 + 60  # first sight: 10:00 is history; next tick returned
    for minute in (1, 2):
        old.run(T0 + 60 * minute + 0.2, 1)
        old.run(T0 + 60 * minute + 0.7, 1)  # the same tick again: nothing
    state.advance_term(2)  # the old leader is deposed mid-minute 3 ...
    with pytest.raises(StaleTerm):
        old.run(T0 + 180.1, 1)
    new.run(T0 + 180.3, 2)  # ... and its successor fires tick 3, once
    new.run(T0 + 180.9, 2)
    new.run(T0 + 240.1, 2)
    assert _ids(redis_client, STREAMS[1]) == [
        "every-minute-20261201T100100Z",
        "every-minute-20261201T100200Z",
        "every-minute-20261201T100300Z",
        "every-minute-20261201T100400Z",
    ]
    ticks = [s for s in seen if isinstance(s, ScheduleTick)]
    assert [s for s in ticks if s.count] == [ScheduleTick("every-minute", "fired")] * 4
    # each ticker opens the entry's series at 0 when it is made (a first miss must be an increase)
    assert [s for s in ticks if not s.count] == [ScheduleTick("every-minute", "missed", 0)] * 2


@pytest.mark.parametrize(
    ("catch_up", "gap_end", "fired", "ticks"),
    [
        ("skip", 320, [], [ScheduleTick("x", "missed", 5)]),
        ("latest", 330, ["x-20261201T100500Z"], [ScheduleTick("x", "caught_up"), ScheduleTick("x", "missed", 4)]),
        ("latest", 359, [], [ScheduleTick("x", "missed", 5)]),  # 59 s late: beyond the 45 s window
    ],
)
def test_a_leaderless_gap_follows_the_catch_up_policy(redis_client, catch_up, gap_end, fired, ticks):
    StateStore(redis_client, ttl_seconds=3600).advance_term(1)
    seen = Recorder()
    ticker = _ticker(redis_client, Signals([seen]), name="x", catchUp=catch_up, catchUpWindow=45)
    ticker.run(T0 + 0.5, 1)
    ticker.run(T0 + gap_end, 1)  # ticks 10:01 .. 10:05 passed with no leader
    assert (_ids(redis_client, STREAMS[1]) if redis_client.exists(STREAMS[1]) else []) == fired
    assert [s for s in seen if isinstance(s, ScheduleTick) and s.count] == ticks
    assert ticker.states(T0 + gap_end)[0].last_fired == T0 + 300
    ticker.run(T0 + gap_end + 0.5, 1)  # handled: nothing more
    assert [s for s in seen if isinstance(s, ScheduleTick) and s.count] == ticks


def test_a_suspended_schedule_fires_nothing_and_does_not_catch_up_on_resume(redis_client):
    from runner.store.pause import PauseStore

    pauses = PauseStore(redis_client)
    seen = Recorder()
    doc = {"name": "x", "cron": "* * * * *", "catchUp": "latest", "catchUpWindow": 45}
    doc["message"] = {k: v for k, v in message("x", "default").items() if k != "id"}
    schedules = parse_schedules({"schedules": [doc]}, streams=STREAMS, default_stream=STREAMS[1])
    ticker = Ticker(redis_client, schedules, signals=Signals([seen]), poll=1.0, suspended=pauses.suspended_names)
    ticker.run(T0 + 0.5, None)  # first sight
    assert pauses.suspend_schedule("x", at_ms=int(T0 * 1000), by="ops")
    for minute in (1, 2, 3):
        ticker.run(T0 + 60 * minute + 0.2, None)
    assert not redis_client.exists(STREAMS[1])  # nothing fired while suspended
    assert pauses.resume_schedule("x")
    ticker.run(T0 + 180 + 10, None)  # the 10:03 tick is 10 s late but was skipped: no catch-up
    assert not redis_client.exists(STREAMS[1])
    ticker.run(T0 + 240 + 0.2, None)
    assert _ids(redis_client, STREAMS[1]) == ["x-20261201T100400Z"]
    assert [s for s in seen if isinstance(s, ScheduleTick) and s.count] == [ScheduleTick("x", "fired")]
