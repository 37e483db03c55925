"""Leader churn is not poison (found by scripts/chaos.py: four valid messages dead-lettered as
poison after seven deliveries, their Jobs created and running, their records released, no
callback ever sent).

A leader is SIGKILLed after it recorded a Job and before the ack (KSR_TEST_CRASH_AT=after_record).
Then the entry changes hands many times without anyone getting to process it: leaders that
took over and died during their recovery, or a pod restarted under the same name that read
its own pending list and died. Either way, the next leader must finish the message: its one
Job followed, callbacks 0, 1, 2 sent, the entry acked, no dead letter. Real `ksr run` pods,
real Redis, the real control plane with kwok."""

from __future__ import annotations

import pytest

from runner.store.stream_reader import StreamReader
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.receiver import Receiver

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
CRASH_EXIT = 70
CHURN = 6  # more hand-overs than KSR_MAX_DELIVERIES (5)


def _times_delivered(redis_client, entry_id: str) -> int:
    (row,) = redis_client.xpending_range(STREAM, "ksr", min=entry_id, max=entry_id, count=1)
    return int(row["times_delivered"])


def _crash_after_record(env, tmp_path, redis_client, namespace, receiver) -> tuple[str, str]:
    """One message recorded with its Job and left unacked by a leader killed hard."""
    first = Pod(env, tmp_path, "churn-a")
    try:
        wait_for(first.leading, timeout=60, what="churn-a leading")
        entry_id = xadd(redis_client, STREAM, message("churned", namespace, webhook=receiver.url))
        code = first.proc.wait(60)
        assert code == CRASH_EXIT, f"churn-a exited {code}, not {CRASH_EXIT}:\n{first.tail()}"
    finally:
        first.kill_container()
    assert redis_client.hget("ksr:msg:churned", "job_name"), "the crash came after the record"
    return "churned", entry_id


def _finishes_the_message(env, tmp_path, redis_client, kube, namespace, receiver, entry_id) -> None:
    survivor = Pod(env, tmp_path, "churn-z")
    try:
        wait_for(survivor.leading, timeout=60, what="churn-z leading")
        receiver.wait_for_callbacks(
            ["churned"], timeout=90, what="callbacks 0, 1, 2 after the churn", explain=survivor.tail
        )
        wait_for(lambda: redis_client.xpending(STREAM, "ksr")["pending"] == 0, timeout=30, what="the entry acked")
        assert survivor.proc.poll() is None, survivor.tail()
    finally:
        survivor.kill_container()
    assert redis_client.xlen(STREAM + ":dead") == 0, "a dispatched message is never poison"
    assert redis_client.hget("ksr:msg:churned", "state") == b"completed"
    owners = [j.metadata.annotations["kube-stream-runner/message-id"] for j in managed_jobs(kube, namespace)]
    assert owners == ["churned"], "exactly one Job"
    assert [r["body"]["status"] for r in receiver.requests] == [0, 1, 2]


def test_takeovers_that_never_read_the_entry_count_no_delivery(redis_server, redis_client, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_TEST_CRASH_AT="after_record"
    )
    try:
        _, entry_id = _crash_after_record(env, tmp_path, redis_client, namespace, receiver)
        for n in range(CHURN):  # each a leader's takeover, and its death before it read anything
            StreamReader(redis_client, streams=[STREAM], group="ksr", consumer=f"churn-{n}").take_over()
        assert _times_delivered(redis_client, entry_id) == 1, "a takeover is not a delivery"
        _finishes_the_message(env, tmp_path, redis_client, kube, namespace, receiver, entry_id)
    finally:
        receiver.close()


def test_a_dispatched_message_delivered_past_the_limit_is_finished_not_dead_lettered(
    redis_server, redis_client, kube, namespace, tmp_path
):
    receiver = Receiver().start()
    env = base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_TEST_CRASH_AT="after_record"
    )
    try:
        _, entry_id = _crash_after_record(env, tmp_path, redis_client, namespace, receiver)
        for _ in range(CHURN):  # churn-a restarted, read its own pending list, died before processing
            redis_client.xreadgroup("ksr", "churn-a", {STREAM: "0"}, count=10)
        assert _times_delivered(redis_client, entry_id) == 1 + CHURN
        _finishes_the_message(env, tmp_path, redis_client, kube, namespace, receiver, entry_id)
    finally:
        receiver.close()
