"""A failover between the Job's record and the ack: the record is lost, the ack is not.

Replication is asynchronous and the leader goes on after a `WAIT` that fell short, so a
primary can die right after `record_job` and before its write reached the replica that is
promoted; the dispatch thread then goes on against the new primary, where callback 0 is
marked and the entry is acked. What survives: the Job (in the apiserver, holding our
finalizer), the acked entry, and the claim or not even that. Nothing replays the entry.
Deterministic here: `record_job` writes, then the write is taken back, as the promoted
replica would lack it. Real Redis, the real control plane with kwok, a real RQ worker and
a real receiver."""

from __future__ import annotations

from typing import Any

import pytest

from runner.jobs.manifest import FINALIZER
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"


def _lose_the_first_record(runner: Any, redis_client: Any, *, keep_claim: bool) -> list[str]:
    """Make the first `record_job` a write a failover lost: afterwards the record is what
    the promoted replica held (the claim, or nothing) and the id is not active."""
    real = runner.state.record_job
    lost: list[str] = []

    def record_then_lose(message_id: str, **fields: Any) -> None:
        key = runner.state.key(message_id)
        claim = redis_client.hgetall(key)
        real(message_id, **fields)
        if lost:
            return
        lost.append(message_id)
        redis_client.delete(key)
        redis_client.srem(runner.state.active_key, message_id)
        if keep_claim:
            redis_client.hset(key, mapping=claim)

    runner.state.record_job = record_then_lose
    return lost


@pytest.mark.parametrize("keep_claim", [True, False], ids=["claim-kept", "claim-lost-too"])
def test_a_job_whose_record_a_failover_lost_is_recorded_again_and_reports_every_status(
    redis_server, redis_client, kube, namespace, receiver, keep_claim
):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    mid = "lost-record"
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()) as runner:
        lost = _lose_the_first_record(runner, redis_client, keep_claim=keep_claim)
        xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
        wait_for(lambda: lost == [mid], timeout=60, what="the record written and lost")
        receiver.wait_for_callbacks(
            [mid],
            timeout=120,
            what="callbacks 0, 1, 2 of a message whose record was lost",
            explain=lambda: f"record {redis_client.hgetall(f'ksr:msg:{mid}')}",
        )
        (job,) = managed_jobs(kube, namespace)
        wait_for(
            lambda: (
                redis_client.hget(f"ksr:msg:{mid}", "state") == b"completed"
                and FINALIZER not in (managed_jobs(kube, namespace)[0].metadata.finalizers or [])
            ),
            timeout=60,
            what="the end recorded and the Job released",
        )
    record = redis_client.hgetall(f"ksr:msg:{mid}")
    assert record[b"job_uid"] == job.metadata.uid.encode()  # the Job that ran, recorded again
    assert record[b"webhook"] == receiver.url.encode()
    assert [j.metadata.uid for j in managed_jobs(kube, namespace)] == [job.metadata.uid]  # no second Job
    assert receiver.statuses()[mid] == [0, 1, 2]
    assert not redis_client.sismember("ksr:active", mid)
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
    assert redis_client.zcard("ksr:callbacks:owed") == 0
