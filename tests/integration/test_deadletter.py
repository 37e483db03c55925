"""Dead-letter streams against a real redis-server: fields, atomic ack, replay, purge."""

from __future__ import annotations

import threading

import pytest
import redis

from runner.store.deadletter import (
    DeadRecord,
    Leftovers,
    dead_letter,
    get_dead,
    is_poison,
    list_dead,
    purge_dead,
    replay_dead,
)
from runner.store.events import read_events
from runner.store.schedule import ScheduledStore
from runner.store.state import StaleTerm, StateStore
from runner.store.stream_inspection import StreamInspection
from runner.store.stream_reader import StreamReader
from runner.store.waiting import WaitingCreates
from tests.support.clocks import clock_at

STREAM = "t:jobs:default"


@pytest.fixture
def rd(redis_client: redis.Redis) -> StreamReader:
    reader = StreamReader(redis_client, streams=[STREAM], group="ksr", consumer="c1", count=10, block_ms=0)
    reader.ensure_groups()
    return reader


def pending_count(r: redis.Redis) -> int:
    return StreamInspection(r, streams=[STREAM], group="ksr").pending_summary(STREAM).count


def delivered(r: redis.Redis, rd: StreamReader, *payloads: bytes, extra: dict | None = None):
    for p in payloads:
        r.xadd(STREAM, {"payload": p, **(extra or {})})
    return rd.read_batch()


def test_dead_letter_fields_and_ack(redis_client: redis.Redis, rd: StreamReader) -> None:
    (entry,) = delivered(redis_client, rd, b'{"id": "m1", "job": {"gpuNumber": 9}}')
    dead_id = dead_letter(
        redis_client, entry, group="ksr", reason="invalid", error="job.gpuNumber: must be 1..4, got 9", now=1700000000.5
    )
    assert pending_count(redis_client) == 0  # acked with it
    (row,) = redis_client.xrange(STREAM + ":dead")
    assert row[0].decode() == dead_id
    assert row[1] == {
        b"payload": b'{"id": "m1", "job": {"gpuNumber": 9}}',
        b"reason": b"invalid",
        b"error": b"job.gpuNumber: must be 1..4, got 9",
        b"deliveries": b"1",
        b"original_id": entry.entry_id.encode(),
        b"original_stream": STREAM.encode(),
        b"dead_at": b"1700000000500",
    }
    dead = get_dead(redis_client, STREAM, dead_id)
    assert dead is not None and dead.reason == "invalid" and dead.original_id == entry.entry_id
    assert dead.deliveries == 1 and dead.dead_at == 1700000000500


def test_dead_letter_uses_the_group_counter(redis_client: redis.Redis, rd: StreamReader) -> None:
    delivered(redis_client, rd, b"x")
    rd.rescan_pending()
    (again,) = rd.read_batch()
    rd.rescan_pending()
    (third,) = rd.read_batch()
    assert third.deliveries == 3
    assert is_poison(third.deliveries, 2) and not is_poison(third.deliveries, 3)
    assert not is_poison(100, 0)  # 0 disables
    dead_id = dead_letter(redis_client, third, group="ksr", reason="poison", error="failed 3 times")
    assert get_dead(redis_client, STREAM, dead_id).deliveries == 3


def test_dead_letter_acks_only_when_the_dead_entry_is_written(redis_client: redis.Redis, rd: StreamReader) -> None:
    (entry,) = delivered(redis_client, rd, b"x")
    redis_client.set(STREAM + ":dead", "not a stream")  # makes the XADD fail
    with pytest.raises(redis.ResponseError):
        dead_letter(redis_client, entry, group="ksr", reason="invalid", error="e")
    assert pending_count(redis_client) == 1  # not acked, so not lost


def test_other_fields_survive_dead_letter_and_replay(redis_client: redis.Redis, rd: StreamReader) -> None:
    (entry,) = delivered(redis_client, rd, b"p", extra={"trace": "abc"})
    dead_id = dead_letter(redis_client, entry, group="ksr", reason="policy", error="job.namespace: not allowed")
    assert get_dead(redis_client, STREAM, dead_id).extra_fields == {b"trace": b"abc"}
    new_id = replay_dead(redis_client, STREAM, dead_id)
    assert redis_client.xrange(STREAM, new_id, new_id)[0][1] == {b"payload": b"p", b"trace": b"abc"}


def test_replay_moves_the_entry_back_once(redis_client: redis.Redis, rd: StreamReader) -> None:
    (entry,) = delivered(redis_client, rd, b"payload-1")
    dead_id = dead_letter(redis_client, entry, group="ksr", reason="api_rejected", error="spec: invalid")
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(replay_dead(redis_client, STREAM, dead_id))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    new_ids = [r for r in results if r is not None]
    assert len(new_ids) == 1 and len(results) == 8
    assert redis_client.xlen(STREAM + ":dead") == 0
    (again,) = rd.read_batch()
    assert again.entry_id == new_ids[0] and again.fields == {b"payload": b"payload-1"}
    assert replay_dead(redis_client, STREAM, dead_id) is None


