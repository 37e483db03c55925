"""Cancels that meet a message in an awkward place, against a real redis-server and a runner
(local executor) in this process: a running message that also has a held copy under the same
id, and a message claimed by a leader that died (or a create that waits) before any Job
existed. Each ends `cancelled` with exactly one 99, and the second never starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.client import Client
from runner.settings import Settings
from runner.store.events import read_events
from runner.store.state import StateStore
from runner.store.stream_reader import StreamReader
from runner.store.waiting import WaitingCreates, waiting_index
from tests.support.clocks import clock_at
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server, redis_client, tmp_path):
    return base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, KSR_RUNTIME_DIR=str(tmp_path))


@pytest.fixture
def client(env):
    c = Client(Settings.from_env(env))
    yield c
    c.close()


def _statuses(redis_client, mid: str) -> list[int]:
    return [e.status for e in read_events(redis_client, count=10_000) if e.message_id == mid]


def _cancel_detail(redis_client, mid: str) -> list[dict]:
    return [e.detail for e in read_events(redis_client, count=10_000) if e.message_id == mid and e.status == 99]


def test_cancel_of_a_running_message_with_a_held_copy_cancels_the_running_one(env, redis_client, client):
    sleeper = {"command": ["sleep", "60"]}  # no shell: the kill reaches the process itself
    with runner_thread(env) as runner:
        client.submit(message("twin-1", "default", **sleeper), delay=3600)
        wait_for(lambda: client.status("twin-1").where == "scheduled", timeout=20, what="the held copy")
        client.submit(message("twin-1", "default", **sleeper))  # the same id, to run now
        wait_for(lambda: redis_client.hget("ksr:msg:twin-1", "state") == b"running", timeout=20, what="running")
        assert redis_client.sismember("ksr:active", "twin-1")
        cancellation = client.cancel("twin-1")
        wait_for(
            lambda: not redis_client.sismember("ksr:active", "twin-1"),
            timeout=20,
            what="twin-1 to leave ksr:active (it holds a slot of KSR_MAX_ACTIVE_JOBS)",
        )
        wait_for(lambda: 99 in _statuses(redis_client, "twin-1"), timeout=20, what="the 99 of twin-1")
        wait_for(lambda: runner.local.running() == set(), timeout=20, what="the local process killed")
    assert cancellation.stage == "running"
    assert _statuses(redis_client, "twin-1") == [0, 1, 99]
    assert _cancel_detail(redis_client, "twin-1") == [
        {"error": {"errorCode": "Cancelled", "message": "cancelled while running"}}
    ]
    record = StateStore(redis_client, ttl_seconds=3600).get("twin-1")
    assert (record.state, record.get("cancel_stage"), record.job_name[:4]) == ("cancelled", "running", "job-")
    assert 0 < redis_client.ttl("ksr:msg:twin-1") <= 3600  # ended: kept for late duplicates only
    # The held copy is the same id, a duplicate: dropped, so it never comes back as a second run.
    assert redis_client.zcard(f"{STREAM}:scheduled") == 0
    assert redis_client.hlen(f"{STREAM}:scheduled:payloads") == 0
    assert redis_client.smembers("ksr:cancels") == set()


def _claimed_by_a_dead_leader(redis_client, mid: str, msg: dict) -> str:
    """XADD `msg`, read it as consumer `dead-leader` and claim its id, as a leader does just
    before it dies: the entry is pending to nobody alive and the record says `claimed`."""
    entry_id = xadd(redis_client, STREAM, msg)
    reader = StreamReader(redis_client, streams=[STREAM], group="ksr", consumer="dead-leader", count=10, block_ms=0)
    reader.ensure_groups()
    (entry,) = reader.read_batch()
    assert entry.entry_id == entry_id
    claim = StateStore(redis_client, ttl_seconds=3600).claim(mid, stream=STREAM, entry_id=entry_id)
    assert claim.status.value == "NEW"
    return entry_id


def _toucher(path: Path) -> dict:
    return {"command": ["/bin/sh", "-c", f"touch {path}; sleep 60"]}


def test_a_cancel_after_the_claim_of_a_dead_leader_never_starts_the_job(env, redis_client, client, tmp_path):
    ran = tmp_path / "ran"
    _claimed_by_a_dead_leader(redis_client, "orphan-1", message("orphan-1", "default", **_toucher(ran)))
    assert client.cancel("orphan-1").stage in ("pending", "running")  # accepted: the leader carries it out
    with runner_thread(env):  # the next leader: takeover reclaims the entry and resumes the claim
        wait_for(lambda: 99 in _statuses(redis_client, "orphan-1"), timeout=20, what="the 99 of orphan-1")
        wait_for(lambda: redis_client.xinfo_groups(STREAM)[0]["pending"] == 0, timeout=20, what="the entry acked")
        wait_for(lambda: redis_client.smembers("ksr:cancels") == set(), timeout=20, what="the cancel carried out")
    assert _statuses(redis_client, "orphan-1") == [99], "a cancelled message must never start"
    assert not ran.exists(), "the cancelled message's command ran"
    record = StateStore(redis_client, ttl_seconds=3600).get("orphan-1")
    assert (record.state, record.job_name) == ("cancelled", "")
    assert _cancel_detail(redis_client, "orphan-1") == [
        {"error": {"errorCode": "Cancelled", "message": "cancelled while pending"}}
    ]
    assert redis_client.scard("ksr:active") == 0
    assert 0 < redis_client.ttl("ksr:msg:orphan-1") <= 3600


def test_a_cancel_while_the_create_waits_never_starts_the_job(env, redis_client, client, tmp_path):
    """The create was refused for now (a full ResourceQuota) and waits in ksr:waiting, its
    claim without a Job; the cancel comes meanwhile, then the wait is over."""
    ran = tmp_path / "ran"
    entry_id = xadd(redis_client, STREAM, message("quota-1", "default", **_toucher(ran)))
    reader = StreamReader(redis_client, streams=[STREAM], group="ksr", consumer="earlier", count=10, block_ms=0)
    reader.ensure_groups()
    (entry,) = reader.read_batch()
    StateStore(redis_client, ttl_seconds=3600).claim("quota-1", stream=STREAM, entry_id=entry_id)
    waiting = WaitingCreates(redis_client, index=waiting_index("ksr:active"), group="ksr", clock=clock_at(0.0))
    waiting.defer(entry, message_id="quota-1", due=0.0, error="403 exceeded quota", term=0)  # due at once
    assert client.cancel("quota-1").stage in ("pending", "running")
    with runner_thread(env):
        wait_for(lambda: 99 in _statuses(redis_client, "quota-1"), timeout=20, what="the 99 of quota-1")
        wait_for(lambda: waiting.count() == 0, timeout=20, what="the wait over")
        wait_for(lambda: redis_client.smembers("ksr:cancels") == set(), timeout=20, what="the cancel carried out")
    assert _statuses(redis_client, "quota-1") == [99], "a cancelled message must never start"
    assert not ran.exists(), "the cancelled message's command ran"
    record = StateStore(redis_client, ttl_seconds=3600).get("quota-1")
    assert (record.state, record.job_name) == ("cancelled", "")
