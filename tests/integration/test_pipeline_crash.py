"""Crash injection: `ksr run` processes (the runner, gunicorn and an RQ worker, as in a pod)
with KSR_TEST_CRASH_AT=<step> die hard (exit 70) at that step of the first message that
reaches it. Then the same pod restarts (same POD_NAME: same consumer, same Lease identity)
or a standby replica (another POD_NAME) takes over once the Lease expires. Either way:
exactly one Job per message, and every message's callbacks 0, 1, 2 delivered.

A pod's death kills every process of its container; `ksr run`'s children live in sessions
of their own and are not told when their parent exits hard, so the test kills them itself,
finding them by a marker in their environment."""

from __future__ import annotations

import pytest

from runner.settings import CRASH_STEPS
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.receiver import Receiver

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
CRASH_EXIT = 70

CASES = [(step, how) for step in CRASH_STEPS for how in ("restart", "replica")]


@pytest.mark.parametrize(("step", "how"), CASES, ids=[f"{s}-{h}" for s, h in CASES])
def test_crash_at_step_gives_one_job_per_message_and_every_callback(
    step, how, redis_server, redis_client, kube, namespace, tmp_path
):
    receiver = Receiver().start()
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_TEST_CRASH_AT=step)
    pods: list[Pod] = []
    try:
        first = Pod(env, tmp_path, "crash-a")
        pods.append(first)
        wait_for(first.leading, timeout=60, what="crash-a leading")
        if how == "replica":
            standby = Pod(env, tmp_path, "crash-b")
            pods.append(standby)
            wait_for(
                lambda: standby.proc.poll() is None and standby.status() is not None,
                timeout=60,
                what="crash-b serving as a follower",
            )
            assert not standby.leading()
        ids = [f"crash-{step.replace('_', '-')}-{i}" for i in range(5)]
        for mid in ids:
            xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))

        code = first.proc.wait(60)
        assert code == CRASH_EXIT, f"crash-a exited {code}, not {CRASH_EXIT} at {step}:\n{first.tail()}"
        first.kill_container()
        assert redis_client.get(f"ksr:test:crashed:{step}") is not None

        if how == "restart":
            survivor = Pod(env, tmp_path, "crash-a", generation=1)  # the same pod, restarted
            pods.append(survivor)
        else:
            survivor = standby
        # The crashed leader's Lease (4 s) must expire first, unless it is its own.
        wait_for(survivor.leading, timeout=60, what=f"{survivor.name} leading after the crash")
        receiver.wait_for_callbacks(
            ids,
            timeout=120,
            what=f"callbacks 0, 1, 2 for every message after a crash at {step} ({how})",
            explain=lambda: f"{_rq_state(redis_client)}\n{survivor.tail()}",
        )
        wait_for(lambda: redis_client.xpending(STREAM, "ksr")["pending"] == 0, timeout=30, what="every entry acked")
        owners = sorted(j.metadata.annotations["kube-stream-runner/message-id"] for j in managed_jobs(kube, namespace))
        assert owners == sorted(ids), "exactly one Job per message"
        assert survivor.proc.poll() is None, survivor.tail()
        for mid in ids:
            assert redis_client.hget(f"ksr:msg:{mid}", "state") == b"completed"
        assert redis_client.scard("ksr:active") == 0
        assert redis_client.xlen(STREAM + ":dead") == 0
    finally:
        for pod in reversed(pods):
            pod.stop()
        receiver.close()


def _rq_state(redis_client) -> str:
    """What RQ holds, for a failure message: who has the scheduler lock, what is scheduled."""
    lock = redis_client.get("rq:scheduler-lock:ksr-callbacks")
    scheduled = redis_client.zrange("rq:scheduled:ksr-callbacks", 0, -1, withscores=True)
    queued = redis_client.lrange("rq:queue:ksr-callbacks", 0, -1)
    workers = redis_client.smembers("rq:workers")
    return f"scheduler lock: {lock!r}; scheduled: {scheduled!r}; queued: {queued!r}; workers: {workers!r}"
