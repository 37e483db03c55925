"""StreamReader against a real redis-server: priority, pending, takeover, NOGROUP, trimming."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from runner.errors import RedisUnavailable
from runner.store.stream_inspection import StreamInspection
from runner.store.stream_reader import StreamReader
from runner.store.streams import Entry, id_key
from tests.support.ports import wait_for

STREAMS = ["t:jobs:critical", "t:jobs:default", "t:jobs:low"]


def reader(r: redis.Redis, consumer: str = "c1", *, count: int = 10, block_ms: int = 0) -> StreamReader:
    rd = StreamReader(r, streams=STREAMS, group="ksr", consumer=consumer, count=count, block_ms=block_ms)
    rd.ensure_groups()
    return rd


def inspection(r: redis.Redis) -> StreamInspection:
    return StreamInspection(r, streams=STREAMS, group="ksr")


def add(r: redis.Redis, stream: str, n: int, tag: str = "") -> list[str]:
    return [r.xadd(stream, {"payload": f"{tag}{stream}:{i}"}).decode() for i in range(n)]


def fill_pending(r: redis.Redis, stream: str, n: int, consumer: str = "dead") -> list[str]:
    """n entries delivered to `consumer` and never acked (a consumer that died)."""
    reader(r, consumer)  # the group must exist before the entries are delivered
    ids = add(r, stream, n)
    r.xreadgroup("ksr", consumer, {stream: ">"}, count=n)
    return ids


def test_ensure_groups_reads_entries_added_before_the_group(redis_client: redis.Redis) -> None:
    early = add(redis_client, STREAMS[1], 2)
    rd = StreamReader(redis_client, streams=STREAMS, group="ksr", consumer="c1", count=10, block_ms=0)
    assert rd.ensure_groups() == STREAMS
    assert rd.ensure_groups() == []  # BUSYGROUP ignored
    assert [e.entry_id for e in rd.read_batch()] == early


def test_strict_priority_across_streams(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=10)
    for stream in reversed(STREAMS):  # low first, to show arrival order does not matter
        add(redis_client, stream, 3)
    batches = [rd.read_batch() for _ in range(4)]
    assert [{e.stream for e in b} for b in batches[:3]] == [{s} for s in STREAMS]
    assert all(len(b) == 3 and all(e.deliveries == 1 and not e.from_pending for e in b) for b in batches[:3])
    assert batches[3] == []


def test_read_more_never_reads_a_lower_priority_and_never_blocks(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=10, block_ms=5000)
    default = add(redis_client, STREAMS[1], 2)
    add(redis_client, STREAMS[2], 2)
    started = time.monotonic()
    assert rd.read_more(through=STREAMS[0]) == []  # only low and default wait: a critical batch takes neither
    assert time.monotonic() - started < 4.0, "read_more blocked"
    assert [e.entry_id for e in rd.read_more(through=STREAMS[1])] == default
    critical = add(redis_client, STREAMS[0], 1)
    assert [e.entry_id for e in rd.read_more(through=STREAMS[1])] == critical  # higher first
    assert rd.read_more(through=STREAMS[1]) == []
    assert len(rd.read_more(through=STREAMS[2])) == 2


def test_count_limits_a_batch_and_critical_overtakes(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=2)
    add(redis_client, STREAMS[2], 5)
    assert len(rd.read_batch()) == 2
    add(redis_client, STREAMS[0], 1)
    assert [e.stream for e in rd.read_batch()] == [STREAMS[0]]


def _wait_blocked(r: redis.Redis) -> None:
    wait_for(
        lambda: any(c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in r.client_list()),
        timeout=5,
        what="a client blocked in XREADGROUP",
    )


def _read_across(rd: StreamReader, r: redis.Redis, act: Callable[[], object]) -> list:
    """What rd.read_batch() returned in a thread when `act()` ran while the read was blocked."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(rd.read_batch()))
    t.start()
    _wait_blocked(r)
    act()
    t.join(timeout=10)
    return result


@pytest.mark.parametrize("stream", STREAMS)
def test_blocking_read_wakes_for_any_stream(redis_client: redis.Redis, redis_server, stream: str) -> None:
    rd = reader(redis_server.client(), block_ms=4000)
    result: list = []
    t = threading.Thread(target=lambda: result.append(rd.read_batch()))
    started = time.monotonic()
    t.start()
    _wait_blocked(redis_client)
    (added,) = add(redis_client, stream, 1)
    t.join(timeout=10)
    assert time.monotonic() - started < 3.5, "the read waited for its timeout instead of waking"
    assert [(e.stream, e.entry_id) for e in result[0]] == [(stream, added)]


