"""Clock steps against a real Redis: a leader whose wall clock is ahead of or behind the
others', and a Redis host whose clock stepped back.

No clock is stepped for real. A stepped leader is a Ticker handed a `now` an hour off
Redis's TIME. A Redis clock that stepped back is reproduced the way Redis itself shows it:
stream ids stay monotonic, so once an entry was written with an id an hour ahead (an
explicit `XADD <future ms>-0`), every later `*` id carries that future time too.
"""

from __future__ import annotations

import json

import pytest
import redis

from runner.message import Message, parse_message
from runner.pipeline.delay import DelayGate
from runner.pipeline.scheduler import Scheduler
from runner.schedules.config import parse_schedules
from runner.schedules.cron import tick_id
from runner.schedules.ticker import Ticker
from runner.signals import ScheduleTick, Signals
from runner.store.redis_time import RedisTime
from runner.store.schedule import ScheduledStore
from runner.store.state import StateStore
from runner.store.streams import Entry
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
STREAM = STREAMS[1]
HOUR = 3600.0


class Recorder(list):
    def __call__(self, signal: object) -> None:
        self.append(signal)


def redis_now(redis_client: redis.Redis) -> float:
    seconds, micros = redis_client.time()
    return seconds + micros / 1e6


def _ids(redis_client: redis.Redis, stream: str) -> list[str]:
    return [json.loads(f[b"payload"])["id"] for _, f in redis_client.xrange(stream)]


def _ticker(redis_client: redis.Redis, signals: Signals) -> Ticker:
    doc = {"name": "every-minute", "cron": "* * * * *", "message": {**message("x", "default")}}
    del doc["message"]["id"]
    schedules = parse_schedules({"schedules": [doc]}, streams=STREAMS, default_stream=STREAM)
    return Ticker(redis_client, schedules, signals=signals, poll=1.0)


def _step_back_redis_ids(redis_client: redis.Redis, stream: str, *, by: float) -> None:
    """After this, `XADD stream *` ids carry Redis's time plus `by` (ids never go back)."""
    future_ms = int((redis_now(redis_client) + by) * 1000)
    written = message("written-ahead", "default", command=["true"])
    redis_client.xadd(stream, {"payload": json.dumps(written)}, id=f"{future_ms}-0")


def test_redis_time_is_the_clock_of_redis(redis_client):
    before = redis_now(redis_client)
    now = RedisTime(redis_client)()
    assert before <= now <= redis_now(redis_client)


# -- defect 4: a leader with its clock ahead ------------------------------------------------


def test_a_leader_whose_clock_is_an_hour_ahead_stores_no_tick_from_the_future(redis_client):
    StateStore(redis_client, ttl_seconds=3600).advance_term(1)
    seen = Recorder()
    ticker = _ticker(redis_client, Signals([seen]))
    cron = ticker.schedules[0].cron
    latest = cron.latest_at_or_before(redis_now(redis_client))
    assert latest is not None
    tick = latest.timestamp()  # the latest tick by Redis's clock: it has really come
    ticker.run(tick - 120 + 0.5, 1)  # first sight, two minutes ago: remembers tick - 120
    stepped = redis_now(redis_client) + HOUR
    ticker.run(stepped, 1)  # briefly a leader whose clock is an hour ahead ...
    ticker.run(stepped + 0.5, 1)  # ... for more than one turn
    assert ticker.states(tick)[0].last_fired == tick - 120  # nothing from the future remembered
    ticker.run(tick - 60 + 0.5, 1)  # a leader with a good clock: each tick on time fires
    ticker.run(tick + 0.5, 1)
    assert _ids(redis_client, STREAM) == [
        tick_id("every-minute", cron.next_after(tick - 120)),
        tick_id("every-minute", latest),
    ]
    # The refusal is counted once per tick refused, not once per turn.
    assert [s for s in seen if isinstance(s, ScheduleTick) and s.count] == [
        ScheduleTick("every-minute", "refused"),
        ScheduleTick("every-minute", "fired"),
        ScheduleTick("every-minute", "fired"),
    ]


def test_a_leader_whose_clock_is_behind_fires_no_tick_twice(redis_client):
    StateStore(redis_client, ttl_seconds=3600).advance_term(1)
    seen = Recorder()
    good, behind = _ticker(redis_client, Signals([seen])), _ticker(redis_client, Signals([seen]))
    latest = good.schedules[0].cron.latest_at_or_before(redis_now(redis_client))
    assert latest is not None
    tick = latest.timestamp()
    good.run(tick - 180 + 0.5, 1)
    for minute in (2, 1, 0):  # ticks tick-120, tick-60 and tick fired on time
        good.run(tick - 60 * minute + 0.5, 1)
    fired = _ids(redis_client, STREAM)
    assert len(fired) == 3
    for offset in (-600.0, -120.0, -60.0, -0.5):  # a successor whose clock is behind, turn by turn
        behind.run(tick + 0.5 + offset, 1)
    assert _ids(redis_client, STREAM) == fired
    assert [s for s in seen if isinstance(s, ScheduleTick) and s.count] == [ScheduleTick("every-minute", "fired")] * 3
    assert behind.states(tick)[0].last_fired == tick


