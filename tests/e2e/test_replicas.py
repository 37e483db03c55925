"""Three `ksr run` replicas against the real control plane: one leads, the others serve
probes and deliver callbacks; killing the leader mid-stream loses nothing and
duplicates nothing; SIGTERM exits 0 and releases the Lease."""

from __future__ import annotations

import signal

import pytest
from kubernetes import client

from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import leader_of, replica_pods
from tests.support.ports import wait_for
from tests.support.receiver import Receiver

pytestmark = pytest.mark.kube


@pytest.fixture
def replicas(redis_server, redis_client, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    with replica_pods(env, tmp_path) as pods:
        yield pods, receiver
    receiver.close()


def test_leader_killed_mid_stream_gives_exactly_one_job_per_message(replicas, kube, namespace, redis_client):
    reps, receiver = replicas
    leader = leader_of(reps, 60)
    assert sum(r.leading() for r in reps) == 1
    ids = [f"e2e-{i:02d}" for i in range(30)]
    for mid in ids[:15]:
        xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url))
    wait_for(lambda: len(receiver.statuses()) >= 3, timeout=60, what="the first callbacks")
    leader.kill_container()  # mid-stream, without releasing anything
    for mid in ids[15:]:
        xadd(redis_client, "ksr:jobs:default", message(mid, namespace, webhook=receiver.url))
    survivors = [r for r in reps if r is not leader]
    wait_for(lambda: any(r.leading() for r in survivors), timeout=30, what="a new leader")
    receiver.wait_for_callbacks(
        ids,
        timeout=180,
        what="callbacks 0, 1, 2 for all 30 messages",
        explain=lambda: "\n".join(f"{r.name} {r.log.read_text()[-4000:]}" for r in survivors),
    )
    assert job_message_ids(kube, namespace) == ids  # exactly one Job per message


def test_sigterm_exits_zero_and_releases_the_lease(replicas, kube, namespace):
    reps, _ = replicas
    leader = leader_of(reps, 60)
    leader.proc.send_signal(signal.SIGTERM)
    assert leader.proc.wait(30) == 0
    lease = client.CoordinationV1Api(kube.api_client()).read_namespaced_lease("ksr-leader", namespace)
    assert lease.spec.holder_identity in (None, "", *[r.name for r in reps if r is not leader])
    others = [r for r in reps if r is not leader]
    # Released, not expired: a follower takes over within about one retry period.
    wait_for(lambda: any(r.leading() for r in others), timeout=0.5 * 1.2 + 3, what="a quick handover")
