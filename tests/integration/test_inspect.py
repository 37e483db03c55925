"""runner.inspect against a real redis-server: every place a message can be, its ordered
timeline in ms, the recent list's filters and pages, dead letters by reason, pending."""

from __future__ import annotations

import json

import pytest
import redis

from runner.inspect import (
    Bounds,
    Layout,
    MomentKind,
    Place,
    backlog,
    dead_by_reason,
    dead_letters,
    find,
    pending,
    recent,
    timeline,
)
from runner.lifecycle import State
from runner.store.deadletter import DeadRecord, Leftovers, dead_letter
from runner.store.events import append_event
from runner.store.pause import PauseStore
from runner.store.record import CallbackAttempt, Field, attempt_log_with
from runner.store.schedule import ScheduledStore
from runner.store.state import CallbackMark, StateStore
from runner.store.stream_reader import StreamReader
from runner.store.waiting import WaitingCreates
from tests.support.messages import message

STREAM = "ksr:jobs:default"
LOW = "ksr:jobs:low"
LAYOUT = Layout(
    streams=(STREAM, LOW), group="ksr", record_prefix="ksr:msg:", active_key="ksr:active", events_stream="ksr:events"
)


def payload(mid: str, **kw: object) -> bytes:
    return json.dumps(message(mid, "default", **kw)).encode()  # type: ignore[arg-type]


@pytest.fixture
def reader(redis_client: redis.Redis) -> StreamReader:
    r = StreamReader(redis_client, streams=[STREAM, LOW], group="ksr", consumer="pod-a", count=10, block_ms=0)
    r.ensure_groups()
    return r


@pytest.fixture
def store(redis_client: redis.Redis) -> StateStore:
    return StateStore(redis_client, ttl_seconds=3600)


def places(r: redis.Redis, mid: str) -> list[Place]:
    return [s.place for s in find(r, mid, layout=LAYOUT)]


def test_nothing_known_is_found_nowhere(redis_client: redis.Redis, reader: StreamReader) -> None:
    assert find(redis_client, "never-sent", layout=LAYOUT) == []
    assert timeline(redis_client, "never-sent", layout=LAYOUT) == []


def test_unread_then_pending_with_holder_and_idle(redis_client: redis.Redis, reader: StreamReader) -> None:
    entry_id = redis_client.xadd(LOW, {"payload": payload("m-1")}).decode()
    redis_client.xadd(LOW, {"payload": payload("m-10")})  # an id that contains the other is not it
    (unread,) = find(redis_client, "m-1", layout=LAYOUT)
    assert (unread.place, unread.stream, unread.entry_id) == (Place.UNREAD, LOW, entry_id)
    assert unread.since_ms == int(entry_id.split("-")[0])
    assert json.loads(unread.payload or b"")["id"] == "m-1"

    reader.read_batch()  # delivered to pod-a, not acked
    (seen,) = find(redis_client, "m-1", layout=LAYOUT)
    assert (seen.place, seen.consumer, seen.deliveries, seen.entry_id) == (Place.PENDING, "pod-a", 1, entry_id)
    assert seen.idle_ms is not None and 0 <= seen.idle_ms < 60_000
    (row,) = [p for p in pending(redis_client, layout=LAYOUT) if p.message_id == "m-1"]
    assert (row.stream, row.consumer, row.deliveries, row.entry_id) == (LOW, "pod-a", 1, entry_id)

    kinds = [m.kind for m in timeline(redis_client, "m-1", layout=LAYOUT)]
    assert kinds == [MomentKind.ADDED, MomentKind.READ]


def test_unread_scan_is_bounded(redis_client: redis.Redis, reader: StreamReader) -> None:
    for n in range(30):
        redis_client.xadd(STREAM, {"payload": payload(f"filler-{n}")})
    redis_client.xadd(STREAM, {"payload": payload("late")})
    assert places(redis_client, "late") == [Place.UNREAD]
    assert find(redis_client, "late", layout=LAYOUT, bounds=Bounds(unread=30)) == []


def test_scheduled(redis_client: redis.Redis) -> None:
    held = ScheduledStore(redis_client, streams=[STREAM, LOW])
    held.schedule(STREAM, "m-2", due=2_000_000_000.25, payload=payload("m-2").decode(), term=None)
    (s,) = find(redis_client, "m-2", layout=LAYOUT)
    assert (s.place, s.stream, s.due_ms) == (Place.SCHEDULED, STREAM, 2_000_000_000_250)
    (m,) = timeline(redis_client, "m-2", layout=LAYOUT)
    assert (m.kind, m.at_ms) == (MomentKind.DUE, 2_000_000_000_250)