def test_replay_refuses_an_entry_from_another_stream(redis_client: redis.Redis, rd: StreamReader) -> None:
    (entry,) = delivered(redis_client, rd, b"x")
    dead_id = dead_letter(redis_client, entry, group="ksr", reason="invalid", error="e")
    redis_client.xadd("t:other:dead", redis_client.xrange(STREAM + ":dead")[0][1], id=dead_id)
    with pytest.raises(redis.ResponseError, match="WRONGSTREAM"):
        replay_dead(redis_client, "t:other", dead_id)


def test_list_and_purge(redis_client: redis.Redis, rd: StreamReader) -> None:
    entries = delivered(redis_client, rd, b"a", b"b", b"c", b"d")
    ids = [dead_letter(redis_client, e, group="ksr", reason="invalid", error=f"e{n}") for n, e in enumerate(entries)]
    assert [d.dead_id for d in list_dead(redis_client, STREAM)] == ids
    assert [d.payload for d in list_dead(redis_client, STREAM, count=2, start=ids[1])] == [b"b", b"c"]
    assert purge_dead(redis_client, STREAM, [ids[0], "0-1"]) == 1
    assert purge_dead(redis_client, STREAM, []) == 0
    assert purge_dead(redis_client, STREAM, "all") == 3
    assert list_dead(redis_client, STREAM) == [] and get_dead(redis_client, STREAM, ids[1]) is None


def test_dead_stream_is_capped(redis_client: redis.Redis, rd: StreamReader) -> None:
    pipe = redis_client.pipeline(transaction=False)
    for i in range(300):
        pipe.xadd(STREAM, {"payload": str(i)})
    pipe.execute()
    rd.count = 300
    for e in rd.read_batch():
        dead_letter(redis_client, e, group="ksr", reason="invalid", error="e", maxlen=100)
    assert 100 <= redis_client.xlen(STREAM + ":dead") < 300


def _leftovers(state: StateStore, waiting: WaitingCreates, entry, mid: str) -> Leftovers:
    member = waiting.member(entry)
    return Leftovers(
        message_id=mid,
        record_key=state.key(mid),
        active_key=state.active_key,
        waiting_index=waiting.index,
        waiting_member=member,
        waiting_key=waiting.key(member),
    )


def test_a_dead_letter_ends_a_claim_without_a_job_and_clears_the_entry_s_wait(
    redis_client: redis.Redis, rd: StreamReader
) -> None:
    state = StateStore(redis_client, ttl_seconds=3600)
    waiting = WaitingCreates(redis_client, index="ksr:waiting", group="ksr", clock=clock_at(1700000000.0))
    claimed, recorded = delivered(redis_client, rd, b'{"id": "claimed-only"}', b'{"id": "with-job"}')
    state.claim("claimed-only", stream=STREAM, entry_id=claimed.entry_id)
    state.claim("with-job", stream=STREAM, entry_id=recorded.entry_id)
    state.record_job("with-job", job_name="job-1", namespace="ns", job_uid="u1")
    waiting.defer(claimed, message_id="claimed-only", due=1700000001.0, error="403 exceeded quota", term=1)
    assert pending_count(redis_client) == 1  # the waiting one was acked as it moved
    dead_ids = [
        dead_letter(
            redis_client,
            entry,
            group="ksr",
            reason="create_refused",
            error="gave up",
            now=1700000002.0,
            leftovers=_leftovers(state, waiting, entry, mid),
            record=DeadRecord(ttl_seconds=3600),
        )
        for entry, mid in ((claimed, "claimed-only"), (recorded, "with-job"))
    ]
    record = state.get("claimed-only")
    assert record is not None and record.state == "dead", "a claim without a Job ends dead"
    assert {k: record[k] for k in ("dead_reason", "dead_error", "dead_id", "stream", "entry_id", "finished_at")} == {
        "dead_reason": "create_refused",
        "dead_error": "gave up",
        "dead_id": dead_ids[0],
        "stream": STREAM,
        "entry_id": claimed.entry_id,
        "finished_at": "1700000002000",
    }
    assert 0 < state.ttl("claimed-only") <= 3600
    assert state.claim("claimed-only", stream=STREAM, entry_id="9-9").status.value == "NEW", "a replay starts afresh"
    job = state.get("with-job")
    assert (job.state, job.job_name, "dead_reason" in job) == ("created", "job-1", False), "a Job's record stays"
    assert state.ttl("with-job") == -1
    assert state.active_ids() == {"with-job"}
    assert redis_client.zcard("ksr:waiting") == 0 and not redis_client.keys("ksr:waiting:*")
    assert pending_count(redis_client) == 0
    assert [d.original_id for d in list_dead(redis_client, STREAM)] == [claimed.entry_id, recorded.entry_id]
    (event,) = read_events(redis_client)  # the dead one's; none for the message with a Job
    assert (event.message_id, event.status, event.job_name, event.ts) == ("claimed-only", 99, None, 1700000002000)
    assert event.detail == {"error": {"errorCode": "DeadLettered", "message": "gave up"}, "reason": "create_refused"}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "dead"),  # never claimed: invalid or refused by policy
        ("claimed", "dead"),
        ("dead", "dead"),  # the same id dead-lettered again: the latest dead entry
        ("cancelled", "cancelled"),  # cancelled before it was read: that end stays
        ("completed", "completed"),
    ],
)
def test_which_records_a_dead_letter_ends(redis_client: redis.Redis, rd: StreamReader, before, after) -> None:
    state = StateStore(redis_client, ttl_seconds=3600)
    (entry,) = delivered(redis_client, rd, b'{"id": "m1"}')
    if before is not None:
        redis_client.hset(state.key("m1"), mapping={"state": before, "claimed_at": "1"})
    left = Leftovers(message_id="m1", record_key=state.key("m1"), active_key=state.active_key)
    dead_id = dead_letter(
        redis_client, entry, group="ksr", reason="invalid", error="e", leftovers=left, record=DeadRecord(60)
    )
    record = state.get("m1")
    assert record.state == after
    assert record.get("dead_id") == (dead_id if after == "dead" else None)
    assert [e.message_id for e in read_events(redis_client)] == (["m1"] if after == "dead" else [])


