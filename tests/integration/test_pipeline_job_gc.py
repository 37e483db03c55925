"""A Job deleted before its end is recorded (issue 10 §5): the ttl-after-finished controller
during a Redis outage, a user's delete, a create resumed after the Job was deleted. Real
Redis, the real control plane (its ttl-after-finished and garbage-collector controllers,
kwok running the pods), a real RQ worker and a real receiver."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client as k8s

from runner.jobs.manifest import FINALIZER, build_job
from runner.message import parse_message
from runner.settings import Settings
from runner.store.state import StateStore
from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.timing import Timings, hold

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
ENDED = (b"completed", b"failed", b"exception")


def read_job(batch: k8s.BatchV1Api, namespace: str, name: str) -> Any | None:
    try:
        return batch.read_namespaced_job(name, namespace)
    except k8s.ApiException as e:
        if e.status == 404:
            return None
        raise


def finished(job: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in (job.status.conditions or []))


def ended(receiver: Any, mid: str) -> bool:
    return bool({2, 3, 99} & set(receiver.statuses().get(mid, [])))


def test_job_deleted_by_its_ttl_during_a_redis_outage_still_reports_2(private_redis, kube, namespace, receiver):
    env = base_env(redis_url=private_redis.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    # Redis stays away until the TTL deleted the Job (a condition: about 31 s after its end)
    # and at least until the runner's loop backed off to its cap (27 s), whichever is later.
    planned = Timings.of(env).redis_outage()
    r = private_redis.client()
    batch = k8s.BatchV1Api(kube.api_client())
    mid = "ttl-outage-1"
    with runner_thread(env, api_client=kube.api_client()):
        xadd(r, STREAM, message(mid, namespace, webhook=receiver.url, ttlSecondsAfterFinished=31))
        wait_for(lambda: r.hget(f"ksr:msg:{mid}", "job_uid"), timeout=60, what="the Job recorded")
        name, uid = (v.decode() for v in r.hmget(f"ksr:msg:{mid}", "job_name", "job_uid"))
        stopped_at = time.monotonic()
        private_redis.stop(save=True)  # a Redis with persistence going away
        try:
            # Meanwhile the Job completes and, 31 s later, its TTL deletes it.
            wait_for(
                lambda: (job := read_job(batch, namespace, name)) is None or job.metadata.deletion_timestamp,
                timeout=58,
                what="the ttl-after-finished controller deleting the Job",
            )
            held = read_job(batch, namespace, name)
            hold(planned - (time.monotonic() - stopped_at))
        finally:
            private_redis.start()
        back_at = time.time()
        outage = time.monotonic() - stopped_at
        wait_for(lambda: r.hget(f"ksr:msg:{mid}", "state") in ENDED, timeout=60, what="the Job's end recorded")
        with rq_worker(env):
            wait_for(lambda: ended(receiver, mid), timeout=60, what="the final callback")
        # The Job goes once its end is recorded: the finalizer is off, the deletion completes.
        wait_for(lambda: read_job(batch, namespace, name) is None, timeout=30, what="the Job released")
    record = {k.decode(): v.decode() for k, v in r.hgetall(f"ksr:msg:{mid}").items()}
    assert receiver.statuses()[mid] == [0, 1, 2], receiver.bodies(mid)
    assert record["state"] == "completed" and record["job_uid"] == uid
    assert int(record["finished_at"]) / 1000 >= back_at - 1, "recorded after the outage, not before it"
    # Deleted by the TTL, held by our finalizer with its status intact until it was read.
    assert held is not None and held.metadata.deletion_timestamp is not None and finished(held)
    assert held.metadata.uid == uid and FINALIZER in held.metadata.finalizers
    assert job_message_ids(kube, namespace) == []
    assert outage >= planned
    print(f"\nRedis away {outage:.0f}s; the Job's TTL (31 s) passed meanwhile; 2 reported after it")


def test_job_deleted_by_a_user_gives_99_and_leaves_no_finalizer(redis_server, redis_client, kube, namespace, receiver):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, POD_START_TIMEOUT="600")
    batch = k8s.BatchV1Api(kube.api_client())
    mid = "deleted-by-hand"
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        # A pod kwok keeps Pending: the Job is alive when the user deletes it.
        xadd(redis_client, STREAM, message(mid, namespace, service="ksr-test-pending", webhook=receiver.url))
        wait_for(lambda: redis_client.hget(f"ksr:msg:{mid}", "job_name"), timeout=60, what="the Job recorded")
        name = redis_client.hget(f"ksr:msg:{mid}", "job_name").decode()
        batch.delete_namespaced_job(name, namespace)  # what `kubectl delete job` does (background)
        wait_for(lambda: receiver.statuses().get(mid) == [0, 99], timeout=60, what="callbacks 0 and 99")
        wait_for(lambda: read_job(batch, namespace, name) is None, timeout=30, what="the Job gone")
    (last,) = [b for b in receiver.bodies(mid) if b["status"] == 99]
    assert last["detail"]["error"]["errorCode"] == "JobDeleted"
    assert redis_client.hget(f"ksr:msg:{mid}", "state") == b"exception"


def test_a_resumed_create_takes_the_held_job_instead_of_making_a_second(
    redis_server, redis_client, kube, namespace, receiver
):
    """What a leader that died between creating the Job and recording it leaves behind: the
    entry pending, the claim, and a Job that then ran and was deleted by its TTL (done here
    as the ttl-after-finished controller does it, Foreground) before anyone resumed."""
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    settings = Settings.from_env(env)
    batch = k8s.BatchV1Api(kube.api_client())
    mid = "resumed-1"
    msg = message(mid, namespace, webhook=receiver.url, ttlSecondsAfterFinished=31)
    entry_id = xadd(redis_client, STREAM, msg)
    redis_client.xgroup_create(STREAM, "ksr", id="0")
    redis_client.xreadgroup("ksr", "the-dead-leader", {STREAM: ">"}, count=1)
    StateStore(redis_client, ttl_seconds=3600).claim(mid, stream=STREAM, entry_id=entry_id)
    manifest = build_job(parse_message(json.dumps(msg)), settings, stream=STREAM, entry_id=entry_id)
    name = manifest["metadata"]["name"]
    uid = batch.create_namespaced_job(namespace, manifest).metadata.uid
    wait_for(lambda: finished(batch.read_namespaced_job(name, namespace)), timeout=60, what="the Job completed")
    batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")
    wait_for(
        lambda: (job := read_job(batch, namespace, name)) is None or job.metadata.deletion_timestamp,
        timeout=30,
        what="the deletion under way",
    )

    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: ended(receiver, mid), timeout=60, what="the final callback")
        assert redis_client.hget(f"ksr:msg:{mid}", "job_uid").decode() == uid, "the one Job, not a second"
        wait_for(lambda: read_job(batch, namespace, name) is None, timeout=30, what="the Job released")
        wait_for(lambda: redis_client.xpending(STREAM, "ksr")["pending"] == 0, timeout=30, what="the entry acked")
    assert receiver.statuses()[mid] == [0, 1, 2], receiver.bodies(mid)
    assert job_message_ids(kube, namespace) == []
