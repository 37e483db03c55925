"""Callbacks through a real RQ worker (with its scheduler) and a real receiver on loopback.

The worker is `worker_command(settings)` as the supervisor runs it, in a subprocess with
short backoff settings; the receiver is an HTTP server thread that can be down (nothing
listening on its port: connection refused) and brought up later.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from rq import Queue, Worker
from rq.registry import ScheduledJobRegistry

from runner.callbacks.chain import rq_job_id
from runner.callbacks.courier import Backoff
from runner.callbacks.enqueue import CallbackQueue
from runner.callbacks.http import callback_body, verify
from runner.callbacks.worker import worker_command, worker_env
from runner.errors import ConfigError
from runner.settings import Settings
from runner.store.record import StateRecord
from runner.store.state import StateStore
from tests.support.clocks import clock_behind
from tests.support.pipeline import rq_worker
from tests.support.ports import free_port, wait_for
from tests.support.procs import kill_tree
from tests.support.redis_server import RedisServer
from tests.support.tarpit import Tarpit
from tests.support.timing import Timings, hold

ROOT = Path(__file__).resolve().parents[2]
KEYS = [b"new-key", b"old-key"]
QUEUE = "ksr-callbacks"


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class Request:
    at: float  # monotonic
    path: str
    headers: dict[str, str]
    body: bytes


# Given the receiver and the request number (1-based): (status, headers).
Answer = Callable[["Receiver", int], tuple[int, dict[str, str]]]


def always(status: int, headers: dict[str, str] | None = None) -> Answer:
    return lambda receiver, n: (status, headers or {})


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    answer: Answer = field(default_factory=lambda: always(200))
    requests: list[Request] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    Request(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, headers = receiver.answer(receiver, len(receiver.requests))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    def statuses(self) -> list[int]:
        import json

        return [json.loads(r.body)["status"] for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()  # down until the test calls up()
    yield r
    r.down()


# -- settings, state, workers ---------------------------------------------------------------


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KSR_", "RQ_", "PROMETHEUS_"))}
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_server.url,
        "POD_NAME": "cb-test",
        "KSR_WEBHOOK_ALLOW": "127.0.0.1",
        "KSR_WEBHOOK_SECRET": ",".join(k.decode() for k in KEYS),
        "KSR_CALLBACK_TIMEOUT": "2",
        "KSR_CALLBACK_RETRY_HORIZON": "120",
        "KSR_CALLBACK_MAX_ATTEMPTS": "40",
        "KSR_CALLBACK_BACKOFF_BASE": "0.2",
        "KSR_CALLBACK_BACKOFF_CAP": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }


class Workers:
    def __init__(self, env: dict[str, str], conn: redis.Redis, logs: Path) -> None:
        self.env = env
        self.conn = conn
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 1, **overrides: str) -> None:
        env = {**self.env, **overrides}
        settings = Settings.from_env(env)
        for _ in range(count):
            log = open(self.logs / f"worker-{len(list(self.logs.glob('worker-*.log')))}.log", "wb")
            self.procs.append(
                subprocess.Popen(
                    worker_command(settings),
                    env={**env, **worker_env(settings)},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        wanted = len(self.procs)
        wait_for(
            lambda: len(Worker.all(queue=Queue(QUEUE, connection=self.conn))) >= wanted,
            timeout=30,
            what=f"{wanted} RQ worker(s) registered",
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the current job
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def kill(self) -> None:
        """SIGKILL every worker and its scheduler process, as when a pod dies mid-delivery."""
        for proc in self.procs:
            kill_tree(proc.pid)
            proc.wait(5)
        self.procs = []

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))


@pytest.fixture
def workers(env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(env, redis_client, tmp_path)
    yield w
    w.stop()


@pytest.fixture
def callbacks(env: dict[str, str], redis_client: redis.Redis) -> CallbackQueue:
    return CallbackQueue(redis_client, Settings.from_env(env))


@pytest.fixture
def state(redis_client: redis.Redis) -> StateStore:
    return StateStore(redis_client, ttl_seconds=3600)


def record(state: StateStore, message_id: str, *statuses: int) -> None:
    """A state record as the runner leaves it: claimed, with cb_<s> marked for `statuses`."""
    state.claim(message_id, stream="ksr:jobs:default", entry_id="1-0")
    for s in statuses:
        assert state.mark_callback_sent(message_id, s)


def field_of(state: StateStore, message_id: str, name: str) -> str | None:
    return (state.get(message_id) or {}).get(name)


def until_outcome(
    state: StateStore, message_id: str, status: int, outcome: str, workers: Workers, timeout: float = 30
) -> None:
    try:
        wait_for(
            lambda: field_of(state, message_id, f"cbd_{status}") == outcome,
            timeout=timeout,
            what=f"callback {message_id}:{status} {outcome}",
        )
    except TimeoutError:
        raise AssertionError(f"record {state.get(message_id)}\nworker logs:\n{workers.log_text()}") from None


def callback_counts(env: dict[str, str]) -> dict[tuple[str, str], float]:
    """The counts above 0 (every status/outcome series exists from the start, at 0)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=env["PROMETHEUS_MULTIPROC_DIR"])
    return {
        (s.labels["status"], s.labels["outcome"]): s.value
        for m in registry.collect()
        if m.name == "ksr_callbacks"
        for s in m.samples
        if s.name == "ksr_callbacks_total" and s.value
    }