def test_blocking_read_returns_several_streams_in_priority_order(redis_client: redis.Redis, redis_server) -> None:
    rd = reader(redis_server.client(), block_ms=4000)
    pipe = redis_client.pipeline(transaction=True)  # both land before the reader wakes
    pipe.xadd(STREAMS[2], {"payload": "low"})
    pipe.xadd(STREAMS[0], {"payload": "critical"})
    result = _read_across(rd, redis_client, pipe.execute)
    assert [e.stream for e in result[0]] == [STREAMS[0], STREAMS[2]]


def test_block_timeout_returns_empty(redis_client: redis.Redis) -> None:
    assert reader(redis_client, block_ms=50).read_batch() == []


def test_own_pending_entries_come_first_after_reconnect(redis_client: redis.Redis) -> None:
    first = reader(redis_client, "pod-a")
    add(redis_client, STREAMS[2], 3)
    unacked = first.read_batch()
    add(redis_client, STREAMS[0], 2)  # higher priority, but new
    again = reader(redis_client, "pod-a")  # same consumer name, new process
    batch = again.read_batch()
    assert [e.entry_id for e in batch] == [e.entry_id for e in unacked]
    assert all(e.from_pending and e.deliveries == 2 for e in batch)
    again.ack_many(batch)
    assert {e.stream for e in again.read_batch()} == {STREAMS[0]}
    # drained: the pending list is not scanned again, so no stale re-reads
    assert again.read_batch() == []


def test_own_pending_pages_by_count(redis_client: redis.Redis) -> None:
    fill_pending(redis_client, STREAMS[1], 7, consumer="pod-a")
    rd = reader(redis_client, "pod-a", count=3)
    sizes = [len(rd.read_batch()) for _ in range(4)]
    assert sizes == [3, 3, 1, 0]


def test_connection_error_is_translated_and_rescans_pending(redis_client: redis.Redis, private_redis) -> None:
    client = private_redis.client()
    rd = reader(client, "pod-a")
    add(client, STREAMS[0], 1)
    (entry,) = rd.read_batch()
    private_redis.stop()
    with pytest.raises(RedisUnavailable):
        rd.read_batch()
    private_redis.start()  # no persistence: stream and group are gone
    hooks: list[str] = []
    rd.on_group_recreated.append(hooks.append)
    assert rd.read_batch() == []
    assert hooks == STREAMS


def test_nogroup_at_run_time_recreates_the_group(redis_client: redis.Redis) -> None:
    rd = reader(redis_client)
    seen: list[str] = []
    rd.on_group_recreated.append(seen.append)
    rd.on_group_recreated.append(lambda s: 1 / 0)  # a broken hook must not break reading
    add(redis_client, STREAMS[1], 1)
    assert len(rd.read_batch()) == 1
    redis_client.delete(STREAMS[1])
    assert rd.read_batch() == []
    assert seen == [STREAMS[1]] and rd.groups_recreated == 1
    (new,) = add(redis_client, STREAMS[1], 1)
    assert [e.entry_id for e in rd.read_batch()] == [new]


def test_group_destroyed_while_blocked(redis_client: redis.Redis, redis_server) -> None:
    # Redis 7 wakes the blocked read with an error; the retry then blocks once more.
    rd = reader(redis_server.client(), block_ms=1000)
    result = _read_across(rd, redis_client, lambda: redis_client.delete(STREAMS[2]))
    assert result == [[]]
    assert rd.groups_recreated == 1 and redis_client.exists(STREAMS[2])


def _read_all(rd: StreamReader) -> list[Entry]:
    entries: list[Entry] = []
    for _ in range(1000):  # bounded: each batch is at least one entry
        batch = rd.read_batch()
        if not batch:
            return entries
        entries.extend(batch)
    raise AssertionError("the reader never ran dry")


def test_take_over_claims_5000_pending_entries_and_counts_the_read_not_the_claim(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, "leader", count=1000)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(5000):
        pipe.xadd(STREAMS[1], {"payload": str(i)})
    ids = [i.decode() for i in pipe.execute()]
    redis_client.xreadgroup("ksr", "dead-pod", {STREAMS[1]: ">"}, count=5000)
    fill_pending(redis_client, STREAMS[0], 3, consumer="dead-pod")
    started = time.monotonic()
    assert rd.take_over() == 5003
    assert time.monotonic() - started < 10
    rows = redis_client.xpending_range(STREAMS[1], "ksr", min="-", max="+", count=5000)
    assert {(r["consumer"], r["times_delivered"]) for r in rows} == {(b"leader", 1)}, "a claim is no delivery"
    entries = _read_all(rd)
    assert [e.entry_id for e in entries if e.stream == STREAMS[1]] == ids
    assert len(entries) == 5003
    assert all(e.deliveries == 2 and e.from_pending for e in entries)


