"""The periodic resync reads what the watches have seen instead of listing every Job and Pod
from the apiserver (a full list every POLLING_INTERVAL was the largest part of the latency
tail at 20 messages a second: docs/benchmarks.md), and a Job missing from a view that lags
behind is asked for before it is settled as deleted. Real Redis, the real control plane."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest

from election.clock import FakeClock
from runner.jobs.manifest import message_id_of
from runner.jobs.view import WatchedView
from tests.support.messages import message
from tests.support.pipeline import base_env, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"


def _counting(obj: Any, name: str, counts: dict[str, int], lock: threading.Lock) -> None:
    """Count the calls of `obj.name` (our own object's method, the real one still called)."""
    real = getattr(obj, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            counts[name] += 1
        return real(*args, **kwargs)

    setattr(obj, name, counted)


def _pending_job(runner: Any, redis_client: Any, namespace: str, mid: str) -> None:
    """A message whose pod never starts (the bed's kwok keeps it Pending): its Job stays active."""
    xadd(redis_client, STREAM, message(mid, namespace, service="ksr-test-pending"))
    wait_for(lambda: redis_client.hget(f"ksr:msg:{mid}", "job_uid"), timeout=60, what="the Job recorded")
    view = runner.watcher.informer.view
    wait_for(lambda: view.current and _followed(view, mid), timeout=30, what="the Job in the view")


def _followed(view: WatchedView, mid: str) -> bool:
    return any(message_id_of(job) == mid for job in view.objects("jobs")[0])


def test_the_resync_lists_nothing_while_every_watch_is_current(kube, namespace, redis_client, redis_server):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    with runner_thread(env, api_client=kube.api_client()) as runner:
        _pending_job(runner, redis_client, namespace, "view-1")
        counts = {"reconcile": 0, "job_pages": 0, "pod_pages": 0}
        lock = threading.Lock()
        for name in ("job_pages", "pod_pages"):
            _counting(runner.watcher.api, name, counts, lock)
        _counting(runner.watcher.reconciler, "reconcile", counts, lock)
        wait_for(lambda: counts["reconcile"] >= 3, timeout=30, what="three resyncs (POLLING_INTERVAL 1s)")
        with lock:
            assert (counts["job_pages"], counts["pod_pages"]) == (0, 0), counts
        assert redis_client.hget("ksr:msg:view-1", "state") == b"created"


def test_a_job_missing_from_a_lagging_view_is_asked_for_before_it_counts_as_deleted(
    kube, namespace, redis_client, redis_server
):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    with runner_thread(env, api_client=kube.api_client()) as runner:
        _pending_job(runner, redis_client, namespace, "view-2")
        watcher = runner.watcher
        # A view that has not seen the Job, as a watch behind a loaded apiserver, read well
        # past DELETED_GRACE after the create.
        parts = [("jobs", namespace), ("pods", namespace)]
        lagging = WatchedView(parts)
        for part in parts:
            lagging.replace(part, [])
        watcher.informer.view = lagging
        watcher.reconciler.clock = FakeClock(wall_start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))
        watcher.reconcile(lambda: True)
        assert redis_client.hget("ksr:msg:view-2", "state") == b"created"
        assert not redis_client.hexists("ksr:msg:view-2", "error_code")


def test_a_replay_that_adopts_an_ended_released_job_still_reports_its_end(kube, namespace, redis_client, redis_server):
    """The state store lost (Redis restarted without its data), the producer sends again: the
    create adopts the Job, which ended and was released long ago, so no watch event will
    come for it. The view keeps such a Job by name only; the resync reads it and reports."""
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    mid = "view-replayed"
    record = f"ksr:msg:{mid}"
    with runner_thread(env, api_client=kube.api_client()) as runner:
        xadd(redis_client, STREAM, message(mid, namespace))
        wait_for(lambda: redis_client.hget(record, "state") == b"completed", timeout=90, what="the Job's end")
        view = runner.watcher.informer.view
        wait_for(lambda: mid in view.objects("jobs")[1], timeout=30, what="the Job ended and released in the view")
        redis_client.delete(record)  # lost with the state store
        xadd(redis_client, STREAM, message(mid, namespace))
        wait_for(lambda: redis_client.hget(record, "job_uid"), timeout=60, what="the replay's Job adopted")
        wait_for(
            lambda: redis_client.hget(record, "state") == b"completed",
            timeout=30,
            what="the adopted Job's end reported again",
        )
        assert not redis_client.sismember("ksr:active", mid)