# -- tests ----------------------------------------------------------------------------------


def test_signed_callback_is_delivered_with_headers_and_body(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    receiver.up()
    record(state, "m-1", 0)
    detail = {"jobId": "uid-1", "jobName": "my-job-abc"}
    assert callbacks.enqueue("m-1", 0, detail, receiver.url)
    workers.start()
    until_outcome(state, "m-1", 0, "delivered", workers)

    [got] = receiver.requests
    assert got.path == "/hook"
    assert got.body == callback_body("m-1", 0, detail)
    assert got.headers["webhook-id"] == "m-1:0"
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    assert len(got.headers["webhook-signature"].split()) == 2  # one per configured key
    assert verify(got.body, got.headers, [KEYS[0]]) and verify(got.body, got.headers, [KEYS[1]])
    assert not verify(got.body, got.headers, [b"another-key"])
    assert (state.get("m-1") or StateRecord()).callbacks(owed=True) == []
    assert callback_counts(env) == {("0", "delivered"): 1.0}


def test_enqueueing_the_same_callback_twice_delivers_it_once(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore
) -> None:
    receiver.up()
    record(state, "m-2", 0)
    assert callbacks.enqueue("m-2", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    assert not callbacks.enqueue("m-2", 0, {"jobId": "u", "jobName": "j"}, receiver.url)  # still queued
    assert not callbacks.enqueue("m-3", 0, {}, None)  # no webhook: nothing to send
    workers.start()
    until_outcome(state, "m-2", 0, "delivered", workers)
    assert not callbacks.enqueue("m-2", 0, {"jobId": "u", "jobName": "j"}, receiver.url)  # finished
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["m-2:0"]


def test_receiver_down_for_a_while_then_up_is_retried_and_delivered(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore
) -> None:
    record(state, "m-4", 2)
    assert callbacks.enqueue("m-4", 2, {"duration": 1.5}, receiver.url)
    workers.start()
    # Down (connection refused) until the third attempt is scheduled: two refused attempts.
    wait_for(
        lambda: field_of(state, "m-4", "cbj_2") == rq_job_id("m-4", 2, 3), timeout=30, what="third attempt scheduled"
    )
    receiver.up()
    until_outcome(state, "m-4", 2, "delivered", workers)
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["m-4:2"]
    assert receiver.requests[0].body == callback_body("m-4", 2, {"duration": 1.5})


@pytest.mark.slow
def test_receiver_down_past_the_backoff_cap_and_an_owner_lease(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    record(state, "m-30", 0)
    started = time.monotonic()
    assert callbacks.enqueue("m-30", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start(KSR_CALLBACK_BACKOFF_CAP="4")
    # The outage is the scenario, not a synchronisation: the receiver stays down until the
    # retries reached the 4 s cap twice and the courier's owner lease (14 s) had to be renewed.
    planned = Timings.of({**env, "KSR_CALLBACK_BACKOFF_CAP": "4"}).callback_outage(outlast_owner_lease=True)
    hold(planned - (time.monotonic() - started))
    assert field_of(state, "m-30", "cbd_0") is None  # still being retried
    assert int(field_of(state, "m-30", "cba_0") or 0) >= 3, "retried through the outage, not once"
    receiver.up()
    until_outcome(state, "m-30", 0, "delivered", workers, timeout=30)
    assert len(receiver.requests) == 1


def test_503_with_retry_after_is_honoured(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    receiver.answer = lambda r, n: (503, {"Retry-After": "2"}) if n == 1 else (200, {})
    receiver.up()
    record(state, "m-5", 0)
    assert callbacks.enqueue("m-5", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start()
    until_outcome(state, "m-5", 0, "delivered", workers)
    first, second = receiver.requests
    assert second.at - first.at >= 2.0  # the backoff alone (cap 1 s) would have been sooner
    assert first.body == second.body and first.headers["webhook-id"] == second.headers["webhook-id"]
    assert callback_counts(env) == {("0", "retry"): 1.0, ("0", "delivered"): 1.0}


def test_410_stops_retries_for_that_url(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, redis_client: redis.Redis
) -> None:
    receiver.answer = always(410)
    receiver.up()
    record(state, "m-6", 0)
    assert callbacks.enqueue("m-6", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start()
    until_outcome(state, "m-6", 0, "gone", workers)
    assert field_of(state, "m-6", "cbd_gone_url") == receiver.url
    # a later status of the same message is not sent to that URL either
    assert state.mark_callback_sent("m-6", 1)  # marked, then enqueued, as the runner does
    assert callbacks.enqueue("m-6", 1, {"podId": "p", "podName": "n"}, receiver.url)
    until_outcome(state, "m-6", 1, "gone", workers)
    assert len(receiver.requests) == 1
    assert ScheduledJobRegistry(QUEUE, connection=redis_client).get_job_ids() == []


def test_a_redirect_is_not_followed(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore
) -> None:
    receiver.answer = lambda r, n: (302, {"Location": f"http://127.0.0.1:{r.port}/elsewhere"})
    receiver.up()
    record(state, "m-7", 0)
    assert callbacks.enqueue("m-7", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start()
    until_outcome(state, "m-7", 0, "failed", workers)
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_retries_stop_at_max_attempts(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    receiver.answer = always(500)
    receiver.up()
    record(state, "m-8", 0)
    assert callbacks.enqueue("m-8", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start(KSR_CALLBACK_MAX_ATTEMPTS="2")
    until_outcome(state, "m-8", 0, "expired", workers)
    assert len(receiver.requests) == 2
    assert callback_counts(env) == {("0", "retry"): 1.0, ("0", "expired"): 1.0}


def test_callbacks_arrive_in_order_after_an_outage(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore
) -> None:
    record(state, "m-9", 0, 1, 2)
    details: dict[int, dict[str, Any]] = {
        0: {"jobId": "u", "jobName": "j"},
        1: {"podId": "p", "podName": "n"},
        2: {"duration": 3.0},
    }
    for status, detail in details.items():
        assert callbacks.enqueue("m-9", status, detail, receiver.url)
    workers.start(count=2)  # two replicas' workers share the queue
    # down until 0 has been refused twice and 2 has waited for the earlier ones
    wait_for(
        lambda: (
            field_of(state, "m-9", "cbj_0") == rq_job_id("m-9", 0, 3)
            and field_of(state, "m-9", "cbj_2") is None  # waits its turn: no job of its own yet
        ),
        timeout=30,
        what="0 retried and 2 waiting its turn",
    )
    receiver.up()
    until_outcome(state, "m-9", 2, "delivered", workers)
    assert receiver.statuses() == [0, 1, 2]
    assert (state.get("m-9") or StateRecord()).callbacks(owed=True) == []


def rq_job_keys(conn: redis.Redis) -> int:
    return sum(1 for _ in conn.scan_iter(match="rq:job:*", count=1000))


def test_later_statuses_wait_for_an_earlier_one_without_piling_up_jobs(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, redis_client: redis.Redis
) -> None:
    """While 0 is retried, 1 and 2 are not re-enqueued over and over: the message holds one
    live RQ job, and finished jobs leave no keys behind."""
    record(state, "m-w", 0, 1, 2)
    for status, detail in {0: {"jobId": "u", "jobName": "j"}, 1: {"podId": "p", "podName": "n"}, 2: {}}.items():
        callbacks.enqueue("m-w", status, detail, receiver.url)
    workers.start()
    wait_for(lambda: field_of(state, "m-w", "cbj_0") == rq_job_id("m-w", 0, 6), timeout=30, what="0 refused five times")
    assert rq_job_keys(redis_client) <= 2  # the next attempt, and for a moment the one that scheduled it
    receiver.up()
    until_outcome(state, "m-w", 2, "delivered", workers)
    assert receiver.statuses() == [0, 1, 2]
    wait_for(lambda: rq_job_keys(redis_client) == 0, timeout=10, what="no RQ job left")


def test_attempts_survive_a_killed_worker_and_the_sweep(
    workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    """A worker killed mid-attempt: the sweep starts the callback again, but the attempt it
    was on still counts towards KSR_CALLBACK_MAX_ATTEMPTS."""
    tarpit = Tarpit(interval=2.0).start()
    try:
        record(state, "m-k", 0)
        state.redis.hset(state.key("m-k"), "webhook", tarpit.url)  # what the sweep sends to
        assert callbacks.enqueue("m-k", 0, {"jobId": "u", "jobName": "j"}, tarpit.url)
        workers.start(KSR_CALLBACK_MAX_ATTEMPTS="2")
        wait_for(lambda: len(tarpit.connections) == 1, timeout=30, what="the first attempt under way")
        workers.kill()
        workers.start(KSR_CALLBACK_MAX_ATTEMPTS="2")
        wait_for(lambda: callbacks.sweep() == 1, timeout=60, interval=1, what="the sweep re-enqueueing it")
        until_outcome(state, "m-k", 0, "expired", workers, timeout=30)
        assert len(tarpit.connections) == 2  # attempt 1 (killed) and attempt 2, the last
    finally:
        tarpit.close()


@pytest.mark.parametrize("lost_from", ["queue", "scheduled"])
def test_the_sweep_re_enqueues_a_callback_whose_queue_entry_a_failover_lost(
    callbacks: CallbackQueue, state: StateStore, receiver: Receiver, redis_client: redis.Redis, lost_from: str
) -> None:
    """A Sentinel failover can promote a replica that has a callback's job hash (status
    queued or scheduled) but not its member of the queue list or the scheduled set: no
    worker would ever run it, and the sweep must not take it for live (the chaos test in
    tests/e2e/test_sentinel_failover.py found callbacks stuck so)."""
    record(state, "m-q", 0)
    state.redis.hset(state.key("m-q"), "webhook", receiver.url)
    assert callbacks.enqueue("m-q", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    job_id = redis_client.hget("ksr:msg:m-q", "cbj_0").decode()
    if lost_from == "scheduled":  # as a retry waiting its turn would be
        assert redis_client.lrem(f"rq:queue:{QUEUE}", 0, job_id) == 1
        redis_client.hset(f"rq:job:{job_id}", "status", "scheduled")
    else:
        assert redis_client.lrem(f"rq:queue:{QUEUE}", 0, job_id) == 1  # the lost LPUSH
    assert callbacks.sweep(older_than=0) == 1
    assert redis_client.lpos(f"rq:queue:{QUEUE}", redis_client.hget("ksr:msg:m-q", "cbj_0")) is not None


def test_a_job_its_worker_dequeued_but_never_started_is_sent_again(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, redis_client: redis.Redis
) -> None:
    """A worker killed between RQ's dequeue (the job moved to the queue's intermediate
    list) and the job's start leaves it "queued" in no queue: the sweep must not take that
    for a live job for ever (later statuses of the message wait behind it)."""
    record(state, "m-d", 0, 1)
    redis_client.hset(state.key("m-d"), "webhook", receiver.url)
    assert callbacks.enqueue("m-d", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    assert callbacks.enqueue("m-d", 1, {"podId": "p", "podName": "n"}, receiver.url)  # waits its turn
    queue = Queue(QUEUE, connection=redis_client)
    assert redis_client.lmove(queue.key, queue.intermediate_queue_key) == rq_job_id("m-d", 0).encode()  # RQ's dequeue
    wait_for(lambda: callbacks.sweep() == 1, timeout=40, interval=1, what="the sweep re-enqueueing it")
    receiver.up()
    workers.start()
    until_outcome(state, "m-d", 1, "delivered", workers)
    assert receiver.statuses() == [0, 1]


def test_the_horizon_counts_from_when_the_callback_was_first_owed(
    receiver: Receiver, workers: Workers, env: dict[str, str], redis_client: redis.Redis
) -> None:
    """A callback marked 200 s ago (horizon 120 s) that the sweep re-enqueues now gets one
    attempt and expires: re-enqueueing does not start a fresh horizon."""
    settings = Settings.from_env(env)
    long_ago = StateStore(redis_client, ttl_seconds=3600, clock=clock_behind(200))
    long_ago.claim("m-h", stream="ksr:jobs:default", entry_id="1-0")
    assert long_ago.mark_callback_sent("m-h", 0, detail="{}", owed_key="ksr:callbacks:owed", owed_member="0:m-h")
    redis_client.hset("ksr:msg:m-h", "webhook", receiver.url)
    assert CallbackQueue(redis_client, settings).sweep(older_than=0) == 1
    workers.start()
    until_outcome(StateStore(redis_client, ttl_seconds=3600), "m-h", 0, "expired", workers)
    assert receiver.requests == []  # down all along: the one attempt was refused


def test_a_callback_that_raises_does_not_stop_the_others(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore, env: dict[str, str]
) -> None:
    """Status 0 of m-bad cannot even be serialised (a bug, not the receiver's fault): it is
    retried like any failed attempt, counted as an error, and gives up at the attempt limit;
    its status 1 follows, and another message's callback is delivered meanwhile."""
    receiver.up()
    record(state, "m-bad", 0, 1)
    record(state, "m-ok", 0)
    assert callbacks.enqueue("m-bad", 0, {"blob": b"\x00 not JSON"}, receiver.url)
    callbacks.enqueue("m-bad", 1, {"podId": "p", "podName": "n"}, receiver.url)
    assert callbacks.enqueue("m-ok", 0, {"jobId": "u", "jobName": "j"}, receiver.url)
    workers.start(KSR_CALLBACK_MAX_ATTEMPTS="2")
    until_outcome(state, "m-ok", 0, "delivered", workers)
    until_outcome(state, "m-bad", 0, "expired", workers)
    until_outcome(state, "m-bad", 1, "delivered", workers)
    assert all(p.poll() is None for p in workers.procs), workers.log_text()
    assert sorted((json.loads(r.body)["id"], json.loads(r.body)["status"]) for r in receiver.requests) == [
        ("m-bad", 1),
        ("m-ok", 0),
    ]
    counts = callback_counts(env)
    assert counts[("0", "error")] == 1.0 and counts[("0", "expired")] == 1.0
    assert "TypeError" in workers.log_text()


# -- pure helpers -----------------------------------------------------------------------------


def test_rq_job_ids_are_valid_and_distinct() -> None:
    assert rq_job_id("31a8-ff", 0) == "31a8-ff_3a0"
    assert rq_job_id("31a8-ff", 0, 2) == "31a8-ff_3a0_3a2"
    ids = {rq_job_id(m, 1) for m in ["a:b", "a_3ab", "a.b", "a_b", "ä"]}
    assert len(ids) == 5 and all(
        set(i) <= set("abcdef0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "ghijklmnopqrstuvwxyz") for i in ids
    )


def test_worker_command_runs_the_scheduler_and_keeps_the_password_out_of_argv(redis_server, redis_client) -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://:s3cret@127.0.0.1:6379/0", "POD_NAME": "p-1"})
    argv = worker_command(settings)
    # Our entry point, so that the worker's client comes from runner.store.connection.
    assert argv[1:] == ["-m", "runner.callbacks.worker", QUEUE, QUEUE + "-slow"]
    assert not any("s3cret" in a for a in argv)
    assert worker_env(settings)["REDIS_URL"] == "redis://:s3cret@127.0.0.1:6379/0"
    # The scheduler runs: the worker takes RQ's scheduler lock of the queue.
    env = {"REDIS_URL": redis_server.url, "POD_NAME": "p-1", "KSR_LOCK": "redis", "KSR_EXECUTOR": "local"}
    with rq_worker(env):
        wait_for(lambda: redis_client.exists(f"rq:scheduler-lock:{QUEUE}") == 1, timeout=20, what="the scheduler lock")


@pytest.mark.parametrize(
    "values, variable",
    [
        ({"KSR_CALLBACK_BACKOFF_BASE": "0"}, "KSR_CALLBACK_BACKOFF_BASE"),
        ({"KSR_CALLBACK_BACKOFF_CAP": "soon"}, "KSR_CALLBACK_BACKOFF_CAP"),
        ({"KSR_CALLBACK_BACKOFF_BASE": "10", "KSR_CALLBACK_BACKOFF_CAP": "5"}, "KSR_CALLBACK_BACKOFF_CAP"),
    ],
)
def test_backoff_settings_are_validated(values: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(values)
    assert caught.value.variable == variable
    assert Backoff.of(Settings.from_env({})) == Backoff(1.0, 300.0)


def test_a_message_without_a_webhook_owes_no_callbacks(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    from tests.support.messages import message
    from tests.support.pipeline import base_env, runner_thread, xadd

    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None)
    with runner_thread(env):
        xadd(redis_client, "ksr:jobs:default", message("quiet-1", "default", command=["true"]))
        wait_for(lambda: redis_client.hget("ksr:msg:quiet-1", "state") == b"completed", timeout=30, what="the job done")
    assert redis_client.xlen("ksr:events") >= 3  # its statuses are still in the events stream
    assert redis_client.zrange("ksr:callbacks:owed", 0, -1) == []


def test_a_tarpit_receiver_costs_one_deadline_per_attempt_and_does_not_delay_others(
    receiver: Receiver, workers: Workers, callbacks: CallbackQueue, state: StateStore
) -> None:
    """Eight messages call back to a tarpit (one byte every 2 s, never an answer), one to a
    healthy receiver, two workers (two replicas). Every tarpit attempt ends at its 3 s
    deadline, every tarpit callback stops at KSR_CALLBACK_MAX_ATTEMPTS (2), and each of the
    healthy message's callbacks arrives within one deadline of being enqueued."""
    deadline = 3.0
    tarpit = Tarpit(interval=2.0).start()
    try:
        receiver.up()
        slow = [f"tarpit-{i}" for i in range(8)]
        for mid in slow:
            record(state, mid, 0)
            state.redis.hset(state.key(mid), "webhook", tarpit.url)
            assert callbacks.enqueue(mid, 0, {"jobId": "u", "jobName": "j"}, tarpit.url)
        workers.start(count=2, KSR_CALLBACK_TIMEOUT=str(deadline), KSR_CALLBACK_MAX_ATTEMPTS="2")
        wait_for(lambda: len(tarpit.connections) >= 2, timeout=30, what="both workers held by the tarpit")

        record(state, "healthy")
        delays = []
        for status in (0, 1, 2):
            assert state.mark_callback_sent("healthy", status)  # as the runner does, one after the other
            enqueued = time.monotonic()
            assert callbacks.enqueue("healthy", status, {"n": status}, receiver.url)
            until_outcome(state, "healthy", status, "delivered", workers, timeout=60)
            [got] = [r for r in receiver.requests if r.headers["webhook-id"] == f"healthy:{status}"]
            delays.append(got.at - enqueued)
        for mid in slow:
            until_outcome(state, mid, 0, "expired", workers, timeout=120)
    finally:
        tarpit.close()
    print(f"\nhealthy receiver's delays: {[round(d, 2) for d in delays]} s")
    assert max(delays) <= deadline + 1.0, delays
    assert [json.loads(r.body)["status"] for r in receiver.requests if json.loads(r.body)["id"] == "healthy"] == [
        0,
        1,
        2,
    ]
    assert len(tarpit.connections) == 2 * len(slow)  # the limit, no attempt more
    held = [c.closed - c.accepted for c in tarpit.connections if c.closed is not None]
    assert len(held) == len(tarpit.connections)
    assert all(deadline - 0.3 <= h <= deadline + 0.7 for h in held), held
