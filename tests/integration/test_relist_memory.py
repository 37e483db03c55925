"""The relist (the watcher's periodic reconcile) holds one page of the list, not the whole
list: finished Jobs and their pods stay listed until their TTL, so a whole list grows with
the messages of the last TTL (thousands at a few dozen Jobs a second), not with the capped
active set. Real Redis, the real kube-apiserver; the Jobs are suspended (no pods, no load
on the bed) and carry no finalizer, so the reconcile only lists them."""

from __future__ import annotations

import json
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest

from runner.callbacks.enqueue import CallbackQueue
from runner.jobs.kube import KubeApi
from runner.jobs.manifest import FINALIZER, build_job
from runner.jobs.tracker import Tracker
from runner.jobs.watcher import KubeWatcher
from runner.message import parse_entry
from runner.settings import Settings
from runner.signals import KubeRequest, Signals
from runner.store.state import StateStore
from tests.support.messages import message
from tests.support.pipeline import base_env

pytestmark = pytest.mark.kube

JOBS = 300
PAGE = 30


def _suspended_jobs(kube, namespace: str, settings: Settings) -> None:
    api = KubeApi(kube.api_client(), timeout=30, max_attempts=5, signals=Signals([]))
    manifests = []
    for n in range(JOBS):
        msg = parse_entry({b"payload": json.dumps(message(f"relist-{n}", namespace)).encode()})
        manifest = build_job(msg, settings, stream="ksr:jobs:default", entry_id=f"{n + 1}-0")
        manifest["metadata"]["finalizers"] = [f for f in manifest["metadata"].get("finalizers", []) if f != FINALIZER]
        manifest["spec"]["suspend"] = True
        manifests.append((msg.id, manifest))
    with ThreadPoolExecutor(max_workers=8) as pool:
        for f in [pool.submit(api.create_job, m, message_id=mid) for mid, m in manifests]:
            f.result()


def test_the_relist_holds_one_page_not_every_job_kept_until_its_ttl(kube, namespace, redis_server, redis_client):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    settings = Settings.from_env(env)
    _suspended_jobs(kube, namespace, settings)
    requests: list[KubeRequest] = []
    signals = Signals([lambda s: requests.append(s) if isinstance(s, KubeRequest) else None])
    api = KubeApi(kube.api_client(), timeout=30, signals=signals)
    api.list_page = PAGE
    state = StateStore.from_settings(redis_client, settings)
    tracker = Tracker(
        state=state,
        callbacks=CallbackQueue(redis_client, settings),
        settings=settings,
        signals=signals,
    )
    watcher = KubeWatcher(api=api, tracker=tracker, state=state, settings=settings)
    watcher.reconcile(lambda: True)  # warm: imports and connections are not what is measured

    def peak_of_a_relist(page: int) -> int:
        api.list_page = page
        requests.clear()
        tracemalloc.start()
        try:
            watcher.reconcile(lambda: True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = peak_of_a_relist(JOBS + 1)  # what it held when it listed everything in one answer
    paged = peak_of_a_relist(PAGE)
    assert paged < whole / 3, f"a relist in pages of {PAGE} held {paged} bytes at its peak, {whole} in one page"
    lists = [r for r in requests if r.verb == "list"]
    assert len(lists) >= JOBS // PAGE + 1, lists  # the Jobs in pages of PAGE, the pods (none) in one