# -- defect 5: Redis's clock stepped back ---------------------------------------------------


def _entry(redis_client: redis.Redis, entry_id: bytes | str) -> Entry:
    ((eid, fields),) = redis_client.xrange(STREAM, entry_id, entry_id)
    return Entry(STREAM, eid.decode(), fields, 1, False)


def _parse(entry: Entry) -> Message:
    return parse_message(entry.fields[b"payload"].decode())


@pytest.mark.parametrize("max_ahead", [600.0, 30 * 86400.0])  # beyond the step (dead-lettered) and not (an hour)
def test_a_delay_counts_from_redis_time_when_the_entry_id_is_an_hour_ahead(redis_client, max_ahead):
    StateStore(redis_client, ttl_seconds=3600).advance_term(1)
    store = ScheduledStore(redis_client, streams=STREAMS)
    clock = lambda: redis_now(redis_client)  # noqa: E731 - Redis's clock, as the runner uses it
    gate = DelayGate(store, max_ahead=max_ahead, wall_clock=clock)
    _step_back_redis_ids(redis_client, STREAM, by=HOUR)
    before = redis_now(redis_client)
    entry = _entry(redis_client, xadd(redis_client, STREAM, {**message("late-1", "default"), "delaySeconds": 5}))
    after = redis_now(redis_client)
    assert int(entry.entry_id.split("-")[0]) / 1000 > after + HOUR - 60  # the id is an hour ahead
    # Not dead-lettered for lying beyond KSR_SCHEDULE_MAX_AHEAD, and due 5 s after it was sent.
    assert gate.hold(entry, _parse(entry), 1) is True
    held = store.find("late-1")
    assert held is not None
    assert before + 5 - 0.001 <= held.due <= after + 5 + 0.5
    scheduler = Scheduler(store=store, beat=None, cancels=None, poll=1.0, signals=Signals([]), wall_clock=clock)
    scheduler.run_once(1)
    assert store.find("late-1") is not None  # not due yet ...
    scheduler = Scheduler(
        store=store, beat=None, cancels=None, poll=1.0, signals=Signals([]), wall_clock=lambda: held.due
    )
    scheduler.run_once(1)
    assert store.find("late-1") is None  # ... and moved once due
    assert _ids(redis_client, STREAM)[-1] == "late-1"


def test_a_redelivered_delay_still_counts_from_the_entry_not_from_the_redelivery(redis_client):
    StateStore(redis_client, ttl_seconds=3600).advance_term(1)
    store = ScheduledStore(redis_client, streams=STREAMS)
    entry = _entry(redis_client, xadd(redis_client, STREAM, {**message("late-2", "default"), "delaySeconds": 60}))
    sent = int(entry.entry_id.split("-")[0]) / 1000
    gate = DelayGate(store, max_ahead=600, wall_clock=lambda: sent + 30)  # read again 30 s later
    assert gate.hold(entry, _parse(entry), 1) is True
    held = store.find("late-2")
    assert held is not None and held.due == sent + 60


def test_the_runner_runs_a_delayed_message_on_time_after_redis_clock_stepped_back(redis_server, redis_client):
    """The whole pipeline (local executor): an hour's step back must neither dead-letter a
    5 s delay (KSR_SCHEDULE_MAX_AHEAD is 10 minutes here) nor stretch it to an hour."""
    env = base_env(
        redis_url=redis_server.url,
        namespace="default",
        kubeconfig=None,
        KSR_SCHEDULE_POLL="0.5",
        KSR_SCHEDULE_MAX_AHEAD="600",
    )
    _step_back_redis_ids(redis_client, STREAM, by=HOUR)
    with runner_thread(env):
        sent = redis_now(redis_client)
        xadd(redis_client, STREAM, {**message("late-3", "default", command=["true"]), "delaySeconds": 2})
        wait_for(
            lambda: (
                redis_client.hget("ksr:msg:late-3", "state") == b"completed" or redis_client.exists(f"{STREAM}:dead")
            ),
            timeout=30,
            what="late-3 run or dead-lettered",
        )
        done = redis_now(redis_client)
    assert [fields for _, fields in redis_client.xrange(f"{STREAM}:dead")] == []
    assert redis_client.hget("ksr:msg:late-3", "state") == b"completed"
    assert 2.0 <= done - sent <= 15.0  # due in 2 s, moved within a poll, then run: not an hour