def test_take_over_acks_deleted_entries(redis_client: redis.Redis, caplog) -> None:
    ids = fill_pending(redis_client, STREAMS[1], 10)
    redis_client.xdel(STREAMS[1], *ids[2:5])
    rd = reader(redis_client, "leader")
    assert rd.take_over(page=4) == 7  # several pages, deletions spread over them
    assert [e.entry_id for e in _read_all(rd)] == ids[:2] + ids[5:]
    assert inspection(redis_client).pending_summary(STREAMS[1]).count == 7
    assert "no longer exist" in caplog.text


def test_own_pending_deleted_entries_are_acked(redis_client: redis.Redis) -> None:
    ids = fill_pending(redis_client, STREAMS[1], 3, consumer="pod-a")
    redis_client.xdel(STREAMS[1], ids[1])
    rd = reader(redis_client, "pod-a")
    assert [e.entry_id for e in rd.read_batch()] == [ids[0], ids[2]]
    assert inspection(redis_client).pending_summary(STREAMS[1]).count == 2


def test_pending_listing(redis_client: redis.Redis) -> None:
    fill_pending(redis_client, STREAMS[1], 3, consumer="a")
    fill_pending(redis_client, STREAMS[1], 2, consumer="b")
    reader(redis_client)  # the groups
    rows = inspection(redis_client).pending(STREAMS[1], consumer="b")
    assert [(p.consumer, p.deliveries) for p in rows] == [("b", 1), ("b", 1)]
    assert len(inspection(redis_client).pending(STREAMS[1])) == 5
    assert inspection(redis_client).pending(STREAMS[1], min_idle_ms=60_000) == []
    assert inspection(redis_client).pending_summary(STREAMS[1]).consumers == {"a": 3, "b": 2}


def test_stats(redis_client: redis.Redis) -> None:
    reader(redis_client)  # the groups
    add(redis_client, STREAMS[0], 5)
    redis_client.xreadgroup("ksr", "c1", {STREAMS[0]: ">"}, count=2)
    redis_client.xadd(STREAMS[0] + ":dead", {"payload": "x"})
    stats = inspection(redis_client).stats()
    assert stats[STREAMS[0]].length == 5 and stats[STREAMS[0]].pending == 2
    assert stats[STREAMS[0]].lag == 3 and stats[STREAMS[0]].dead == 1
    assert stats[STREAMS[2]].length == 0 and stats[STREAMS[2]].lag == 0
    redis_client.delete(STREAMS[1])
    assert inspection(redis_client).stats()[STREAMS[1]].length == 0  # a vanished stream reports zeros


def test_trim_never_drops_pending_or_undelivered(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=60)
    ids = add(redis_client, STREAMS[1], 100)
    delivered = rd.read_batch()
    rd.ack_many([e for e in delivered if e.entry_id != ids[30]])
    assert rd.trim(STREAMS[1], 10) == 30  # stops at the pending entry
    assert redis_client.xrange(STREAMS[1], ids[30], ids[30])
    rd.ack(delivered[30])
    assert rd.trim(STREAMS[1], 10) == 30  # stops at the first undelivered entry
    assert [i.decode() for i, _ in redis_client.xrange(STREAMS[1])] == ids[60:]
    assert rd.trim(STREAMS[1], 10) == 0
    assert len(rd.read_batch()) == 40  # nothing undelivered was lost


def test_trim_to_maxlen_when_all_done(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=100)
    ids = add(redis_client, STREAMS[1], 50)
    rd.ack_many(rd.read_batch())
    assert rd.trim(STREAMS[1], 45) == 5
    assert redis_client.xrange(STREAMS[1], count=1)[0][0].decode() == ids[5]


def test_trim_without_group_keeps_everything(redis_client: redis.Redis) -> None:
    add(redis_client, "t:nogroup", 20)
    rd = StreamReader(redis_client, streams=["t:nogroup"], group="ksr", consumer="c", count=1, block_ms=0)
    assert rd.trim("t:nogroup", 1) == 0


def test_trim_respects_every_group(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, count=100)
    add(redis_client, STREAMS[1], 20)
    redis_client.xgroup_create(STREAMS[1], "other", id="0")
    redis_client.xreadgroup("other", "x", {STREAMS[1]: ">"}, count=5)  # 5 pending in "other"
    rd.ack_many(rd.read_batch())
    assert rd.trim(STREAMS[1], 1) == 0


def test_id_key_orders_numerically() -> None:
    assert sorted(["10-0", "9-5", "9-10"], key=id_key) == ["9-5", "9-10", "10-0"]


