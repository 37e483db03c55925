"""Delayed messages, cancel at every stage, and the producer API against the real pipeline:
real Redis, the real control plane with kwok, a real RQ worker and webhook receiver."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from runner.client import AlreadyFinished, Client, WaitTimeout
from runner.errors import InvalidMessage
from runner.settings import Settings
from runner.store.events import read_events
from tests.support.kube import job_message_ids, managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
POLL = 1.0


@pytest.fixture
def env(redis_server, redis_client, kube, namespace):
    return base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_SCHEDULE_POLL=str(POLL)
    )


@pytest.fixture
def client(env, redis_client):
    c = Client(Settings.from_env(env))
    yield c
    c.close()


def _created_at(redis_client, mid: str) -> float | None:
    """When callback 0 (the Job created) was emitted, from the events stream (ms)."""
    for event in read_events(redis_client, count=10_000):
        if event.message_id == mid and event.status == 0:
            return event.ts / 1000.0
    return None


def _entry_time(entry_id: str) -> float:
    return int(entry_id.split("-")[0]) / 1000.0


def test_delay_seconds_makes_no_job_before_it_is_due_and_one_within_a_poll(
    env, kube, namespace, redis_client, receiver
):
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        added = _entry_time(xadd(redis_client, STREAM, {**message("late-1", namespace), "delaySeconds": 3}))
        wait_for(lambda: redis_client.zcard(f"{STREAM}:scheduled") == 1, timeout=20, what="the message held")
        assert job_message_ids(kube, namespace) == []  # held, acked, no Job yet
        created = wait_for(lambda: _created_at(redis_client, "late-1"), timeout=20, what="the Job created")
    assert created - added >= 3.0
    assert created - added <= 3.0 + POLL
    assert job_message_ids(kube, namespace) == ["late-1"]
    assert redis_client.zcard(f"{STREAM}:scheduled") == 0
    assert redis_client.hlen(f"{STREAM}:scheduled:payloads") == 0


def test_run_at_in_the_past_runs_at_once_and_the_same_id_twice_makes_one_job(env, kube, namespace, redis_client):
    past = datetime.fromtimestamp(time.time() - 3600, tz=UTC).isoformat()
    with runner_thread(env, api_client=kube.api_client()):
        added = _entry_time(xadd(redis_client, STREAM, {**message("past-1", namespace), "runAt": past}))
        created = wait_for(lambda: _created_at(redis_client, "past-1"), timeout=20, what="the Job created")
        assert created - added < POLL
        for _ in range(2):  # scheduled twice, one due in 2 s
            xadd(redis_client, STREAM, {**message("twice-1", namespace), "delaySeconds": 2})
        wait_for(lambda: _created_at(redis_client, "twice-1"), timeout=20, what="the Job of twice-1")
        wait_for(
            lambda: (
                redis_client.xinfo_groups(STREAM)[0]["lag"] == 0
                and redis_client.xinfo_groups(STREAM)[0]["pending"] == 0
            ),
            timeout=20,
            what="every entry handled",
        )
    assert sorted(job_message_ids(kube, namespace)) == ["past-1", "twice-1"]


def test_run_at_too_far_ahead_is_dead_lettered_naming_the_field(env, kube, namespace, redis_client):
    far = datetime.fromtimestamp(time.time() + 40 * 86400, tz=UTC).isoformat()
    with runner_thread(env, api_client=kube.api_client()):
        xadd(redis_client, STREAM, {**message("far-1", namespace), "runAt": far})
        dead = wait_for(lambda: redis_client.xrange(f"{STREAM}:dead"), timeout=20, what="a dead letter")
    error = dead[0][1][b"error"].decode()
    assert error.startswith("runAt: due ") and "more than KSR_SCHEDULE_MAX_AHEAD (30d00h) allows" in error, error


def test_client_refuses_invalid_timing_before_xadd(client, redis_client, namespace):
    with pytest.raises(InvalidMessage) as e:
        client.submit({**message("both-1", namespace), "runAt": "2030-01-01T00:00:00Z"}, delay=5)
    assert str(e.value) == "runAt: give either runAt or delaySeconds, not both"
    with pytest.raises(InvalidMessage) as e:
        client.submit({**message("naive-1", namespace), "runAt": "2030-01-01T00:00:00"})
    assert str(e.value) == "runAt: must carry a UTC offset (Z or +01:00), got '2030-01-01T00:00:00'"
    with pytest.raises(InvalidMessage) as e:
        client.submit(message("ahead-1", namespace), delay=31 * 86400)
    assert str(e.value).startswith("delaySeconds: due 31d00h ahead")
    assert redis_client.exists(STREAM) == 0  # nothing reached the stream


def _cancelled(receiver, mid: str) -> list[dict]:
    return [b for b in receiver.bodies(mid) if b["status"] == 99]


def test_cancel_at_each_stage_gives_one_cancelled_callback(env, kube, namespace, redis_client, receiver, client):
    hook = receiver.url
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        # scheduled: held for an hour, then cancelled
        client.submit(message("c-sched", namespace, webhook=hook), delay=3600)
        wait_for(lambda: client.status("c-sched").where == "scheduled", timeout=20, what="c-sched scheduled")
        assert client.cancel("c-sched").stage == "scheduled"
        # pending: cancelled before the runner reads it (the stream is not read: another id blocks none)
        pending = message("c-pend", namespace, webhook=hook)
        assert client.cancel("c-pend").stage == "pending"
        xadd(redis_client, STREAM, pending)
        # running: a Job that would run for a minute
        client.submit(
            message("c-run", namespace, webhook=hook, command=["/bin/sh", "-c", "sleep 60"]),
        )
        wait_for(lambda: client.status("c-run").where == "running", timeout=30, what="c-run running")
        job = wait_for(lambda: managed_jobs(kube, namespace), timeout=30, what="the Job of c-run")[0]
        assert client.cancel("c-run").stage == "running"
        for mid in ("c-sched", "c-pend", "c-run"):
            wait_for(lambda mid=mid: _cancelled(receiver, mid), timeout=30, what=f"99 for {mid}")
        wait_for(lambda: managed_jobs(kube, namespace) == [], timeout=30, what="the Job deleted")
    for mid, stage in (("c-sched", "scheduled"), ("c-pend", "pending"), ("c-run", "running")):
        bodies = _cancelled(receiver, mid)
        assert len(bodies) == 1, (mid, bodies)
        assert bodies[0]["detail"]["error"] == {"errorCode": "Cancelled", "message": f"cancelled while {stage}"}
        assert client.status(mid).state == "cancelled"
    assert [b["status"] for b in receiver.bodies("c-sched")] == [99]
    assert [b["status"] for b in receiver.bodies("c-pend")] == [99]
    assert receiver.statuses()["c-run"][-1] == 99 and receiver.statuses()["c-run"].count(99) == 1
    assert job.metadata.annotations["kube-stream-runner/message-id"] == "c-run"
    assert job_message_ids(kube, namespace) == []
    with pytest.raises(AlreadyFinished) as e:  # finished: refused, nothing changes
        client.cancel("c-run")
    assert str(e.value) == "message c-run has already finished (cancelled); nothing to cancel"


def test_wait_returns_when_the_job_ends_and_times_out_cleanly(env, kube, namespace, client):
    with runner_thread(env, api_client=kube.api_client()):
        mid = client.submit(message("w-1", namespace), delay=1)
        assert client.status(mid).where == "pending"  # in the stream, not read yet... or already held
        with pytest.raises(WaitTimeout) as e:
            client.wait(mid, timeout=0.3)
        assert e.value.status.where in ("pending", "scheduled")
        status = client.wait(mid, timeout=180)
    assert status.where == "finished" and status.state == "completed"
    assert status.record["job_name"].startswith("job-")
    with pytest.raises(WaitTimeout):
        client.wait("never-sent", timeout=0.2)
