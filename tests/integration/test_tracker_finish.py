"""A terminal transition is one step in Redis: once a message's final event is on the events
stream, its record is terminal and it has left the active set. A producer's `wait` returns on
the event; a `status` right after must not say `running` (seen: ksr_client's test, under load,
in the gap between the tracker's mark and its state move)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from runner.jobs.tracker import Tracker
from runner.settings import Settings
from runner.signals import Signals
from runner.store.state import StateStore

URL = "http://127.0.0.1:9/hook"
EVENTS = "ksr:events"


class Watching:
    """A callback sink that looks at Redis at the moment the tracker hands it the courier:
    the first point where another process can have read the event."""

    def __init__(self, conn: redis.Redis) -> None:
        self.redis = conn
        self.seen: list[tuple[list[int], str, bool]] = []

    def start(self, message_id: str, courier: str, url: str) -> None:
        statuses = [int(f[b"status"]) for _, f in self.redis.xrange(EVENTS) if f[b"id"] == message_id.encode()]
        state = (self.redis.hget(f"ksr:msg:{message_id}", "state") or b"").decode()
        self.seen.append((statuses, state, bool(self.redis.sismember("ksr:active", message_id))))

    def enqueue(self, *args: Any, **kwargs: Any) -> bool:
        return True


def recorded(conn: redis.Redis) -> tuple[StateStore, Watching, Tracker]:
    """Message "m" claimed and its Job recorded; the tracker hands its couriers to a Watching."""
    settings = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})
    store = StateStore.from_settings(conn, settings)
    sink = Watching(conn)
    tracker = Tracker(state=store, callbacks=sink, settings=settings, signals=Signals([]))
    store.claim("m", stream="ksr:jobs:default", entry_id="1-0")
    store.record_job("m", job_name="j", namespace="ns", job_uid="u", webhook=URL)
    return store, sink, tracker


@pytest.mark.parametrize(
    ("end", "status", "state"),
    [("completed", 2, "completed"), ("failed", 3, "failed"), ("exception", 99, "exception")],
)
def test_the_final_event_is_never_seen_before_the_terminal_record(
    redis_client: redis.Redis, end: str, status: int, state: str
) -> None:
    store, sink, tracker = recorded(redis_client)
    tracker.pod_started("m", pod_name="p", pod_uid="pu")
    redis_client.hdel("ksr:msg:m", "cb_owner")  # callbacks 0 and 1 delivered: the courier let go
    if end == "completed":
        tracker.completed("m", duration=1.0)
    elif end == "failed":
        tracker.failed("m", code="Error", message="exit 1", duration=1.0)
    else:
        tracker.exception("m", code="PodStartTimeout", message="never started")
    statuses, seen_state, active = sink.seen[-1]
    assert statuses[-1] == status
    assert (seen_state, active) == (state, False)
    record = store.get("m")
    assert record is not None and record.state == state and record.get("finished_at")


def test_the_start_event_is_never_seen_before_the_running_record(redis_client: redis.Redis) -> None:
    """Callback 1's mark and event and the move to running: one script (issue 23 joined them,
    a round trip fewer per Job; before, the event could be read while the record said created)."""
    store, sink, tracker = recorded(redis_client)
    tracker.created("m", job_name="j", job_uid="u", webhook=URL)  # callback 0
    redis_client.hdel("ksr:msg:m", "cb_owner")  # callback 0 delivered: the courier let go
    assert tracker.pod_started("m", pod_name="p", pod_uid="pu")
    assert sink.seen[-1] == ([0, 1], "running", True)
    record = store.get("m")
    assert record is not None and (record.state.value, record.get("pod_name"), record.get("pod_uid")) == (
        "running",
        "p",
        "pu",
    )
    assert redis_client.ttl("ksr:msg:m") == -1  # live: no TTL before its end
    assert tracker.pod_started("m", pod_name="p", pod_uid="pu")  # a later pod event: nothing more
    assert [int(f[b"status"]) for _, f in redis_client.xrange(EVENTS)] == [0, 1]