def _owners(r: redis.Redis, stream: str) -> dict[str, tuple[str, int]]:
    rows = r.xpending_range(stream, "ksr", min="-", max="+", count=100)
    return {x["message_id"].decode(): (x["consumer"].decode(), int(x["times_delivered"])) for x in rows}


def _held(r: redis.Redis, stream: str, consumer: str, ids: list[str], idle_ms: int) -> None:
    """`consumer` holds `ids`, delivered once, `idle_ms` ago."""
    r.xclaim(stream, "ksr", consumer, 0, ids, idle=idle_ms, retrycount=1, force=True)


def test_claim_abandoned_takes_other_consumers_entries_idle_past_the_bound(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, "leader")
    stream = STREAMS[1]
    ids = add(redis_client, stream, 7)
    _held(redis_client, stream, "deposed", ids[:3], idle_ms=60_000)
    _held(redis_client, stream, "busy", ids[3:5], idle_ms=0)
    _held(redis_client, stream, "leader", ids[5:], idle_ms=60_000)  # our own: the rescan's business

    assert rd.claim_abandoned(min_idle_ms=30_000) == 3

    assert (
        _owners(redis_client, stream)
        == {
            **{i: ("leader", 1) for i in ids[:3]},  # claimed, not yet delivered again
            **{i: ("busy", 1) for i in ids[3:5]},
            **{i: ("leader", 1) for i in ids[5:]},
        }
    )
    assert rd.claim_abandoned(min_idle_ms=30_000) == 0  # just claimed: no longer idle
    entries = rd.read_batch()  # ours now, read from our own pending list: one delivery each
    assert [(e.entry_id, e.deliveries, e.from_pending) for e in entries] == [(i, 2, True) for i in ids[:3] + ids[5:]]


def test_claim_abandoned_pages_per_consumer_and_drops_deleted_entries(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, "leader")
    stream = STREAMS[2]
    ids = add(redis_client, stream, 5)
    _held(redis_client, stream, "deposed", ids, idle_ms=60_000)
    redis_client.xdel(stream, ids[0])
    assert rd.claim_abandoned(min_idle_ms=30_000, page=3) == 2  # the deleted one was dropped from the PEL
    assert rd.claim_abandoned(min_idle_ms=30_000, page=3) == 2
    assert set(_owners(redis_client, stream)) == set(ids[1:])
    assert [e.entry_id for e in rd.read_batch()] == ids[1:]  # our own pending list, first


def test_read_batch_reads_nothing_once_keep_going_is_false(redis_client: redis.Redis) -> None:
    rd = reader(redis_client, block_ms=200)
    add(redis_client, STREAMS[0], 2)
    started = time.monotonic()
    assert rd.read_batch(keep_going=lambda: False) == []
    assert time.monotonic() - started < 0.2  # no blocking read either
    assert int(redis_client.xpending(STREAMS[0], "ksr")["pending"]) == 0  # nothing delivered to us
    assert len(rd.read_batch()) == 2


def _redis_now_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_stats_oldest_age_is_the_oldest_unacked_entry_by_redis_clock(redis_client: redis.Redis) -> None:
    reader(redis_client)  # the groups
    stream = STREAMS[0]
    now = _redis_now_ms(redis_client)
    # Ids carry their time: entries added 600 s, 300 s and 60 s ago (by Redis's clock).
    for age in (600, 300, 60):
        redis_client.xadd(stream, {"payload": "x"}, id=f"{now - age * 1000}-0")
    assert 599 <= inspection(redis_client).stats()[stream].oldest_age <= 605  # none delivered yet

    (_, entries), *_ = redis_client.xreadgroup("ksr", "c1", {stream: ">"}, count=2)
    assert 599 <= inspection(redis_client).stats()[stream].oldest_age <= 605  # the oldest is pending
    redis_client.xack(stream, "ksr", entries[0][0])
    assert 299 <= inspection(redis_client).stats()[stream].oldest_age <= 305  # the 300 s one is pending
    redis_client.xack(stream, "ksr", entries[1][0])
    assert 59 <= inspection(redis_client).stats()[stream].oldest_age <= 65  # the 60 s one, undelivered
    (_, last), *_ = redis_client.xreadgroup("ksr", "c1", {stream: ">"}, count=5)
    redis_client.xack(stream, "ksr", last[0][0])
    stats = inspection(redis_client).stats()
    assert (stats[stream].oldest_age, stats[stream].length) == (0.0, 3)  # all acked: nothing waits
    assert stats[STREAMS[1]].oldest_age == 0.0  # an empty stream