def test_claimed_running_finished(redis_client: redis.Redis, store: StateStore) -> None:
    store.claim("m-3", stream=STREAM, entry_id="1700000000000-0")
    (s,) = find(redis_client, "m-3", layout=LAYOUT)
    assert (s.place, s.state) == (Place.CLAIMED, State.CLAIMED)
    store.record_job("m-3", job_name="job-m3", namespace="ns", job_uid="u")
    (s,) = find(redis_client, "m-3", layout=LAYOUT)
    assert (s.place, s.state, s.job_name, s.namespace) == (Place.RUNNING, State.CREATED, "job-m3", "ns")
    store.set_state("m-3", State.RUNNING, pod_name="pod-m3", started_at=1)
    store.finish("m-3", State.COMPLETED)
    (s,) = find(redis_client, "m-3", layout=LAYOUT)
    assert (s.place, s.state, s.pod_name) == (Place.FINISHED, State.COMPLETED, "pod-m3")


def test_waiting(redis_client: redis.Redis, reader: StreamReader, store: StateStore) -> None:
    redis_client.xadd(STREAM, {"payload": payload("m-4")})
    (entry,) = reader.read_batch()
    store.claim("m-4", stream=STREAM, entry_id=entry.entry_id)
    WaitingCreates(redis_client, index=LAYOUT.waiting_index, group="ksr").defer(
        entry, message_id="m-4", due=2_000_000_000.0, error="quota full", term=0
    )
    assert places(redis_client, "m-4") == [Place.WAITING, Place.CLAIMED]
    waiting = find(redis_client, "m-4", layout=LAYOUT)[0]
    assert (waiting.error, waiting.deliveries, waiting.due_ms) == ("quota full", 1, 2_000_000_000_000)


def test_dead_letter_found_with_reason_and_counted(
    redis_client: redis.Redis, reader: StreamReader, store: StateStore
) -> None:
    redis_client.xadd(STREAM, {"payload": payload("m-5")})
    redis_client.xadd(LOW, {"payload": b'{"id": "m-6"}'})
    redis_client.xadd(LOW, {"payload": b"not json"})
    entries = reader.read_batch() + reader.read_batch()  # strict priority: default, then low
    by_payload = {e.fields[b"payload"]: e for e in entries}
    for entry, reason in (
        (by_payload[payload("m-5")], "policy"),
        (by_payload[b'{"id": "m-6"}'], "invalid"),
        (by_payload[b"not json"], "invalid"),
    ):
        mid = "" if entry.fields[b"payload"] == b"not json" else json.loads(entry.fields[b"payload"])["id"]
        dead_letter(
            redis_client,
            entry,
            group="ksr",
            reason=reason,
            error=f"{reason}: <b>bad</b>",
            leftovers=Leftovers(message_id=mid, record_key=LAYOUT.record_key(mid), active_key=LAYOUT.active_key),
            record=DeadRecord(ttl_seconds=3600) if mid else None,
        )
    got = find(redis_client, "m-5", layout=LAYOUT)
    assert [s.place for s in got] == [Place.FINISHED, Place.DEAD]
    dead = got[1]
    assert (dead.reason, dead.error, dead.stream) == ("policy", "policy: <b>bad</b>", STREAM)
    assert dead.original_id == by_payload[payload("m-5")].entry_id
    assert got[0].state is State.DEAD and got[0].reason == "policy"

    assert dead_by_reason(redis_client, layout=LAYOUT) == {"invalid": 2, "policy": 1}
    assert dead_by_reason(redis_client, LOW, layout=LAYOUT) == {"invalid": 2}
    assert [d.reason for d in dead_letters(redis_client, layout=LAYOUT, reason="policy")] == ["policy"]

    kinds = [m.kind for m in timeline(redis_client, "m-5", layout=LAYOUT)]
    assert kinds[0] is MomentKind.ADDED and MomentKind.DEAD_LETTERED in kinds and MomentKind.ENDED in kinds


def test_timeline_is_ordered_by_time_in_ms_with_callback_attempts(redis_client: redis.Redis, store: StateStore) -> None:
    """finished_at written before started_at in the hash still reads in time order."""
    mid = "m-7"
    key = LAYOUT.record_key(mid)
    note = CallbackAttempt(
        number=1,
        at_ms=1_700_000_000_900,
        duration_ms=37,
        http_status=503,
        outcome="retry",
        next_retry_ms=1_700_000_002_000,
    )
    second = CallbackAttempt(number=2, at_ms=1_700_000_002_010, duration_ms=12, http_status=200, outcome="delivered")
    redis_client.hset(
        key,
        mapping={
            "state": "completed",
            "stream": STREAM,
            "entry_id": "1700000000100-0",
            "finished_at": "1700000000700",  # a hash keeps no order; the timeline sorts by time
            "claimed_at": "1700000000200",
            "created_at": "1700000000300",
            "started_at": "1700000000450",
            "job_name": "job-7",
            "webhook": "http://127.0.0.1:9/hook",
            Field.marked(0): "1700000000300",
            Field.marked(2): "1700000000700",
            Field.outcome(2): "delivered",
            Field.attempts(2): "2",
            Field.attempt_log(2): attempt_log_with([note], second),
        },
    )
    moments = timeline(redis_client, mid, layout=LAYOUT)
    assert [(m.kind, m.at_ms) for m in moments] == [
        (MomentKind.ADDED, 1_700_000_000_100),
        (MomentKind.CLAIMED, 1_700_000_000_200),
        (MomentKind.JOB_CREATED, 1_700_000_000_300),
        (MomentKind.CALLBACK_OWED, 1_700_000_000_300),
        (MomentKind.POD_STARTED, 1_700_000_000_450),
        (MomentKind.ENDED, 1_700_000_000_700),
        (MomentKind.CALLBACK_OWED, 1_700_000_000_700),
        (MomentKind.CALLBACK_ATTEMPT, 1_700_000_000_900),
        (MomentKind.CALLBACK_ATTEMPT, 1_700_000_002_010),
    ]
    first = moments[7]
    assert (first.callback, first.http_status, first.duration_ms, first.next_retry_ms) == (
        2,
        503,
        37,
        1_700_000_002_000,
    )
    assert moments[8].outcome == "delivered"


