"""Outages around the pipeline: kube-apiserver stopped mid-stream, the webhook receiver down,
a receiver answering 410. Each outage lasts what the test's settings make meaningful
(tests/support/timing.py): the apiserver's outlasts the step-down, the lease and a create's
in-line retries; the receiver's outlasts the callbacks' backoff ramp and an owner lease.
Real Redis, the real control plane with kwok, a real RQ worker and real receivers on loopback."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from runner.callbacks.chain import rq_job_id
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.procs import kill_tree
from tests.support.receiver import Receiver
from tests.support.timing import Timings, hold

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def kube(own_kube):
    """The first test stops the kube-apiserver: this module gets a bed of its own."""
    return own_kube


STREAM = "ksr:jobs:default"


def owners(kube, namespace) -> list[str]:
    return sorted(j.metadata.annotations["kube-stream-runner/message-id"] for j in managed_jobs(kube, namespace))


def test_apiserver_down_mid_stream_loses_and_duplicates_nothing(redis_server, redis_client, kube, namespace, receiver):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    timings = Timings.of(env)
    planned = timings.apiserver_outage()  # 11 s with base_env's lease 4 s, renew 3 s
    ids = [f"outage-{i:02d}" for i in range(24)]
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()) as runner:
        for mid in ids[:8]:
            xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
        wait_for(lambda: len(managed_jobs(kube, namespace)) >= 4, timeout=60, what="the first Jobs")
        term_before = runner.elector.term
        stopped_at = time.monotonic()
        kube.stop_apiserver()
        try:
            for mid in ids[8:16]:  # arriving while the apiserver is away
                xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
            # Renewals fail: the leader steps down by itself (within its renew deadline).
            wait_for(
                lambda: not runner.elector.is_leading() and runner.term is None,
                timeout=3 * timings.step_down(),
                what="the leader stepping down during the outage",
            )
            for mid in ids[16:]:
                xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
            hold(planned - (time.monotonic() - stopped_at))
        finally:
            kube.start_apiserver()
        outage = time.monotonic() - stopped_at
        wait_for(runner.elector.is_leading, timeout=60, what="the runner leading again by itself")
        receiver.wait_for_callbacks(ids, timeout=180, what="callbacks 0, 1, 2 for all 24 messages after the outage")
        wait_for(lambda: redis_client.xpending(STREAM, "ksr")["pending"] == 0, timeout=30, what="all acked")
    assert outage >= planned
    assert owners(kube, namespace) == ids, "one Job per message, none lost, none duplicated"
    assert redis_client.xlen(STREAM + ":dead") == 0
    assert redis_client.scard("ksr:active") == 0
    assert all(redis_client.hget(f"ksr:msg:{m}", "state") == b"completed" for m in ids)
    print(f"\napiserver outage {outage:.1f}s; term {term_before} -> {runner.elector.term}")


def _down(r: Receiver) -> None:
    r.server.shutdown()
    r.server.server_close()


def _up_again(r: Receiver) -> None:
    """The same receiver back on the same port (HTTPServer sets SO_REUSEADDR)."""
    r.server = ThreadingHTTPServer(("127.0.0.1", r.port), r.server.RequestHandlerClass)
    r._thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    r._thread.start()


@pytest.mark.slow
def test_receiver_down_every_callback_retried_and_delivered(redis_server, redis_client, kube, namespace, receiver):
    # Enough attempts to outlast the outage (Timings refuses too few); a refused connection
    # answers at once, so a short attempt timeout suffices and shortens the owner lease.
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_CALLBACK_MAX_ATTEMPTS="60",
        KSR_CALLBACK_BACKOFF_CAP="4",
        KSR_CALLBACK_TIMEOUT="2",
    )
    planned = Timings.of(env).callback_outage(outlast_owner_lease=True)  # 15 s: the owner lease is 14 s
    ids = [f"hookdown-{i:02d}" for i in range(10)]
    _down(receiver)  # connection refused from the first attempt on (closing it again is harmless)
    down_at = time.monotonic()
    for mid in ids:
        xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        # Every Job runs to its end meanwhile: 30 callbacks owed, none deliverable.
        wait_for(
            lambda: all(redis_client.hget(f"ksr:msg:{m}", "state") == b"completed" for m in ids),
            timeout=90,
            what="all 10 Jobs completed during the outage",
        )
        assert not receiver.requests
        hold(planned - (time.monotonic() - down_at))
        assert all(redis_client.hget(f"ksr:msg:{m}", "cbd_0") is None for m in ids), "none given up"
        _up_again(receiver)
        up_at = time.monotonic()
        receiver.wait_for_callbacks(
            ids, timeout=60, what="callbacks 0, 1, 2 for every message after the receiver is back"
        )
        back_after = time.monotonic() - up_at
    for mid in ids:
        record = redis_client.hgetall(f"ksr:msg:{mid}")
        assert [record.get(f"cbd_{s}".encode()) for s in (0, 1, 2)] == [b"delivered"] * 3
        # Status 0 was retried: its chain's latest RQ job is a retry, not the first one.
        assert record[b"cbj_0"].decode() != rq_job_id(mid, 0)
    print(f"\nreceiver down {up_at - down_at:.1f}s; all 30 callbacks delivered {back_after:.1f}s after it came back")


def test_receiver_answering_410_stops_retries(redis_server, redis_client, kube, namespace, receiver):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    receiver.answer = 410
    xadd(redis_client, STREAM, message("gone-1", namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(
            lambda: all(redis_client.hget("ksr:msg:gone-1", f"cbd_{s}") == b"gone" for s in (0, 1, 2)),
            timeout=90,
            what="callbacks 0, 1, 2 finished as gone",
        )
        record = redis_client.hgetall("ksr:msg:gone-1")
        # The worker is still running: nothing is scheduled or queued for this message any more.
        assert not [j for j in redis_client.zrange("rq:scheduled:ksr-callbacks", 0, -1) if b"gone-1" in j]
    assert record[b"state"] == b"completed"
    assert record[b"cbd_gone_url"].decode() == receiver.url
    # Exactly one request: status 0 answered 410; 1 and 2 were never sent to that URL.
    assert [(r["body"]["status"], r["headers"]["webhook-id"]) for r in receiver.requests] == [(0, "gone-1:0")]


@pytest.mark.slow
def test_retries_go_on_when_the_worker_holding_the_scheduler_lock_is_killed(
    redis_server, redis_client, kube, namespace, receiver
):
    """Two replicas' RQ workers; the first holds RQ's scheduler lock (61 s TTL) and dies by
    SIGKILL, as in a killed pod. Retries are scheduled jobs: the survivor
    must take the scheduler over once the lock expires, or callbacks stall."""
    env = base_env(
        redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, KSR_CALLBACK_MAX_ATTEMPTS="200"
    )
    lock = "rq:scheduler-lock:ksr-callbacks"
    with rq_worker({**env, "POD_NAME": "pod-a"}) as first:
        holder = wait_for(lambda: redis_client.get(lock), timeout=30, what="a scheduler lock holder")
        with rq_worker({**env, "POD_NAME": "pod-b"}):
            wait_for(lambda: len(redis_client.smembers("rq:workers")) >= 2, timeout=30, what="two workers")
            kill_tree(first.pid)  # the worker and its scheduler process, as in a killed pod
            first.wait(10)
            assert redis_client.get(lock) == holder  # taken by pod-a, the only worker then
            receiver.answer = 503  # the first attempt fails: its retry is a scheduled job
            xadd(redis_client, STREAM, message("sched-1", namespace, webhook=receiver.url))
            with runner_thread(env, api_client=kube.api_client()):
                wait_for(lambda: receiver.requests, timeout=60, what="the first attempt (503)")
                receiver.answer = 200
                # Lock TTL 61 s, plus a reasonable time for the survivor to notice.
                wait_for(
                    lambda: receiver.statuses().get("sched-1") == [0, 1, 2],
                    timeout=120,
                    what="callbacks 0, 1, 2 delivered by the surviving worker",
                )
