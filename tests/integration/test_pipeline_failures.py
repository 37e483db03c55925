"""Jobs that do not complete: a pod that fails (callbacks 0, 1, 3 with the error) and a pod
that never starts (99 after POD_START_TIMEOUT, and the Job is deleted). Real Redis, the real
control plane with kwok (its stages fail or hold pods by the `app` label), a real RQ worker
and a real receiver."""

from __future__ import annotations

import pytest

from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"


def test_failing_pod_gives_0_1_3_with_error(redis_server, redis_client, kube, namespace, receiver):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    xadd(redis_client, STREAM, message("fail-1", namespace, service="ksr-test-fail", webhook=receiver.url))
    xadd(redis_client, STREAM, message("ok-1", namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(
            lambda: receiver.statuses().get("fail-1") == [0, 1, 3], timeout=90, what="callbacks 0, 1, 3 for fail-1"
        )
        wait_for(
            lambda: receiver.statuses().get("ok-1") == [0, 1, 2],
            timeout=60,
            what="callbacks 0, 1, 2 for ok-1 next to the failing one",
        )
    bodies = {b["status"]: b for b in receiver.bodies("fail-1")}
    error = bodies[3]["detail"]["error"]
    assert error["errorCode"], error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["errorCode"] == "BackoffLimitExceeded", error  # backoffLimit 0: one pod, one failure
    assert "exited 1" in error["message"], error  # the container's own exit reached the producer
    assert bodies[1]["detail"]["podName"].startswith(bodies[0]["detail"]["jobName"])
    record = redis_client.hgetall("ksr:msg:fail-1")
    assert record[b"state"] == b"failed"
    assert redis_client.scard("ksr:active") == 0
    assert len(managed_jobs(kube, namespace)) == 2  # the failed Job stays (its TTL is 600 s)


def test_pending_pod_gives_99_after_pod_start_timeout_and_is_deleted(
    redis_server, redis_client, kube, namespace, receiver
):
    timeout = 5
    env = base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, POD_START_TIMEOUT=str(timeout)
    )
    xadd(redis_client, STREAM, message("pending-1", namespace, service="ksr-test-pending", webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(
            lambda: receiver.statuses().get("pending-1") == [0, 99], timeout=60, what="callbacks 0, 99 for pending-1"
        )
        # Deleted with background propagation: the Job disappears once its finalizers ran.
        wait_for(lambda: not managed_jobs(kube, namespace), timeout=60, what="the Job of pending-1 deleted")
    bodies = {b["status"]: b for b in receiver.bodies("pending-1")}
    assert set(bodies) == {0, 99}  # never started: no 1
    error = bodies[99]["detail"]["error"]
    assert error["errorCode"] == "PodStartTimeout", error
    assert f"{timeout}s" in error["message"], error
    record = {k.decode(): v.decode() for k, v in redis_client.hgetall("ksr:msg:pending-1").items()}
    assert record["state"] == "exception"
    # Not earlier than the timeout: from the Job's record to the 99 took at least POD_START_TIMEOUT.
    assert int(record["finished_at"]) - int(record["created_at"]) >= timeout * 1000
    assert redis_client.scard("ksr:active") == 0
