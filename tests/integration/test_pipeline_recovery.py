"""Duplicates and takeover: the same id XADDed several times (and replayed after its Job
finished) gives one Job; 5,000 entries left pending by a dead consumer are all recovered
by the next leader. Real Redis, the real control plane with kwok, a real RQ worker and a
real receiver."""

from __future__ import annotations

import json
import logging
import re
import time

import pytest

from runner.store.deadletter import list_dead
from tests.support.kube import job_message_ids, managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for
from tests.support.scrape import in_process

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")


def message_count(outcome: str) -> float:
    """ksr_messages_total{outcome} of this process (the runner runs in a thread here)."""
    return in_process().value("ksr_messages_total", outcome=outcome)


def pending(redis_client, stream: str = STREAM) -> int:
    return int(redis_client.xpending(stream, "ksr")["pending"])


def test_same_id_three_times_gives_one_job_and_a_late_replay_none(
    redis_server, redis_client, kube, namespace, receiver
):
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    before = message_count("duplicate")
    # "burst": three entries queued together (one read batch). "spread": one, then two
    # more once its Job exists.
    burst = message("dup-burst", namespace, webhook=receiver.url)
    spread = message("dup-spread", namespace, webhook=receiver.url)
    for _ in range(3):
        xadd(redis_client, STREAM, burst)
    xadd(redis_client, STREAM, spread)
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: redis_client.hget("ksr:msg:dup-spread", "job_name"), timeout=60, what="Job of dup-spread")
        xadd(redis_client, STREAM, spread)
        xadd(redis_client, STREAM, spread)
        receiver.wait_for_callbacks(("dup-burst", "dup-spread"), timeout=90, what="callbacks 0, 1, 2 of both messages")
        wait_for(
            lambda: pending(redis_client) == 0 and message_count("duplicate") - before >= 4,
            timeout=30,
            what="the four duplicate entries acked",
        )
        assert job_message_ids(kube, namespace) == ["dup-burst", "dup-spread"]

        # The Job finished: a replay of the same id is still a duplicate (the record keeps a TTL).
        assert redis_client.hget("ksr:msg:dup-burst", "state") == b"completed"
        ttl = redis_client.ttl("ksr:msg:dup-burst")
        assert 0 < ttl <= 3600
        requests_before = len(receiver.requests)
        replay_id = xadd(redis_client, STREAM, burst)
        wait_for(
            lambda: message_count("duplicate") - before >= 5 and pending(redis_client) == 0,
            timeout=30,
            what="the replay counted as a duplicate and acked",
        )
        info = redis_client.xinfo_groups(STREAM)[0]
        assert info["last-delivered-id"].decode() == replay_id
    assert job_message_ids(kube, namespace) == ["dup-burst", "dup-spread"]
    assert message_count("dispatched") >= 2
    assert message_count("duplicate") - before == 5
    assert len(receiver.requests) == requests_before  # no callback for a duplicate
    # Each callback went out once per status (the receiver answers 200).
    for mid in ("dup-burst", "dup-spread"):
        assert sorted(b["status"] for b in receiver.bodies(mid)) == [0, 1, 2]
    assert redis_client.hget("ksr:msg:dup-burst", "state") == b"completed"
    assert not any(list_dead(redis_client, s) for s in STREAMS)


def test_5000_entries_left_pending_by_a_dead_consumer_are_recovered_on_takeover(
    redis_server, redis_client, kube, namespace, receiver, caplog
):
    """A dead leader left 5,000 entries in its pending list: 2,490 invalid JSON, 2,490
    copies of one message, 20 distinct real messages. The next leader claims them all: every
    one is acked or dead-lettered, the shared message and each real one get one Job."""
    caplog.set_level(logging.INFO, logger="runner.pipeline.loop")
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    shared = json.dumps(message("shared", namespace))
    real = [f"real-{i:02d}" for i in range(20)]
    total = 5000
    pipe = redis_client.pipeline(transaction=False)
    kinds: list[str] = []
    for n in range(total):
        if n % 250 == 125:
            payload = json.dumps(message(real[len([k for k in kinds if k == "real"])], namespace, webhook=receiver.url))
            kinds.append("real")
        elif n % 2:
            payload = f"not json #{n}"
            kinds.append("invalid")
        else:
            payload = shared
            kinds.append("shared")
        pipe.xadd(STREAM, {"payload": payload})
    pipe.execute()
    counts = {k: kinds.count(k) for k in ("real", "invalid", "shared")}
    assert counts["real"] == 20 and sum(counts.values()) == total
    for s in STREAMS:
        redis_client.xgroup_create(s, "ksr", id="0", mkstream=True)
    # The dead consumer: read everything, ack nothing.
    got = redis_client.xreadgroup("ksr", "runner-dead", {STREAM: ">"}, count=total)
    assert len(got[0][1]) == total
    assert pending(redis_client) == total

    started = time.monotonic()
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: pending(redis_client) == 0, timeout=300, interval=0.2, what="every pending entry done")
        drained = time.monotonic() - started
        wait_for(lambda: len(managed_jobs(kube, namespace)) >= 21, timeout=60, what="21 Jobs")
        receiver.wait_for_callbacks(real, timeout=120, what="callbacks 0, 1, 2 of the 20 real messages")
    summary = redis_client.xpending(STREAM, "ksr")
    assert summary["pending"] == 0 and not summary["consumers"]
    assert job_message_ids(kube, namespace) == sorted(["shared", *real])
    assert redis_client.xlen(STREAM + ":dead") == counts["invalid"]
    assert {d.reason for d in list_dead(redis_client, STREAM, count=100)} == {"invalid"}
    # Takeover recovery itself (XAUTOCLAIM of all 5,000, reconcile, owed callbacks), from its log line.
    line = next(r.getMessage() for r in caplog.records if "reclaimed" in r.getMessage())
    reclaimed, took = re.search(r"reclaimed (\d+) pending entries, re-sent \d+ callbacks in ([\d.]+)s", line).groups()
    assert int(reclaimed) == total, line
    print(
        f"\ntakeover recovery of {total} pending entries: {float(took):.2f}s (XAUTOCLAIM + reconcile); "
        f"all {total} acked or dead-lettered {drained:.1f}s after the runner started"
    )
    assert float(took) < 30
