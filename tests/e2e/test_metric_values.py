"""The values, not just the names, of the metrics the Grafana dashboard and the alerts read,
after a known workload on real `ksr run` processes (Redis lock, local executor).

Every metric in charts/kube-stream-runner/dashboards/ and alerts/ is asserted here; the
Kubernetes API series (ksr_kube_request*) with the Kubernetes executor on the real control
plane (kwok runs the Jobs; its stages fail pods of service `ksr-test-fail`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

import pytest

from runner.metrics import MESSAGE_OUTCOMES
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.scrape import Samples, scrape

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
DEFAULT = "ksr:jobs:default"


def nonzero(values: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v}


STREAM_GAUGES = (
    "ksr_stream_length",
    "ksr_stream_pending",
    "ksr_stream_lag",
    "ksr_stream_dead_letters",
    "ksr_queue_length",
    "ksr_stream_oldest_age_seconds",
)


def _job_outcomes(s: Samples) -> dict[tuple[str, str, str], float]:
    """ksr_jobs_finished_total as (outcome, job_service, job_namespace) -> count."""
    return {
        (d["outcome"], d["job_service"], d["job_namespace"]): v
        for d, v in ((dict(k), v) for k, v in s.labelled("ksr_jobs_finished_total").items())
    }


def test_every_dashboard_and_alert_metric_has_the_value_the_workload_implies(
    redis_server, redis_client, receiver, tmp_path
):
    env = base_env(
        redis_url=redis_server.url, namespace="default", kubeconfig=None, HOME=str(tmp_path), KSR_MAX_ACTIVE_JOBS="50"
    )
    pod = Pod(env, tmp_path, "values-0")
    try:
        wait_for(pod.leading, timeout=60, what="leadership")
        # A stray DEL of a stream: the reader recreates its group and counts it.
        redis_client.delete("ksr:jobs:low")
        wait_for(lambda: redis_client.exists("ksr:jobs:low"), timeout=30, what="the group on ksr:jobs:low recreated")

        ok = [f"ok-{i}" for i in range(5)]
        bad = [f"bad-{i}" for i in range(2)]
        for mid in ok:
            xadd(redis_client, DEFAULT, message(mid, "default", command=["true"], webhook=receiver.url))
        for mid in bad:
            xadd(redis_client, DEFAULT, message(mid, "default", command=["false"], webhook=receiver.url))
        xadd(redis_client, DEFAULT, "not json")  # invalid
        xadd(redis_client, DEFAULT, message("elsewhere", "not-allowed", command=["true"]))  # policy: invalid
        wait_for(lambda: redis_client.hget("ksr:msg:ok-0", "job_name"), timeout=60, what="the Job of ok-0 recorded")
        xadd(redis_client, DEFAULT, message("ok-0", "default", command=["true"], webhook=receiver.url))  # duplicate
        expected_callbacks = {**{m: [0, 1, 2] for m in ok}, **{m: [0, 1, 3] for m in bad}}
        wait_for(lambda: receiver.statuses() == expected_callbacks, timeout=90, what="every callback delivered")

        def settled() -> Samples | None:
            s = scrape(pod.port)
            done = (
                s.value("ksr_callbacks_total", status="3", outcome="delivered") == 2
                and s.value("ksr_callbacks_total", status="2", outcome="delivered") == 5
                and s.get("ksr_stream_dead_letters", stream=DEFAULT) == 2
                and s.get("ksr_stream_pending", stream=DEFAULT) == 0
                and s.get("ksr_active_jobs") == 0
            )
            return s if done else None

        s = wait_for(settled, timeout=30, what="the metrics to reflect the finished workload")

        # leadership: one replica, which never saw the leader change
        assert s.get("ksr_leader") == 1
        assert s.get("ksr_leader_transitions_total") == 0
        # messages
        # every outcome exists from the start (at 0: increase() would miss a first sample)
        assert set(s.by_label("ksr_messages_total", "outcome")) == set(MESSAGE_OUTCOMES)
        assert nonzero(s.by_label("ksr_messages_total", "outcome")) == {"dispatched": 7, "duplicate": 1, "invalid": 2}
        assert s.get("ksr_messages_processed_total") == 10
        assert s.get("ksr_messages_failed_total") == 2
        assert s.get("ksr_dispatch_latency_seconds_count") == 7
        assert s.get("ksr_dispatch_latency_seconds_bucket", le="+Inf") == 7
        # Jobs
        assert nonzero(s.by_label("ksr_jobs_finished_total", "outcome")) == {"completed": 5, "failed": 2}
        # by the message's service and the Job's namespace (the local executor's is "local")
        assert _job_outcomes(s) == {
            **{(o, "example", "local"): 0 for o in ("exception", "cancelled")},  # at 0 from the first Job on
            ("completed", "example", "local"): 5,
            ("failed", "example", "local"): 2,
        }
        assert s.get("ksr_job_duration_seconds_count") == 7
        assert s.get("ksr_job_duration_seconds_bucket", le="+Inf") == 7
        assert 0 < (s.get("ksr_job_duration_seconds_sum") or 0) < 7 * 30
        assert s.get("ksr_active_jobs") == 0
        assert s.get("ksr_max_active_jobs") == 50  # KSR_MAX_ACTIVE_JOBS, for KsrActiveJobsAtCap
        # callbacks: every one delivered at the first attempt
        assert {tuple(sorted(k)): v for k, v in s.labelled("ksr_callbacks_total").items() if v} == {
            (("outcome", "delivered"), ("status", "0")): 7,
            (("outcome", "delivered"), ("status", "1")): 7,
            (("outcome", "delivered"), ("status", "2")): 5,
            (("outcome", "delivered"), ("status", "3")): 2,
        }
        # streams: 10 entries on the default stream, all done; 2 dead letters
        assert redis_client.xlen(DEFAULT) == 10
        assert {st: s.get("ksr_stream_length", stream=st) for st in STREAMS} == {
            "ksr:jobs:critical": 0,
            DEFAULT: 10,
            "ksr:jobs:low": 0,
        }
        for name in ("ksr_stream_pending", "ksr_stream_lag", "ksr_queue_length"):
            assert {st: s.get(name, stream=st) for st in STREAMS} == dict.fromkeys(STREAMS, 0), name
        # nothing waits: every stream's oldest unacked entry is none (KsrOldestMessageOld)
        assert {st: s.get("ksr_stream_oldest_age_seconds", stream=st) for st in STREAMS} == dict.fromkeys(STREAMS, 0)
        assert {st: s.get("ksr_stream_dead_letters", stream=st) for st in STREAMS} == {
            "ksr:jobs:critical": 0,
            DEFAULT: 2,
            "ksr:jobs:low": 0,
        }
        # every sampled stream has the series (at 0 until it happens: the dashboard panel and
        # increase() need it), and only the deleted one counts a recreation
        assert s.by_label("ksr_redis_group_recreated_total", "stream") == {
            "ksr:jobs:critical": 0,
            "ksr:jobs:default": 0,
            "ksr:jobs:low": 1,
        }
        # liveness: the main loop beat within the last few seconds
        beat = s.get("ksr_loop_heartbeat_timestamp_seconds", loop="main")
        assert beat is not None and abs(time.time() - beat) < 10
    finally:
        pod.kill_container()


def test_two_leader_changes_count_two_and_a_former_leader_zeroes_its_leader_gauges(
    redis_server, redis_client, tmp_path
):
    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, HOME=str(tmp_path))
    a = Pod(env, tmp_path, "a")
    b: Pod | None = None
    a2: Pod | None = None
    try:
        wait_for(a.leading, timeout=60, what="a leading")
        b = Pod(env, tmp_path, "b")
        wait_for(lambda: (b.status() or {}).get("leader") == "a", timeout=60, what="b following a")

        a.stop()  # graceful: releases the lock; b takes over (change 1 for b)
        wait_for(b.leading, timeout=30, what="b leading")
        for i in range(3):  # left in the stream: b's stream gauges are not zero while it leads
            xadd(redis_client, DEFAULT, message(f"m-{i}", "default", command=["true"]))
        wait_for(
            lambda: scrape(b.port).get("ksr_stream_length", stream=DEFAULT) == 3,
            timeout=30,
            what="b's stream gauges",
        )
        a2 = Pod(env, tmp_path, "a2")
        wait_for(lambda: (a2.status() or {}).get("leader") == "b", timeout=60, what="a2 following b")

        os.kill(b.proc.pid, signal.SIGSTOP)  # b's runner freezes; its lock expires; a2 takes over
        try:
            wait_for(a2.leading, timeout=30, what="a2 leading")
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: (b.status() or {}).get("leader") == "a2" and scrape(b.port).get("ksr_leader") == 0,
            timeout=30,
            what="b following a2 (change 2 for b)",
        )

        on_b = scrape(b.port)
        assert on_b.get("ksr_leader_transitions_total") == 2
        assert on_b.get("ksr_leader") == 0
        assert on_b.get("ksr_active_jobs") == 0
        for name in STREAM_GAUGES:
            assert {st: on_b.get(name, stream=st) for st in STREAMS} == dict.fromkeys(STREAMS, 0), name
        on_a2 = scrape(a2.port)
        assert on_a2.get("ksr_leader") == 1
        assert on_a2.get("ksr_leader_transitions_total") == 1  # saw b first, then itself
    finally:
        for pod in (a, b, a2):
            if pod is not None:
                pod.kill_container()


@pytest.mark.kube
def test_kubernetes_api_and_job_metrics_count_the_requests_the_workload_made(
    redis_server, redis_client, kube, namespace, receiver, tmp_path
):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig, HOME=str(tmp_path))
    pod = Pod(env, tmp_path, "kube-values-0")
    try:
        wait_for(pod.leading, timeout=60, what="leadership")
        ok = [f"kok-{i}" for i in range(3)]
        for mid in ok:
            xadd(redis_client, DEFAULT, message(mid, namespace, webhook=receiver.url))
        xadd(redis_client, DEFAULT, message("kfail-0", namespace, service="ksr-test-fail", webhook=receiver.url))
        expected = {**{m: [0, 1, 2] for m in ok}, "kfail-0": [0, 1, 3]}
        wait_for(lambda: receiver.statuses() == expected, timeout=120, what="every callback delivered")

        def settled() -> Samples | None:
            s = scrape(pod.port)
            done = s.total("ksr_jobs_finished_total", outcome="failed") == 1 and s.get("ksr_active_jobs") == 0
            released = s.value("ksr_kube_requests_total", verb="patch", code="200") == 4
            return s if done and released else None

        s = wait_for(settled, timeout=30, what="the metrics to reflect the finished workload")
        assert nonzero(s.by_label("ksr_jobs_finished_total", "outcome")) == {"completed": 3, "failed": 1}
        # by the message's service and the Job's namespace: which producer is failing
        outcomes = _job_outcomes(s)
        assert {k: v for k, v in outcomes.items() if v} == {
            ("completed", "example", namespace): 3,
            ("failed", "ksr-test-fail", namespace): 1,
        }
        assert len(outcomes) == 8  # each (service, namespace) has its four outcomes, at 0 until they happen
        assert s.get("ksr_job_duration_seconds_count") == 4
        assert nonzero(s.by_label("ksr_messages_total", "outcome")) == {"dispatched": 4}
        assert s.get("ksr_dispatch_latency_seconds_count") == 4
        requests = {tuple(sorted(k)): v for k, v in s.labelled("ksr_kube_requests_total").items()}
        # one create per message, all answered 201; the watcher lists and watches, all 200; our
        # finalizer comes off each ended Job once (a 422 is that patch's test op finding the
        # list moved by the garbage collector: read again and retried); nothing refused,
        # throttled or unanswered (what KsrKubeApiErrors/Forbidden look for)
        assert requests[(("code", "201"), ("verb", "create"))] == 4
        assert requests[(("code", "200"), ("verb", "patch"))] == 4
        assert {code for ((_, code), (_, verb)) in requests if verb != "patch"} == {"200", "201"}
        assert {code for ((_, code), (_, verb)) in requests if verb == "patch"} <= {"200", "422"}
        assert {verb for ((_, _), (_, verb)) in requests} >= {"create", "list", "watch"}
        assert s.get("ksr_kube_request_duration_seconds_count", verb="create") == 4
        assert s.get("ksr_kube_request_duration_seconds_bucket", verb="create", le="+Inf") == 4
        assert s.get("ksr_leader") == 1 and s.get("ksr_leader_transitions_total") == 0
    finally:
        pod.kill_container()