def test_timeline_without_webhook_says_so(redis_client: redis.Redis, store: StateStore) -> None:
    store.claim("m-8", stream=STREAM, entry_id="1-0")
    store.record_job("m-8", job_name="j", namespace="ns", job_uid="u", callback=CallbackMark(status=0))
    (owed,) = [m for m in timeline(redis_client, "m-8", layout=LAYOUT) if m.kind is MomentKind.CALLBACK_OWED]
    assert owed.detail == "no webhook: an event only"


def ended(store: StateStore, mid: str, *, stream: str, service: str, namespace: str, state: State) -> None:
    store.claim(mid, stream=stream, entry_id="1-0")
    store.record_job(mid, job_name=f"job-{mid}", namespace=namespace, job_uid="u", service=service)
    append_event(store.redis, message_id=mid, status=0, detail={})
    if state is not State.CREATED:
        store.finish(mid, state)
        append_event(store.redis, message_id=mid, status=2 if state is State.COMPLETED else 3, detail={})


def test_recent_filters_and_pages_newest_first(redis_client: redis.Redis, store: StateStore) -> None:
    for n in range(7):
        ended(
            store,
            f"r-{n}",
            stream=STREAM if n % 2 else LOW,
            service="a" if n < 4 else "b",
            namespace="ns1" if n != 6 else "ns2",
            state=State.COMPLETED if n % 3 else State.FAILED,
        )
    everything = recent(redis_client, layout=LAYOUT)
    assert [i.message_id for i in everything.items] == [f"r-{n}" for n in reversed(range(7))]
    assert everything.next_cursor is None and everything.complete
    assert [i.message_id for i in recent(redis_client, layout=LAYOUT, state="failed").items] == ["r-6", "r-3", "r-0"]
    assert [i.message_id for i in recent(redis_client, layout=LAYOUT, stream=LOW, service="b").items] == ["r-6", "r-4"]
    assert [i.message_id for i in recent(redis_client, layout=LAYOUT, namespace="ns2").items] == ["r-6"]

    first = recent(redis_client, layout=LAYOUT, limit=3)
    assert [i.message_id for i in first.items] == ["r-6", "r-5", "r-4"] and first.next_cursor
    ended(store, "r-new", stream=STREAM, service="a", namespace="ns1", state=State.COMPLETED)  # arrives meanwhile
    second = recent(redis_client, layout=LAYOUT, limit=3, cursor=first.next_cursor)
    assert [i.message_id for i in second.items] == ["r-3", "r-2", "r-1"]
    third = recent(redis_client, layout=LAYOUT, limit=3, cursor=second.next_cursor)
    assert [i.message_id for i in third.items] == ["r-0"] and third.next_cursor is None

    cut = everything.items[2].at_ms
    assert {i.message_id for i in recent(redis_client, layout=LAYOUT, since_ms=cut).items} >= {"r-4", "r-new"}
    with pytest.raises(ValueError):
        recent(redis_client, layout=LAYOUT, state="nonsense")


def test_recent_of_an_expired_record_reads_the_event(redis_client: redis.Redis) -> None:
    append_event(redis_client, message_id="gone", status=99, detail={"error": {"errorCode": "Cancelled"}})
    (item,) = recent(redis_client, layout=LAYOUT).items
    assert (item.state, item.recorded, item.error_code) == (State.CANCELLED, False, "Cancelled")


def test_backlog_of_a_paused_stream_keeps_its_age(redis_client: redis.Redis, reader: StreamReader) -> None:
    first = redis_client.xadd(STREAM, {"payload": payload("b-1")}).decode()
    redis_client.xadd(STREAM, {"payload": payload("b-2")})
    PauseStore(redis_client).pause_stream(STREAM, at_ms=1_700_000_000_000, by="ops")
    rows = {b.stream: b for b in backlog(redis_client, layout=LAYOUT)}
    default = rows[STREAM]
    assert (default.length, default.unread, default.pending) == (2, 2, 0)
    assert default.oldest_unread_ms == int(first.split("-")[0])
    assert default.paused is not None and default.paused.by == "ops"
    assert rows[LOW].paused is None and rows[LOW].oldest_unread_ms is None
    assert default.age_ms(int(first.split("-")[0]) + 5000) == 5000
