"""What one dispatched message costs in Redis: round trips and commands, counted by the
server over a real dispatch (docs/benchmarks.md, "Redis round trips per message").

The runner's own parts (its Dispatcher, StateStore, Tracker, CallbackQueue, Job creates on
the real apiserver) dispatch N messages; only the elector runs beside them, on the Lease,
so the Redis traffic in the window is the dispatch path's alone. The server counts:
`total_reads_processed` (one per request a client sends, a pipeline being one) is the
round trips; `INFO commandstats` the commands, those inside Lua scripts included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runner.pipeline.loop import Runner
from runner.pipeline.wiring import build_runner
from runner.settings import Settings
from runner.store.events import read_events
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAM = "ksr:jobs:default"
N = 40
# Upper bounds per dispatched message (the stream's reads included). Before the hot path was
# cut (docs/benchmarks.md): 9.2 round trips and 22.2 commands without a webhook, 17.2 and
# 38.2 with one. Measured by this test on 7 Dec 2026: 4.2 round trips / 19.2 commands without
# a webhook, 7.2 / 35.2 with one (docs/benchmarks.md's 17.2 and 31.2 commands were counted
# before the lifecycle checks and the owner lease added commands inside the scripts, such as
# the state HGETs and TIME; the round trips have not moved).
# Issue 23 dropped the term's read before the create (the claim just before it is fenced).
MAX_ROUND_TRIPS = {"no webhook": 3.5, "webhook": 6.5}
MAX_COMMANDS = {"no webhook": 20.0, "webhook": 36.0}


@pytest.fixture
def leading_runner(redis_server, redis_client, kube, namespace) -> Iterator[tuple[Runner, int]]:
    """A Runner whose elector leads (on the Lease) and whose loop does not run: the test
    drives its dispatcher. Yields (runner, term)."""
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    runner = build_runner(Settings.from_env(env), api_client=kube.api_client())
    stop = threading.Event()
    elector = threading.Thread(target=runner.elector.run, args=(stop,), daemon=True)
    elector.start()
    try:
        wait_for(lambda: runner.elector.status().leading, timeout=30, what="the elector to lead")
        term = runner.elector.status().term
        assert term is not None
        runner.state.advance_term(term)
        runner.reader.ensure_groups()
        yield runner, term
    finally:
        stop.set()
        runner.dispatcher.close()
        elector.join(10)


def _dispatch_all(runner: Runner, term: int, count: int) -> dict[str, int]:
    """Read and dispatch until `count` entries are done, as the loop does; the outcomes."""
    outcomes: dict[str, int] = {}
    done = 0
    for _ in range(count + 10):  # bounded: one batch at least per read_count entries
        batch = runner.reader.read_batch(keep_going=lambda: runner.elector.holds_term(term))
        for outcome, n in runner.dispatcher.process_batch(batch, term).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
            done += n
        if done >= count:
            break
    return outcomes


def _server_counts(conn: Any) -> tuple[int, dict[str, int]]:
    """(requests read, calls by command) so far; each call of this is two of both (INFO)."""
    reads = int(conn.info("stats")["total_reads_processed"])
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in conn.info("commandstats").items()}
    return reads, calls


@pytest.mark.parametrize("kind", ["no webhook", "webhook"])
def test_redis_round_trips_per_dispatched_message(kind, leading_runner, redis_client, kube, namespace, receiver):
    runner, term = leading_runner
    webhook = receiver.url if kind == "webhook" else None
    # Warm up: the connection pool's connections and the scripts' cache, off the count.
    warm = [f"warm-{i}" for i in range(runner.settings.kube.worker_pool_size * 2)]
    for mid in warm:
        xadd(redis_client, STREAM, message(mid, namespace, webhook=webhook))
    assert _dispatch_all(runner, term, len(warm)) == {"dispatched": len(warm)}

    ids = [f"trips-{i:03d}" for i in range(N)]
    for mid in ids:
        xadd(redis_client, STREAM, message(mid, namespace, webhook=webhook))
    reads0, calls0 = _server_counts(redis_client)
    outcomes = _dispatch_all(runner, term, N)
    reads1, calls1 = _server_counts(redis_client)
    assert outcomes == {"dispatched": N}

    round_trips = (reads1 - reads0 - 2) / N
    commands = (sum(calls1.values()) - sum(calls0.values()) - 2) / N
    by_command = {k: round((v - calls0.get(k, 0)) / N, 2) for k, v in sorted(calls1.items()) if v != calls0.get(k, 0)}
    print(f"\n{kind}: {round_trips:.2f} round trips, {commands:.2f} commands per message: {by_command}")
    assert len(managed_jobs(kube, namespace)) == len(warm) + N
    for mid in ids:
        record = redis_client.hgetall(f"ksr:msg:{mid}")
        assert record[b"state"] == b"created" and record[b"cb_0"], record
    assert redis_client.xpending(STREAM, "ksr")["pending"] == 0
    assert redis_client.scard("ksr:active") == len(warm) + N
    events = [e for e in read_events(redis_client, count=1000) if e.message_id in set(ids)]
    assert sorted((e.message_id, e.status) for e in events) == [(mid, 0) for mid in ids]
    if webhook:
        assert redis_client.llen(f"rq:queue:{runner.settings.callbacks.queue}") == len(warm) + N, (
            "callback 0 enqueued for every message"
        )
    assert round_trips <= MAX_ROUND_TRIPS[kind], f"{round_trips:.2f} Redis round trips per message: {by_command}"
    assert commands <= MAX_COMMANDS[kind], f"{commands:.2f} Redis commands per message: {by_command}"
