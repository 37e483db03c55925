"""Stopping the watcher is quick whatever it watches: every open watch is cut short at
once, and the wait is bounded in total, not per thread (real apiserver, real watches)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.support.kube import delete_namespace, new_namespace
from tests.support.pipeline import base_env, runner_thread
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube


def _watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("watch-") and t.is_alive()]


def test_stop_ends_the_watches_of_three_namespaces_together(kube, namespace, redis_client, redis_server):
    others = [new_namespace(kube), new_namespace(kube)]
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_ALLOWED_NAMESPACES=",".join([namespace, *others]),
    )
    try:
        with runner_thread(env, api_client=kube.api_client()) as runner:
            wait_for(lambda: len(_watch_threads()) == 6, timeout=60, what="a watch of Jobs and Pods per namespace")
            wait_for(lambda: len(runner.watcher.informer.open_watches) == 6, timeout=30, what="every watch open")
            started = time.monotonic()
            runner.watcher.stop()
            elapsed = time.monotonic() - started
            assert _watch_threads() == [] and elapsed < 1.0, f"{len(_watch_threads())} left after {elapsed:.1f}s"
    finally:
        for ns in others:
            delete_namespace(kube, ns)
