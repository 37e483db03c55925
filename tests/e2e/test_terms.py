"""Fencing terms across things operators do and leaders that stall, with `ksr run` replicas
against the real Redis and control plane.

- A lock created afresh (Lease deleted, Redis lock key deleted) starts again at term 0 while
  Redis keeps the highest term (`ksr:term`): the new leader moves its term above the stored
  one and dispatches.
- A leader that loses its term while its periodic work is slow (`KSR_TEST_SLOW_TICK`, then
  SIGSTOP inside that window) must not read entries into its own pending list afterwards;
  the new leader gives every message one Job without a further leader change.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
LOCK = "ksr-leader"


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[list[Pod]]:
    """Every Pod a test starts goes here; all are killed at the end whatever happened."""
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.kill_container()


def lock_transitions(kind: str, kube, namespace: str, redis_client) -> int | None:
    if kind == "lease":
        try:
            lease = client.CoordinationV1Api(kube.api_client()).read_namespaced_lease(LOCK, namespace)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return int(lease.spec.lease_transitions or 0)
    raw = redis_client.hget(f"ksr:election:{LOCK}", "transitions")
    return None if raw is None else int(raw)


def delete_lock(kind: str, kube, namespace: str, redis_client) -> None:
    if kind == "lease":
        client.CoordinationV1Api(kube.api_client()).delete_namespaced_lease(LOCK, namespace)
    else:
        assert redis_client.delete(f"ksr:election:{LOCK}") == 1


def stored_term(redis_client) -> int | None:
    raw = redis_client.get("ksr:term")
    return None if raw is None else int(raw)


def the_leader(candidates: list[Pod], timeout: float = 60) -> Pod:
    return wait_for(lambda: next((p for p in candidates if p.leading()), None), timeout=timeout, what="a leader")


@pytest.mark.parametrize("kind", ["lease", "redis"])
def test_a_recreated_lock_moves_the_term_above_the_stored_one_and_dispatches(
    kind, pods, redis_server, redis_client, kube, namespace, tmp_path
):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_LOCK=kind)

    def start(name: str) -> Pod:
        pods.append(Pod(env, tmp_path, name))
        return pods[-1]

    # Terms 0, 1, 2: the first leader, then two handovers (SIGTERM releases the lock).
    first = the_leader([start("a"), start("b")])
    wait_for(lambda: stored_term(redis_client) == 0, timeout=30, what="term 0 stored")
    second = next(p for p in pods if p is not first)
    first.stop()
    wait_for(second.leading, timeout=60, what=f"{second.name} leading after the first handover")
    third = start("c")
    wait_for(lambda: third.status() is not None, timeout=60, what="c serving /status")
    wait_for(lambda: stored_term(redis_client) == 1, timeout=30, what="term 1 stored")
    second.stop()
    wait_for(third.leading, timeout=60, what=f"{third.name} leading after the second handover")
    wait_for(lambda: stored_term(redis_client) == 2, timeout=30, what="term 2 stored")
    third.stop()

    # The operator deletes the lock (or renames it, or switches KSR_LOCK): it starts at 0 again.
    delete_lock(kind, kube, namespace, redis_client)
    assert lock_transitions(kind, kube, namespace, redis_client) is None
    fresh = [start("d"), start("e")]
    leader = the_leader(fresh)
    ids = [f"recreated-{kind}-{i}" for i in range(3)]
    for mid in ids:
        xadd(redis_client, STREAM, message(mid, namespace))
    try:
        wait_for(lambda: job_message_ids(kube, namespace) == ids, timeout=60, what="one Job per message")
    except TimeoutError:
        print(leader.tail())
        raise
    assert stored_term(redis_client) == 3
    assert lock_transitions(kind, kube, namespace, redis_client) == 3
    assert sum(p.leading() for p in fresh) == 1
    assert "below the stored term 2" in leader.tail(200_000)
    # acked after its create returned: the last one may still be on its way
    wait_for(lambda: int(redis_client.xpending(STREAM, "ksr")["pending"]) == 0, timeout=30, what="every entry acked")


def test_entries_are_not_stranded_by_a_leader_whose_term_ended_during_slow_periodic_work(
    pods, redis_server, redis_client, kube, namespace, tmp_path
):
    """a leads, its periodic work takes 3 s longer (KSR_TEST_SLOW_TICK); inside that window
    it is stopped (SIGSTOP) until b has taken over; b's own periodic work then takes 10 s.
    Messages XADDed while b sleeps, then a continues: a must not read them (its term is
    over), and b gives each one Job, with no further leader change."""
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    a = Pod({**env, "KSR_TEST_SLOW_TICK": "3"}, tmp_path, "slow-a")
    pods.append(a)
    wait_for(a.leading, timeout=60, what="a leading")
    b = Pod({**env, "KSR_TEST_SLOW_TICK": "10"}, tmp_path, "slow-b")
    pods.append(b)
    wait_for(lambda: b.status() is not None, timeout=60, what="b serving /status")
    assert not b.leading()

    slow = "KSR_TEST_SLOW_TICK: periodic work takes"
    seen = a.tail(1_000_000).count(slow)
    wait_for(lambda: a.tail(1_000_000).count(slow) > seen, timeout=30, interval=0.02, what="a in slow periodic work")
    os.kill(a.proc.pid, signal.SIGSTOP)  # the runner, its elector thread included
    try:
        wait_for(lambda: slow in b.tail(1_000_000), timeout=30, interval=0.02, what="b leading, in slow periodic work")
        api = client.CoordinationV1Api(kube.api_client())
        lease = api.read_namespaced_lease(LOCK, namespace).spec
        assert lease.holder_identity == "slow-b"
        transitions = lease.lease_transitions
        ids = [f"stalled-{i}" for i in range(3)]
        for mid in ids:
            xadd(redis_client, STREAM, message(mid, namespace))
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    try:
        wait_for(lambda: job_message_ids(kube, namespace) == ids, timeout=30, what="one Job per message")
    except TimeoutError:
        print(redis_client.xpending(STREAM, "ksr"))
        print(a.tail(), b.tail())
        raise
    wait_for(lambda: int(redis_client.xpending(STREAM, "ksr")["pending"]) == 0, timeout=30, what="every entry acked")
    lease = api.read_namespaced_lease(LOCK, namespace).spec
    assert (lease.holder_identity, lease.lease_transitions) == ("slow-b", transitions)  # no further change
    assert job_message_ids(kube, namespace) == ids
