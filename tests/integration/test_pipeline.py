"""The pipeline end to end in one process: real Redis, the real control plane with kwok,
a real RQ worker and a real webhook receiver on loopback."""

from __future__ import annotations

import pytest

from runner.store.events import read_events
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")


@pytest.fixture
def env(redis_server, redis_client, kube, namespace):
    return base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)


def test_happy_path_priority_and_callbacks_in_order(env, kube, namespace, redis_client, receiver):
    ids = []
    for i in range(50):
        stream = STREAMS[i % 3]
        mid = f"happy-{i:02d}"
        ids.append((stream, mid))
        xadd(redis_client, stream, message(mid, namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: len(managed_jobs(kube, namespace)) == 50, timeout=120, what="50 Jobs")
        wait_for(
            lambda: all(receiver.statuses().get(mid) == [0, 1, 2] for _, mid in ids),
            timeout=180,
            what="callbacks 0, 1, 2 for every message",
        )
    jobs = managed_jobs(kube, namespace)
    assert len({j.metadata.name for j in jobs}) == 50
    assert {j.metadata.annotations["kube-stream-runner/message-id"] for j in jobs} == {m for _, m in ids}
    # Strict priority: every critical message was dispatched before any default one, etc.
    created = [e.message_id for e in read_events(redis_client, count=1000) if e.status == 0]
    order = {mid: created.index(mid) for _, mid in ids}
    by_stream = {s: [order[m] for st, m in ids if st == s] for s in STREAMS}
    assert max(by_stream[STREAMS[0]]) < min(by_stream[STREAMS[1]])
    assert max(by_stream[STREAMS[1]]) < min(by_stream[STREAMS[2]])
    body = receiver.bodies("happy-00")
    assert body[0]["detail"]["jobName"].startswith("job-")
    assert body[2]["detail"]["duration"] >= 0
    assert redis_client.scard("ksr:active") == 0
