"""A SIGTERMed leader hands over in about one retry period, whatever it watches.

Two `ksr run` processes on the Lease with the default election timings (lease 15 s,
renew 10 s, retry 2 s), watching Jobs and Pods in three namespaces. The leader releases
the Lease as soon as its in-flight creates are done; stopping its watches and its
children comes after, and all of it within KSR_SHUTDOWN_GRACE.
"""

from __future__ import annotations

import signal
import time

import pytest
from kubernetes import client

from tests.support.kube import delete_namespace, job_message_ids, new_namespace
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

RETRY_PERIOD = 2.0  # the default KSR_RETRY_PERIOD
JITTER = 1.2  # a follower waits in [retry, retry * jitter) between attempts (election/config.py)
# Budget from SIGTERM to the next Job: the standby's longest wait, plus 1 s for the release,
# its takeover (reconcile of three namespaces) and the create.
HANDOVER_BUDGET = RETRY_PERIOD * JITTER + 1.0
SHUTDOWN_GRACE = 20.0  # the default KSR_SHUTDOWN_GRACE


@pytest.fixture
def namespaces(kube, namespace):
    extra = [new_namespace(kube), new_namespace(kube)]
    yield [namespace, *extra]
    for ns in extra:
        delete_namespace(kube, ns)


def test_sigterm_of_a_leader_watching_three_namespaces_hands_over_within_a_retry_period(
    redis_server, redis_client, kube, namespaces, tmp_path
):
    home, *others = namespaces
    env = base_env(
        redis_url=redis_server.url,
        namespace=home,
        kubeconfig=kube.kubeconfig,
        KSR_ALLOWED_NAMESPACES=",".join(namespaces),
    )
    for timing in ("KSR_LEASE_DURATION", "KSR_RENEW_DEADLINE", "KSR_RETRY_PERIOD"):
        del env[timing]  # the defaults
    leader = Pod(env, tmp_path, "leader-0")
    standby: Pod | None = None
    try:
        wait_for(leader.leading, timeout=60, what="the first replica to lead")
        standby = Pod(env, tmp_path, "standby-0")
        wait_for(
            lambda: (standby.status() or {}).get("leader") == "leader-0",
            timeout=60,
            what="the standby to see the leader",
        )
        xadd(redis_client, "ksr:jobs:default", message("before", others[-1]))
        wait_for(lambda: job_message_ids(kube, others[-1]) == ["before"], timeout=30, what="the leader's Job")

        sent = time.monotonic()
        leader.proc.send_signal(signal.SIGTERM)
        # Once the leader's runner is stopping it dispatches nothing more: the next Job is the standby's.
        wait_for(
            lambda: (leader.status() or {}).get("runner", {}).get("state") != "running",
            timeout=10,
            what="the leader to stop",
        )
        xadd(redis_client, "ksr:jobs:default", message("after", others[-1]))
        wait_for(
            lambda: job_message_ids(kube, others[-1]) == ["after", "before"],
            timeout=60,
            interval=0.05,
            what="the standby's Job",
        )
        handover = time.monotonic() - sent
        code = leader.proc.wait(SHUTDOWN_GRACE + 15)
        stopped = time.monotonic() - sent
        print(f"next Job {handover:.2f}s after SIGTERM; leader exited with {code} after {stopped:.2f}s")

        lease = client.CoordinationV1Api(kube.api_client()).read_namespaced_lease("ksr-leader", home)
        assert lease.spec.holder_identity == "standby-0"
        assert handover <= HANDOVER_BUDGET, f"the next Job came {handover:.1f}s after SIGTERM"
        assert code == 0, leader.tail()
        assert stopped < SHUTDOWN_GRACE, f"the leader exited {stopped:.1f}s after SIGTERM"
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()
