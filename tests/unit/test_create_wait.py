"""A create refused for now (a full quota, 403/429/5xx past CREATE_DEADLINE) waits out of the
stream on a schedule, judged on the dispatcher's clock: equal-jitter backoff from 1 s doubling
to KSR_CREATE_BACKOFF_CAP, Retry-After a floor up to the cap, the last try on the horizon
itself, then a 99 to the producer and a dead letter (`create_refused`). On a FakeClock, with
the wait recorded instead of stored; tests/integration/test_pipeline_quota.py runs it against
a real ResourceQuota."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from election.clock import FakeClock
from runner.lifecycle import DispatchOutcome
from runner.message import parse_message
from runner.pipeline.dispatcher import WAIT_BACKOFF_BASE, Dispatcher
from runner.settings import Settings
from runner.signals import Signals
from runner.store.streams import Entry
from runner.store.waiting import Waiting
from tests.support.clocks import clock_at
from tests.support.messages import message

URL = "http://127.0.0.1:9/hook"
WORDS = "403 Forbidden: exceeded quota: jobs, requested: count/jobs.batch=1"


class Recorder:
    """The waiting set, the tracker and the state store's fence, recording what they are asked."""

    def __init__(self) -> None:
        self.deferred: list[tuple[str, float, str]] = []
        self.refused: list[tuple[str, str | None, str]] = []

    def defer(self, entry: Entry, *, message_id: str, due: float, error: str, term: int) -> None:
        self.deferred.append((message_id, due, error))

    def fence(self, term: int) -> None:
        pass

    def refused_call(self, message_id: str, *, webhook: str | None, code: str, message: str) -> None:
        self.refused.append((message_id, webhook, message))


class Tracker:
    def __init__(self, rec: Recorder) -> None:
        self.refused = rec.refused_call


class Waits(Dispatcher):
    """The dispatcher whose dead letters are recorded instead of written."""

    def __init__(self, settings: Settings, clock: FakeClock, rec: Recorder, seed: int) -> None:
        super().__init__(
            redis_client=None,  # type: ignore[arg-type]
            reader=None,  # type: ignore[arg-type]
            state=rec,  # type: ignore[arg-type]
            executor=None,  # type: ignore[arg-type]
            tracker=Tracker(rec),  # type: ignore[arg-type]
            settings=settings,
            holds_term=lambda term: True,
            signals=Signals([]),
            waiting=rec,  # type: ignore[arg-type]
            clock=clock,
            rng=random.Random(seed),
        )
        self.dead: list[tuple[str, str]] = []

    def _dead(self, entry: Entry, reason: str, error: str, *, term: int, message_id: str | None = None) -> Any:
        self.dead.append((reason, error))
        return DispatchOutcome.DEAD_LETTERED


def _settings(horizon: float, cap: float) -> Settings:
    return Settings.from_env(
        {
            "POD_NAME": "r0",
            "KSR_ALLOWED_NAMESPACES": "ns",
            "KSR_CREATE_HORIZON": str(horizon),
            "KSR_CREATE_BACKOFF_CAP": str(cap),
        }
    )


def _refused_until_the_horizon(
    horizon: float, cap: float, seed: int, retry_after: float | None = None
) -> tuple[Waits, Recorder, list[float], float]:
    """Refuse every try of one message, each at its due time, until the dispatcher gives up.
    Returns the dispatcher, the recorder, the waits asked for, and the first refusal's time."""
    clock = clock_at(1_800_000_000.0)
    rec = Recorder()
    d = Waits(_settings(horizon, cap), clock, rec, seed)
    payload = json.dumps(message("m1", "ns", webhook=URL))
    entry = Entry("ksr:jobs:default", "1-0", {b"payload": payload.encode()}, 1, False)
    msg = parse_message(payload)
    since, waited, waits = clock.time(), None, []
    try:
        for _ in range(1000):  # bounded: the horizon ends it long before
            outcome = d._wait(entry, msg, WORDS, 1, waited, retry_after=retry_after)
            if outcome is not DispatchOutcome.WAITING:
                break
            _, due, _ = rec.deferred[-1]
            waits.append(due - clock.time())
            clock.advance(max(0.0, due - clock.time()) + 0.001)  # the next try: taken at its due time, 1 ms on
            waited = Waiting(entry, "m", since=since, tries=len(waits), error=WORDS)
        else:
            raise AssertionError("never gave up")
    finally:
        d.close()
    return d, rec, waits, since


@pytest.mark.parametrize("seed", range(20))
def test_waits_back_off_to_the_cap_and_the_last_try_falls_on_the_horizon(seed: int) -> None:
    horizon, cap = 300.0, 30.0
    d, rec, waits, since = _refused_until_the_horizon(horizon, cap, seed)
    for tries, wait in enumerate(waits[:-1], start=1):  # the last one is cut to the horizon
        ceiling = min(cap, WAIT_BACKOFF_BASE * 2 ** (tries - 1))
        assert ceiling / 2 <= wait <= ceiling, f"try {tries}: waited {wait:.2f}s, ceiling {ceiling}"
    assert rec.deferred[-1][1] == pytest.approx(since + horizon), "the last try is on the horizon"
    assert sum(waits) == pytest.approx(horizon, abs=0.1)
    # About one try per half cap once at the cap, never one per tick: bounded both ways.
    assert horizon / cap <= len(waits) <= 6 + horizon / (cap / 2) + 1, len(waits)
    assert d.dead == [("create_refused", f"{WORDS} (still refused after 300s)")]
    assert rec.refused == [("m1", URL, f"{WORDS} (still refused after 300s)")], "one 99, with the apiserver's words"


def test_retry_after_is_a_floor_up_to_the_cap() -> None:
    _, _, waits, _ = _refused_until_the_horizon(60.0, 5.0, seed=1, retry_after=3.0)
    assert all(w >= 3.0 for w in waits[:-1]), waits  # never sooner than the apiserver asked
    _, _, waits, _ = _refused_until_the_horizon(60.0, 5.0, seed=1, retry_after=3600.0)
    assert waits[:-1] and all(w == 5.0 for w in waits[:-1]), waits  # an hour asked: the cap, not an hour


def test_a_horizon_shorter_than_the_base_still_ends_on_it() -> None:
    d, rec, waits, since = _refused_until_the_horizon(0.3, 0.3, seed=3)
    assert all(w <= 0.3 for w in waits) and sum(waits) == pytest.approx(0.3, abs=0.01), waits
    assert rec.deferred[-1][1] == pytest.approx(since + 0.3)
    assert len(d.dead) == 1 and len(rec.refused) == 1
