"""Creates refused for now wait without using deliveries (issue 10 §6): a ResourceQuota
that is full lets the messages wait until Jobs end and free it, while messages for other
namespaces keep flowing; one that never frees ends, at KSR_CREATE_HORIZON, in a dead letter,
a 99 to the producer with the apiserver's words, and no claim left behind. Real Redis, the
real control plane (its ResourceQuota admission and controller) with kwok, a real RQ worker
and a real receiver."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from runner.store.deadletter import list_dead, replay_dead
from tests.support.kube import delete_namespace, job_message_ids, managed_jobs, new_namespace
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
WAITING = "ksr:waiting"


def _quota(kube: Any, namespace: str, jobs: int) -> None:
    core = client.CoreV1Api(kube.api_client())
    body = {"metadata": {"name": "jobs"}, "spec": {"hard": {"count/jobs.batch": str(jobs)}}}
    try:
        core.create_namespaced_resource_quota(namespace, body)
    except client.ApiException as e:
        if e.status != 409:
            raise
        core.patch_namespaced_resource_quota("jobs", namespace, body)

    def computed() -> bool:  # admission refuses everything until the controller has counted
        status = core.read_namespaced_resource_quota("jobs", namespace).status
        return bool(status and status.hard and status.hard.get("count/jobs.batch") == str(jobs))

    wait_for(computed, timeout=30, what=f"quota of {jobs} Jobs computed in {namespace}")


def test_a_full_quota_makes_messages_wait_not_die(redis_server, redis_client, kube, namespace, receiver):
    other = new_namespace(kube)
    try:
        env = base_env(
            redis_url=redis_server.url,
            namespace=namespace,
            kubeconfig=kube.kubeconfig,
            KSR_ALLOWED_NAMESPACES=f"{namespace},{other}",
            KSR_MAX_DELIVERIES="2",  # a wait that used deliveries would be poison at once
            KSR_CREATE_BACKOFF_CAP="2",
        )
        _quota(kube, namespace, 2)
        # A Job counts against count/jobs.batch until it is deleted: the TTL frees the quota.
        # Twice the quota: two messages wait out one TTL (31 s, its minimum). The wait's
        # schedule (backoff to the cap, the horizon) is tests/unit/test_create_wait.py's.
        ids = [f"quota-{i}" for i in range(4)]
        for mid in ids:
            xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url, ttlSecondsAfterFinished=31))
        most = 0
        with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
            wait_for(lambda: len(managed_jobs(kube, namespace)) == 2, timeout=60, what="2 Jobs, the quota")
            # Waiting for quota in one namespace holds nothing else up.
            xadd(redis_client, STREAM, message("elsewhere", other, webhook=receiver.url))
            wait_for(lambda: job_message_ids(kube, other) == ["elsewhere"], timeout=30, what="the Job elsewhere")
            assert len(managed_jobs(kube, namespace)) == 2, "the first 2 Jobs still hold the quota"
            assert list_dead(redis_client, STREAM) == [], "waiting for quota is not poison"

            def all_done() -> bool:
                nonlocal most
                most = max(most, len(managed_jobs(kube, namespace)))
                return all(receiver.statuses().get(m) == [0, 1, 2] for m in ids)

            wait_for(all_done, timeout=240, interval=0.5, what="callbacks 0, 1, 2 for all 4 messages")
        assert most <= 2
        assert [d.original_id for d in list_dead(redis_client, STREAM)] == []
        assert redis_client.zcard(WAITING) == 0 and not redis_client.keys(WAITING + ":*")
        assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
        records = {m: redis_client.hgetall(f"ksr:msg:{m}") for m in ids}
        assert all(r[b"state"] == b"completed" and r[b"job_name"] for r in records.values()), records
    finally:
        delete_namespace(kube, other)


def test_at_the_horizon_the_producer_hears_99_and_the_claim_is_gone(
    redis_server, redis_client, kube, namespace, receiver
):
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_CREATE_HORIZON="6",
        KSR_CREATE_BACKOFF_CAP="1",
        KSR_MAX_DELIVERIES="1",
    )
    _quota(kube, namespace, 0)
    entry_id = xadd(redis_client, STREAM, message("never", namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: redis_client.hget("ksr:msg:never", "state") == b"claimed", timeout=30, what="the claim")
        wait_for(lambda: receiver.statuses().get("never") == [99], timeout=60, what="callback 99")
        (dead,) = wait_for(lambda: list_dead(redis_client, STREAM), timeout=30, what="the dead letter")
        never = redis_client.hgetall("ksr:msg:never")
        assert (never[b"state"], never[b"dead_reason"], b"job_name" in never) == (b"dead", b"create_refused", False)
        assert redis_client.zcard(WAITING) == 0 and not redis_client.keys(WAITING + ":*")
        assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
        assert managed_jobs(kube, namespace) == []
        # Replayed once the quota allows it, the message starts afresh and runs.
        _quota(kube, namespace, 1)
        replay_dead(redis_client, STREAM, dead.dead_id)
        wait_for(lambda: receiver.statuses().get("never") == [99, 0, 1, 2], timeout=90, what="the replay's callbacks")
    (body,) = [b for b in receiver.bodies("never") if b["status"] == 99]
    error = body["detail"]["error"]
    assert error["errorCode"] == "CreateRefused"
    assert "403" in error["message"] and "exceeded quota" in error["message"], error
    assert "still refused after 6s" in error["message"]
    assert dead.original_id == entry_id and dead.reason == "create_refused"
    assert dead.error == error["message"]
    assert dead.deliveries == 1, "waiting used no deliveries"


class _FailsAfterFirst:
    """The runner's executor; after the first create (refused by the quota) every retry
    raises what a bug would (test-only hook)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def create(self, message: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            raise KeyError("a bug on the retry")
        return self.inner.create(message, **kw)

    def launched(self, ref: Any) -> None:
        self.inner.launched(ref)


def test_a_waiting_create_whose_retries_raise_ends_at_the_horizon(redis_server, redis_client, kube, namespace):
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_CREATE_HORIZON="5",
        KSR_CREATE_BACKOFF_CAP="1",
    )
    _quota(kube, namespace, 0)
    with runner_thread(env, api_client=kube.api_client()) as runner:
        hook = runner.dispatcher.executor = _FailsAfterFirst(runner.executor)
        entry_id = xadd(redis_client, STREAM, message("waits-then-raises", namespace))
        (dead,) = wait_for(lambda: list_dead(redis_client, STREAM), timeout=60, what="the dead letter")
        assert runner._elector_thread.is_alive() and runner.term is not None
    assert dead.original_id == entry_id and dead.reason == "poison"
    assert "kept failing while waiting past KSR_CREATE_HORIZON=5s" in dead.error and "exceeded quota" in dead.error
    assert 2 <= hook.calls <= 8, "retries backed off (about one per KSR_CREATE_BACKOFF_CAP), not one per tick"
    assert redis_client.hmget("ksr:msg:waits-then-raises", "state", "dead_reason", "job_name") == [
        b"dead",
        b"poison",
        None,
    ]
    assert redis_client.zcard(WAITING) == 0 and redis_client.xpending(STREAM, "ksr")["pending"] == 0
