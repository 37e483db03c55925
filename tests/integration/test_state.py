"""StateStore against a real redis-server: claim/dedup, job records, TTLs, callbacks, fencing."""

from __future__ import annotations

import threading

import pytest
import redis

from runner.store.state import ClaimStatus, StaleTerm, StateStore
from tests.support.clocks import clock_at


@pytest.fixture
def store(redis_client: redis.Redis) -> StateStore:
    return StateStore(redis_client, ttl_seconds=3600, clock=clock_at(1700000000.0))


def claim(store: StateStore, message_id: str = "m1", term: int | None = None):
    return store.claim(message_id, stream="ksr:jobs:default", entry_id="1-0", term=term)


def test_claim_new_then_resume_then_duplicate(store: StateStore) -> None:
    first = claim(store)
    assert first.status is ClaimStatus.NEW
    assert first.record == {
        "state": "claimed",
        "stream": "ksr:jobs:default",
        "entry_id": "1-0",
        "claimed_at": "1700000000000",
    }
    assert claim(store).status is ClaimStatus.RESUME  # claimed, no Job: a crash in between
    store.record_job("m1", job_name="my-job-abc", namespace="ns", job_uid="uid-1", webhook="http://h/x")
    dup = claim(store)
    assert dup.status is ClaimStatus.DUPLICATE
    assert dup.record["job_name"] == "my-job-abc" and dup.record["webhook"] == "http://h/x"
    assert dup.record["state"] == "created"


def test_concurrent_claims_only_one_new(redis_client: redis.Redis, redis_server) -> None:
    results: list[ClaimStatus] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        s = StateStore(redis_server.client(), ttl_seconds=60)
        barrier.wait(timeout=10)
        results.append(claim(s, "race").status)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 16
    assert results.count(ClaimStatus.NEW) == 1 and results.count(ClaimStatus.RESUME) == 15


def test_record_job_is_active_without_ttl(store: StateStore) -> None:
    claim(store)
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u")
    assert store.active_ids() == {"m1"}
    assert store.ttl("m1") == -1
    store.set_state("m1", "running", pod_name="j-xyz")
    assert store.get("m1")["state"] == "running" and store.ttl("m1") == -1
    assert store.active_records() == {"m1": store.get("m1")}


def test_finish_sets_ttl_and_leaves_active_set(store: StateStore) -> None:
    claim(store)
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u")
    store.finish("m1", "completed", duration=12)
    assert store.active_ids() == set()
    assert 3500 < store.ttl("m1") <= 3600
    record = store.get("m1")
    assert record["state"] == "completed" and record["duration"] == "12" and record["finished_at"]
    assert claim(store).status is ClaimStatus.DUPLICATE  # late duplicate still caught
    with pytest.raises(ValueError):
        store.finish("m1", "running")
    with pytest.raises(ValueError):
        store.set_state("m1", "failed")


def test_terminal_record_without_job_is_duplicate_until_released(store: StateStore, redis_client: redis.Redis) -> None:
    claim(store)
    store.finish("m1", "cancelled", cancel_stage="pending")
    assert claim(store).status is ClaimStatus.DUPLICATE
    store.release("m1")
    assert store.get("m1") is None
    assert claim(store).status is ClaimStatus.NEW


def test_a_dead_record_without_a_job_is_claimed_afresh(store: StateStore) -> None:
    """`dead` ends a message that never got a Job (a dead letter): the id is no duplicate."""
    claim(store)
    store.redis.hset(store.key("m1"), mapping={"state": "dead", "dead_reason": "api_rejected", "cb_99": "1"})
    result = claim(store)
    assert result.status is ClaimStatus.NEW
    assert dict(result.record) == {
        "state": "claimed",
        "stream": "ksr:jobs:default",
        "entry_id": "1-0",
        "claimed_at": "1700000000000",
    }  # the dead letter's fields (and its marks) are gone with it
    assert store.ttl("m1") == -1  # a live claim again: no expiry
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u")
    # A dead record of a Job (the table has no such move; an older runner's) stays a duplicate.
    store.redis.hset(store.key("m1"), "state", "dead")
    assert claim(store).status is ClaimStatus.DUPLICATE


def test_a_claim_without_a_job_whose_cancel_was_requested_ends_cancelled(store: StateStore) -> None:
    claim(store)
    store.redis.hset(store.key("m1"), "cancel_requested", "1700000000000")  # what cancel.lua writes
    result = claim(store)
    assert result.status is ClaimStatus.DUPLICATE
    assert (result.record.state, result.record["cancel_stage"]) == ("cancelled", "pending")
    assert 0 < store.ttl("m1") <= store.ttl_seconds


def test_expired_record_looks_absent(store: StateStore, redis_client: redis.Redis) -> None:
    claim(store)
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u")
    store.finish("m1", "completed")
    redis_client.delete(store.key("m1"))  # what the TTL does, without waiting for it
    assert claim(store).status is ClaimStatus.NEW


def test_active_records_pages_and_reports_missing(store: StateStore, redis_client: redis.Redis) -> None:
    for i in range(1200):
        store.record_job(f"m{i}", job_name=f"j{i}", namespace="ns", job_uid=str(i))
    redis_client.delete(store.key("m7"))
    records = store.active_records()
    assert len(records) == 1200 and records["m7"] == {} and records["m8"]["job_name"] == "j8"


def test_mark_callback_sent_first_caller_wins(store: StateStore, redis_server) -> None:
    claim(store)
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u")
    results: list[bool] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        s = StateStore(redis_server.client(), ttl_seconds=60)
        barrier.wait(timeout=10)
        results.append(s.mark_callback_sent("m1", 0))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == [False] * 9 + [True]
    assert store.mark_callback_sent("m1", 1) is True
    assert set(store.get("m1").callbacks()) == {0, 1}


def test_mark_callback_without_record_sends_and_stores_nothing(store: StateStore) -> None:
    assert store.mark_callback_sent("gone", 2) is True
    assert store.get("gone") is None


def test_fencing_refuses_a_stale_term(store: StateStore) -> None:
    assert store.current_term() is None
    assert store.advance_term(3) == 3
    assert store.advance_term(2) == 3  # never goes back
    with pytest.raises(StaleTerm) as info:
        claim(store, term=2)
    assert (info.value.term, info.value.current) == (2, 3)
    assert store.get("m1") is None  # nothing written
    assert claim(store, term=3).status is ClaimStatus.NEW
    assert store.get("m1")["term"] == "3"
    store.advance_term(4)
    for write in (
        lambda: store.record_job("m1", job_name="j", namespace="ns", job_uid="u", term=3),
        lambda: store.set_state("m1", "running", term=3),
        lambda: store.finish("m1", "completed", term=3),
        lambda: store.mark_callback_sent("m1", 0, term=3),
        lambda: store.release("m1", term=3),
    ):
        with pytest.raises(StaleTerm):
            write()
    assert store.get("m1")["state"] == "claimed" and store.active_ids() == set()
    with pytest.raises(StaleTerm):
        store.fence(3)
    store.fence(4)
    store.fence(5)
    store.record_job("m1", job_name="j", namespace="ns", job_uid="u", term=4)  # the current term writes
    assert store.get("m1")["term"] == "4"
