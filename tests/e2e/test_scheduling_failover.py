"""Delayed messages across leader failovers: three `ksr run` replicas (each with its own
KSR_RUNTIME_DIR) against the real control plane; the leader is SIGKILLed twice while 50
delayed messages come due. Exactly one Job each, none created before its due time."""

from __future__ import annotations

import time

import pytest

from runner.store.events import read_events
from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import leader_of, replica_pods
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
CLOCK_RESOLUTION = 0.001  # due and event times are kept in milliseconds


@pytest.fixture
def replicas(redis_server, redis_client, kube, namespace, tmp_path):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_SCHEDULE_POLL="1")
    with replica_pods(env, tmp_path) as pods:
        yield pods


def test_fifty_delayed_messages_survive_two_sigkilled_leaders(replicas, kube, namespace, redis_client):
    alive = list(replicas)
    leader = leader_of(alive, 60)
    due: dict[str, float] = {}
    for i in range(50):  # due from 2 s to 12 s from now, over every priority stream
        mid = f"delayed-{i:02d}"
        entry = xadd(redis_client, STREAMS[i % 3], {**message(mid, namespace), "delaySeconds": 2 + i * 0.2})
        due[mid] = int(entry.split("-")[0]) / 1000.0 + 2 + i * 0.2
    start = time.time()
    for kill_at in (4.0, 9.0):  # the first leader dies while messages come due, its successor too
        wait_for(lambda kill_at=kill_at: time.time() - start >= kill_at, timeout=30, what=f"{kill_at}s in")
        leader.kill_container()
        alive.remove(leader)
        leader = leader_of(alive, 30)
    try:
        wait_for(lambda: len(job_message_ids(kube, namespace)) >= 50, timeout=180, what="50 Jobs")
    except TimeoutError:
        for p in replicas:
            print(p.name, p.tail(3000))
        raise
    assert job_message_ids(kube, namespace) == sorted(due)  # exactly one Job per message
    created = {e.message_id: e.ts / 1000.0 for e in read_events(redis_client, count=10_000) if e.status == 0}
    early = {mid: round(due[mid] - created[mid], 3) for mid in due if created[mid] < due[mid] - CLOCK_RESOLUTION}
    assert early == {}
    assert sum(redis_client.zcard(f"{s}:scheduled") for s in STREAMS) == 0
    print("latest lateness", max(round(created[m] - due[m], 3) for m in due))
