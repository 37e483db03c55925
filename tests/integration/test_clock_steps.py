"""Clock steps against a real Redis: a leader whose wall clock is ahead of or behind the
others', and a Redis host whose clock stepped back.

No clock is stepped for real. A stepped leader is a Ticker handed a `now` an hour off
Redis's TIME. A Redis clock that stepped back is reproduced the way Redis itself shows it:
stream ids stay monotonic, so once an entry was written with an id an hour ahead (an
explicit `XADD <future ms>-0`), every later `*` id carries that future time too.
"""

from __future__ import annotations

import json

import redis

from runner.schedules.config import parse_schedules
from runner.schedules.cron import tick_id
from runner.schedules.ticker import Ticker
from runner.signals import ScheduleTick, Signals
from runner.store.state import StateStore
from tests.support.messages import message

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
    assert [s for s in seen if isinstance(s, ScheduleTick)] == [
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
    assert [s for s in seen if isinstance(s, ScheduleTick)] == [ScheduleTick("every-minute", "fired")] * 3
    assert behind.states(tick)[0].last_fired == tick
