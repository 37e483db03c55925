"""No entry can stop the pipeline (issue 10 §1): an entry whose payload breaks the JSON
parser, and an entry whose processing raises something nobody foresaw, end in a dead
letter while the replicas keep leading and the valid messages around them get their Jobs.
Real Redis, the real control plane with kwok, two runners competing for one Lease."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest
from kubernetes import client

from runner.store.deadletter import list_dead
from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.scrape import in_process

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
DEEP = "[" * 5000  # 5 KB: json.loads raises RecursionError, not ValueError


def _lease(kube: Any, namespace: str) -> tuple[str, int]:
    spec = client.CoordinationV1Api(kube.api_client()).read_namespaced_lease("ksr-leader", namespace).spec
    return spec.holder_identity or "", int(spec.lease_transitions or 0)


def _messages_total(outcome: str) -> float:
    return in_process().value("ksr_messages_total", outcome=outcome)


def _replicas(stack: ExitStack, env: dict[str, str], kube: Any, n: int = 2) -> list[Any]:
    runners = [
        stack.enter_context(runner_thread({**env, "POD_NAME": f"{env['POD_NAME']}-{i}"}, api_client=kube.api_client()))
        for i in range(n)
    ]
    wait_for(lambda: any(r.term is not None for r in runners), timeout=30, what="a leader")
    return runners


def _threads_alive(runners: list[Any]) -> bool:
    return all(r._elector_thread is not None and r._elector_thread.is_alive() for r in runners)


def test_deep_nesting_is_dead_lettered_and_one_replica_leads_throughout(redis_server, redis_client, kube, namespace):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    with ExitStack() as stack:
        runners = _replicas(stack, env, kube)
        xadd(redis_client, STREAM, message("before-deep", namespace))
        wait_for(lambda: job_message_ids(kube, namespace) == ["before-deep"], timeout=60, what="the first Job")
        leader = _lease(kube, namespace)
        deep_id = xadd(redis_client, STREAM, DEEP)
        deep_obj = xadd(redis_client, STREAM, '{"a":' * 5000)
        valid = [f"after-deep-{i}" for i in range(3)]
        for mid in valid:
            xadd(redis_client, STREAM, message(mid, namespace))
        wait_for(
            lambda: job_message_ids(kube, namespace) == sorted(["before-deep", *valid]),
            timeout=60,
            what="Jobs for the valid messages after the deep ones",
        )
        # a read's entries are handled in parallel: a dead letter may land after the valid Jobs
        wait_for(
            lambda: {d.original_id for d in list_dead(redis_client, STREAM)} == {deep_id, deep_obj},
            timeout=10,
            what="both deep entries dead-lettered",
        )
        dead = {d.original_id: d for d in list_dead(redis_client, STREAM)}
        assert _lease(kube, namespace) == leader, "the leader and its term never changed"
        assert sum(r.term is not None for r in runners) == 1 and _threads_alive(runners)
    assert set(dead) == {deep_id, deep_obj}
    for d in dead.values():
        assert d.reason == "invalid" and d.deliveries == 1
        assert d.error == "payload: nested deeper than 64 levels (5000)", d.error
    assert dead[deep_id].payload == DEEP.encode()
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 0


class _Faulty:
    """The runner's executor, raising what a bug would for one message id (test-only hook)."""

    def __init__(self, inner: Any, message_id: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.message_id = message_id
        self.calls = 0

    def create(self, message: Any, **kw: Any) -> Any:
        if message.id == self.message_id:
            self.calls += 1
            raise KeyError("a bug nobody foresaw")
        return self.inner.create(message, **kw)

    def launched(self, ref: Any) -> None:
        self.inner.launched(ref)


def test_an_entry_that_raises_ends_as_poison_and_the_runner_lives(redis_server, redis_client, kube, namespace):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_MAX_DELIVERIES="3")
    errors_before = _messages_total("error")
    with ExitStack() as stack:
        runners = _replicas(stack, env, kube)
        hooks = [_Faulty(r.executor, "boom") for r in runners]
        for r, hook in zip(runners, hooks):
            r.dispatcher.executor = hook
        leader = _lease(kube, namespace)
        boom_id = xadd(redis_client, STREAM, message("boom", namespace))
        xadd(redis_client, STREAM, message("next-to-boom", namespace))
        wait_for(lambda: job_message_ids(kube, namespace) == ["next-to-boom"], timeout=60, what="the Job beside it")
        (dead,) = wait_for(lambda: list_dead(redis_client, STREAM), timeout=60, what="the poison dead letter")
        xadd(redis_client, STREAM, message("after-boom", namespace))
        wait_for(
            lambda: job_message_ids(kube, namespace) == ["after-boom", "next-to-boom"],
            timeout=60,
            what="a Job for a message after the poison one",
        )
        assert _lease(kube, namespace) == leader, "the leader and its term never changed"
        assert _threads_alive(runners)
    assert dead.original_id == boom_id and dead.reason == "poison"
    assert dead.deliveries == 4 and "KSR_MAX_DELIVERIES=3" in dead.error
    assert sum(h.calls for h in hooks) == 3  # one try per delivery, none after the dead letter
    assert _messages_total("error") - errors_before == 3
    assert redis_client.hmget("ksr:msg:boom", "state", "dead_reason", "job_name") == [b"dead", b"poison", None], (
        "the dead letter ended the claim made before the create"
    )
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
