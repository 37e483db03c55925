"""A message the runner dead-letters ends in a state everyone sees: `Client.wait` and
`Client.status`, `ksr jobs show` and the events stream. Real redis-server, a runner (local
executor) in this process."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from runner.cli import main
from runner.client import Client
from runner.settings import Settings
from runner.store.events import read_events
from runner.store.state import StateStore
from runner.store.stream_reader import StreamReader
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

STREAM = "ksr:jobs:default"


@pytest.fixture
def env(redis_server, redis_client, tmp_path):
    return base_env(
        redis_url=redis_server.url,
        namespace="default",
        kubeconfig=None,
        KSR_RUNTIME_DIR=str(tmp_path),
        KSR_MAX_DELIVERIES="2",
    )


@pytest.fixture
def client(env):
    c = Client(Settings.from_env(env))
    yield c
    c.close()


def ksr(env, *args: str):
    return CliRunner().invoke(main, list(args), env=env)


def _events(redis_client, mid: str):
    return [e for e in read_events(redis_client, count=10_000) if e.message_id == mid]


def test_a_message_refused_by_policy_ends_dead_for_wait_status_show_and_events(env, redis_client, client):
    with runner_thread(env):
        xadd(redis_client, STREAM, message("pol-1", "team-x"))  # KSR_ALLOWED_NAMESPACES=default
        status = client.wait("pol-1", timeout=20)
    assert (status.where, status.state) == ("finished", "dead")
    assert status.record["dead_reason"] == "policy"
    assert status.record["dead_error"].startswith("job.namespace: "), status.record
    (event,) = _events(redis_client, "pol-1")
    assert event.status == 99 and event.job_name is None
    assert event.detail["reason"] == "policy"
    assert event.detail["error"]["errorCode"] == "DeadLettered"
    assert event.detail["error"]["message"] == status.record["dead_error"]
    (dead,) = redis_client.xrange(f"{STREAM}:dead")
    assert status.record["dead_id"] == dead[0].decode()
    assert 0 < redis_client.ttl("ksr:msg:pol-1") <= 3600  # KSR_STATE_TTL
    shown = ksr(env, "jobs", "show", "pol-1", "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert (doc["where"], doc["state"], doc["now"]) == ("finished", "dead", "finished: dead (policy)")
    assert doc["dead_letter"] == {
        "reason": "policy",
        "error": status.record["dead_error"],
        "stream": STREAM,
        "dead_id": dead[0].decode(),
    }
    text = ksr(env, "jobs", "show", "pol-1")
    assert text.exit_code == 0 and text.stdout.startswith("pol-1: finished: dead (policy)\n"), text.output


def test_an_invalid_message_with_an_id_ends_dead_and_one_without_leaves_no_record(env, redis_client, client):
    bad = message("inv-1", "default")
    del bad["job"]["image"]
    with runner_thread(env):
        xadd(redis_client, STREAM, "this is not json")
        xadd(redis_client, STREAM, bad)
        status = client.wait("inv-1", timeout=20)
    assert (status.state, status.record["dead_reason"], status.record["dead_error"]) == (
        "dead",
        "invalid",
        "job.image: required",
    )
    assert redis_client.xlen(f"{STREAM}:dead") == 2
    assert sorted(k.decode() for k in redis_client.keys("ksr:msg:*")) == ["ksr:msg:inv-1"]  # no id: no record
    assert [e.message_id for e in read_events(redis_client, count=100)] == ["inv-1"]


def test_poison_after_a_claim_ends_dead_and_a_replay_runs_it(env, redis_client, client):
    """A leader claimed it, then every delivery broke (simulated with a counter raised past
    KSR_MAX_DELIVERIES=2): the claim without a Job becomes `dead`, and `ksr dead replay`
    still runs the message, without --force."""
    entry_id = xadd(redis_client, STREAM, message("poi-1", "default", command=["true"]))
    reader = StreamReader(redis_client, streams=[STREAM], group="ksr", consumer="gone", count=10, block_ms=0)
    reader.ensure_groups()
    reader.read_batch()
    redis_client.xclaim(STREAM, "ksr", "gone", 0, [entry_id])  # a second delivery
    StateStore(redis_client, ttl_seconds=3600).claim("poi-1", stream=STREAM, entry_id=entry_id)
    with runner_thread(env):
        status = client.wait("poi-1", timeout=20)
        assert (status.state, status.record["dead_reason"], status.record.get("job_name")) == ("dead", "poison", None)
        assert redis_client.hget("ksr:msg:poi-1", "claimed_at") is not None  # the claim's own fields stay
        (dead,) = redis_client.xrange(f"{STREAM}:dead")
        replay = ksr(env, "dead", "replay", dead[0].decode(), "--json")
        assert replay.exit_code == 0, replay.output
        assert json.loads(replay.stdout)[0]["replayed"] is True
        status = client.wait("poi-1", timeout=30)
    assert status.state == "completed"
    assert [e.status for e in _events(redis_client, "poi-1")] == [99, 0, 1, 2]


def test_the_same_id_sent_again_after_its_dead_letter_runs_and_is_held_when_delayed(env, redis_client, client):
    """`dead` ends a message that never got a Job: the id is not a duplicate, so a corrected
    message under it runs (now, or when due), as it did before dead letters had a record."""
    with runner_thread(env):
        xadd(redis_client, STREAM, message("again-1", "team-x"))
        assert client.wait("again-1", timeout=20).state == "dead"
        client.submit(message("again-1", "default", command=["true"]), delay=3600)
        wait_for(lambda: client.status("again-1").where == "scheduled", timeout=20, what="the corrected copy held")
        xadd(redis_client, STREAM, message("again-2", "team-x"))
        assert client.wait("again-2", timeout=20).state == "dead"
        assert client.submit(message("again-2", "default", command=["true"])) == "again-2"
        assert client.wait("again-2", timeout=30).state == "completed"
    assert redis_client.zscore(f"{STREAM}:scheduled", "again-1") is not None