def test_a_dead_letter_without_a_usable_id_writes_no_record_and_no_event(
    redis_client: redis.Redis, rd: StreamReader
) -> None:
    (entry,) = delivered(redis_client, rd, b"this is not json")
    dead_letter(redis_client, entry, group="ksr", reason="invalid", error="payload: not valid JSON")
    assert redis_client.keys("ksr:msg:*") == [] and read_events(redis_client) == []
    assert redis_client.xlen(STREAM + ":dead") == 1
    with pytest.raises(ValueError, match="DeadRecord"):  # an id without its record's TTL: a caller's bug
        left = Leftovers(message_id="m1", record_key="ksr:msg:m1", active_key="ksr:active")
        dead_letter(redis_client, entry, group="ksr", reason="invalid", error="e", leftovers=left)


def test_a_create_refused_that_told_the_producer_adds_no_second_end_event(
    redis_client: redis.Redis, rd: StreamReader
) -> None:
    state = StateStore(redis_client, ttl_seconds=3600)
    (entry,) = delivered(redis_client, rd, b'{"id": "m1"}')
    state.claim("m1", stream=STREAM, entry_id=entry.entry_id)
    state.mark_callback_sent("m1", 99)  # the tracker's 99 CreateRefused, before the dead letter
    left = Leftovers(message_id="m1", record_key=state.key("m1"), active_key=state.active_key)
    dead_letter(
        redis_client, entry, group="ksr", reason="create_refused", error="e", leftovers=left, record=DeadRecord(60)
    )
    record = state.get("m1")
    assert (record.state, record.callbacks()) == ("dead", [99])
    assert read_events(redis_client) == []  # the 99 marked by the tracker was its end


def test_a_delayed_message_under_a_dead_id_is_held_afresh(redis_client: redis.Redis) -> None:
    state = StateStore(redis_client, ttl_seconds=3600)
    store = ScheduledStore(redis_client, streams=[STREAM])
    state.claim("m1", stream=STREAM, entry_id="1-0")
    redis_client.hset(state.key("m1"), mapping={"state": "dead", "dead_reason": "policy"})  # as a dead letter leaves it
    assert store.schedule(STREAM, "m1", due=2e9, payload="{}", term=None) is True
    assert state.get("m1") is None  # it reads as scheduled now
    state.claim("m2", stream=STREAM, entry_id="1-1")
    state.finish("m2", "cancelled")
    assert store.schedule(STREAM, "m2", due=2e9, payload="{}", term=None) is None  # any other end: known


def test_waiting_keeps_the_fields_and_the_first_refusal(redis_client: redis.Redis, rd: StreamReader) -> None:
    clock = clock_at(1700000000.0)
    waiting = WaitingCreates(redis_client, index="ksr:waiting", group="ksr", clock=clock)
    (entry,) = delivered(redis_client, rd, b"\xff not utf-8", extra={"trace": b"\x00\x01"})
    waiting.defer(entry, message_id="m", due=clock.time() + 5, error="429 first", term=1)
    assert pending_count(redis_client) == 0
    assert waiting.due(limit=10) == []
    clock.advance(6)
    waiting.defer(entry, message_id="m", due=clock.time() - 1, error="503 second", term=1)
    (w,) = waiting.due(limit=10)
    got = (w.entry.stream, w.entry.entry_id, w.entry.fields, w.entry.deliveries)
    assert got == (entry.stream, entry.entry_id, entry.fields, entry.deliveries)  # byte for byte
    assert (w.since, w.tries, w.error) == (1700000000.0, 2, "503 second")
    redis_client.set("ksr:term", 5)
    with pytest.raises(StaleTerm):
        waiting.defer(entry, message_id="m", due=clock.time(), error="late", term=4)
    waiting.forget(entry)
    assert waiting.due(limit=10) == [] and not redis_client.keys("ksr:waiting*")
