"""The events stream against a real redis-server: fields, cap, reading and following."""

from __future__ import annotations

import threading

import redis

from runner.store.events import append_event, read_events
from tests.support.ports import wait_for


def test_append_and_read(redis_client: redis.Redis) -> None:
    first = append_event(
        redis_client,
        message_id="m1",
        status=0,
        detail={"jobId": "uid", "jobName": "j-1"},
        job_name="j-1",
        now=1700000000.25,
    )
    append_event(redis_client, message_id="m1", status=3, detail={"error": {"errorCode": 1, "message": "boom"}})
    raw = redis_client.xrange("ksr:events", count=1)[0][1]
    assert raw == {
        b"id": b"m1",
        b"status": b"0",
        b"detail": b'{"jobId":"uid","jobName":"j-1"}',
        b"job": b"j-1",
        b"ts": b"1700000000250",
    }
    events = read_events(redis_client)
    assert [(e.message_id, e.status, e.job_name) for e in events] == [("m1", 0, "j-1"), ("m1", 3, None)]
    assert events[1].detail == {"error": {"errorCode": 1, "message": "boom"}}
    assert events[0].event_id == first and events[0].ts == 1700000000250
    assert [e.status for e in read_events(redis_client, after=first)] == [3]


def test_events_capped_by_length(redis_client: redis.Redis) -> None:
    for i in range(2000):
        append_event(redis_client, message_id=f"m{i}", status=2, detail={"duration": i}, maxlen=500)
    length = redis_client.xlen("ksr:events")
    assert 500 <= length < 700  # MAXLEN ~ trims whole nodes: near the cap, never below
    assert read_events(redis_client, count=1)[0].message_id != "m0"


def test_follow_blocks_until_an_event(redis_client: redis.Redis, redis_server) -> None:
    got: list = []
    t = threading.Thread(target=lambda: got.append(read_events(redis_server.client(), after="$", block_ms=4000)))
    t.start()
    wait_for(
        lambda: any(c.get("cmd") == "xread" for c in redis_client.client_list()), timeout=5, what="a blocked XREAD"
    )
    append_event(redis_client, message_id="m9", status=2, detail={"duration": 3})
    t.join(timeout=10)
    assert [e.message_id for e in got[0]] == ["m9"]
