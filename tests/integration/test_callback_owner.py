"""The owner lease of a message's callbacks (lua/lib_owner.lua, runner.callbacks.courier,
docs/callbacks.md "One owner"), against a real redis-server: one courier at a time, marks
made while it works delivered by it, a lapsed lease taken over, the job that lapsed unable
to send; and a real RQ worker killed mid-delivery, the callbacks still each delivered once,
in order."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, Worker

from runner.callbacks.chain import attempt_job_id, owed_key, rq_job_id
from runner.callbacks.courier import Backoff, Courier
from runner.callbacks.enqueue import CallbackQueue
from runner.callbacks.worker import worker_command, worker_env
from runner.settings import Settings
from runner.store.record import ATTEMPT_LOG_MAX, StateRecord
from runner.store.state import CallbackMark, StateStore
from tests.support.ports import free_port, wait_for
from tests.support.procs import kill_tree
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "ksr-callbacks"


class Receiver:
    """Records each POST (status, in arrival order); `hold` keeps the first request of that
    status unanswered until `let_go` is set, as a receiver that is still thinking."""

    def __init__(self, hold: int | None = None) -> None:
        self.port = free_port()
        self.statuses: list[int] = []
        self.hold = hold
        self.held = threading.Event()
        self.let_go = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))["status"]
                first = status not in receiver.statuses
                receiver.statuses.append(status)
                if first and status == receiver.hold:
                    receiver.held.set()
                    receiver.let_go.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.let_go.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KSR_", "RQ_", "PROMETHEUS_"))}
    (tmp_path / "metrics").mkdir()
    return {
        **base,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_server.url,
        "POD_NAME": "owner-test",
        "KSR_WEBHOOK_ALLOW": "127.0.0.1",
        "KSR_CALLBACK_TIMEOUT": "5",
        "KSR_CALLBACK_BACKOFF_BASE": "0.2",
        "KSR_CALLBACK_BACKOFF_CAP": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def state(redis_client: redis.Redis) -> StateStore:
    return StateStore(redis_client, ttl_seconds=3600)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def owed_record(state: StateStore, message_id: str, url: str, *statuses: int) -> None:
    state.claim(message_id, stream="ksr:jobs:default", entry_id="1-0")
    state.redis.hset(state.key(message_id), "webhook", url)
    for s in statuses:
        assert state.mark_callback_sent(message_id, s, detail=json.dumps({"n": s}))


def mark(state: StateStore, settings: Settings, message_id: str, status: int) -> str | None:
    """Mark as the tracker does: proposing a courier; the job id granted the lease, if any."""
    callback = CallbackMark(
        status=status,
        detail=json.dumps({"n": status}),
        owed_key=owed_key(settings),
        owed_member=f"{status}:{message_id}",
        courier=rq_job_id(message_id, status),
        lease_ms=60_000,
    )
    marked = state.mark_callback(message_id, callback)
    assert marked.first
    return marked.courier


def courier(conn: redis.Redis, settings: Settings) -> Courier:
    return Courier(conn, settings, Backoff.of(settings))


def test_a_status_marked_while_the_owner_works_is_delivered_by_it_in_order(
    state: StateStore, settings: Settings, receiver: Receiver, redis_client: redis.Redis
) -> None:
    owed_record(state, "m-1", receiver.url)
    owner = mark(state, settings, "m-1", 0)
    assert owner == rq_job_id("m-1", 0)
    assert mark(state, settings, "m-1", 1) is None  # the holder delivers it: no second courier
    assert mark(state, settings, "m-1", 2) is None
    assert courier(redis_client, settings).run({"id": "m-1", "not_before": 0.0}, token=owner) == "delivered"
    assert receiver.statuses == [0, 1, 2]
    record = state.get("m-1")
    assert record is not None and record.callbacks(owed=True) == [] and record.callback_owner is None
    assert redis_client.zrange(owed_key(settings), 0, -1) == []
    # Released: the next mark starts a courier of its own.
    assert mark(state, settings, "m-1", 99) == rq_job_id("m-1", 99)


def test_the_owner_does_not_release_when_a_status_was_marked_after_it_read(
    state: StateStore, settings: Settings, receiver: Receiver, redis_client: redis.Redis
) -> None:
    owed_record(state, "m-2", receiver.url)
    owner = mark(state, settings, "m-2", 0)
    assert owner is not None
    c = courier(redis_client, settings)
    assert state.mark_callback_sent("m-2", 1)  # after the owner's read of one mark
    fresh = c.release(state.key("m-2"), owner, marked=1)
    assert fresh is not None and fresh.callbacks() == [0, 1] and fresh.callback_owner == owner
    assert c.release(state.key("m-2"), owner, marked=2) is None
    assert (state.get("m-2") or {}).get("cb_owner") is None


def test_a_lapsed_lease_is_taken_over_and_the_job_that_held_it_sends_nothing(
    state: StateStore, settings: Settings, receiver: Receiver, redis_client: redis.Redis
) -> None:
    owed_record(state, "m-3", receiver.url, 0, 1)
    callbacks = CallbackQueue(redis_client, settings)
    assert callbacks.enqueue("m-3", 0, {"n": 0}, receiver.url)
    first = (state.get("m-3") or {}).get("cbj_0")
    assert first == rq_job_id("m-3", 0)
    assert callbacks.sweep() == 0  # its lease holds: nothing to take over
    # Its worker died: the lease lapses (written as the deadline passed, not waited for).
    redis_client.hset(state.key("m-3"), "cb_owner", f"{first} 1000 1000")
    redis_client.zadd(owed_key(settings), {"0:m-3": 1.0})  # the owed index is scored with the deadline
    assert callbacks.sweep() == 1
    second = (state.get("m-3") or {}).get("cbj_0")
    assert second not in (None, first)
    assert Queue(QUEUE, connection=redis_client).job_ids == [first, second]  # RQ holds both; one may send
    c = courier(redis_client, settings)
    assert c.run({"id": "m-3", "not_before": 0.0}, token=first) == "lost"
    assert receiver.statuses == []
    assert c.run({"id": "m-3", "not_before": 0.0}, token=str(second)) == "delivered"
    assert receiver.statuses == [0, 1]


def test_a_worker_killed_mid_delivery_its_callbacks_still_arrive_once_each_in_order(
    env: dict[str, str], settings: Settings, state: StateStore, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Statuses 0, 1, 2 owed; the worker is SIGKILLed while the receiver holds status 1's
    POST. The lease lapses, the leader's sweep takes it over, a new worker goes on: 1 is
    sent again (the killed attempt counts), 2 only after it, and nothing twice otherwise."""
    receiver = Receiver(hold=1)
    procs: list[subprocess.Popen[bytes]] = []

    def start_worker() -> None:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        procs.append(
            subprocess.Popen(
                worker_command(settings), env={**env, **worker_env(settings)}, cwd=ROOT, stdout=log, stderr=log
            )
        )
        log.close()
        wait_for(
            lambda: any(w.name.startswith("owner-test") for w in Worker.all(connection=redis_client)),
            timeout=30,
            what="an RQ worker registered",
        )

    try:
        owed_record(state, "m-k", receiver.url, 0, 1, 2)
        callbacks = CallbackQueue(redis_client, settings)
        assert callbacks.enqueue("m-k", 0, {"n": 0}, receiver.url)
        start_worker()
        wait_for(receiver.held.is_set, timeout=30, what="status 1's POST held by the receiver")
        kill_tree(procs[0].pid)
        procs[0].wait(5)
        receiver.let_go.set()
        for w in Worker.all(connection=redis_client):  # what RQ would find dead only later
            w.register_death()
        start_worker()
        started = time.monotonic()
        try:
            wait_for(lambda: callbacks.sweep() == 1, timeout=60, interval=0.5, what="the sweep taking over")
        except TimeoutError:
            logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker-*.log")))
            owed = redis_client.zrange(owed_key(settings), 0, -1, withscores=True)
            raise AssertionError(f"record {state.get('m-k')}\nowed {owed}\n{logs}") from None
        lapsed_after = time.monotonic() - started
        wait_for(
            lambda: (state.get("m-k") or {}).get("cbd_2") == "delivered",
            timeout=30,
            what="status 2 delivered",
        )
        record = state.get("m-k")
        assert record is not None
        assert receiver.statuses == [0, 1, 1, 2]  # 1 again after the kill, 2 once, after it
        assert [record.callback_attempts(s) for s in (0, 1, 2)] == [1, 2, 1]
        assert [record.callback_outcome(s) for s in (0, 1, 2)] == ["delivered"] * 3
        assert record.callback_owner is None and redis_client.zcard(owed_key(settings)) == 0
        assert lapsed_after <= settings.callbacks.timeout + 12 + 1  # one lease, not more
    finally:
        for proc in procs:
            kill_tree(proc.pid)
            proc.wait(5)
        receiver.close()


class Answering:
    """A receiver answering each POST with the next code of `codes` (the last one after)."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        answering = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                code = answering.codes.pop(0) if len(answering.codes) > 1 else answering.codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_each_attempt_is_noted_with_its_http_status_duration_and_next_retry(
    state: StateStore, settings: Settings, redis_client: redis.Redis
) -> None:
    """The timeline of `ksr jobs show` and the console read these notes (cbl_<s>)."""
    receiver = Answering(503, 200)
    try:
        owed_record(state, "m-n", receiver.url)
        owner = mark(state, settings, "m-n", 0)
        assert owner is not None
        c = courier(redis_client, settings)
        before_ms = int(time.time() * 1000)
        assert c.run({"id": "m-n", "not_before": 0.0}, token=owner) == "retry"
        (first,) = (state.get("m-n") or StateRecord()).callback_attempt_log(0)
        assert (first.number, first.http_status, first.outcome) == (1, 503, "retry")
        assert before_ms <= first.at_ms <= int(time.time() * 1000)
        assert 0 <= first.duration_ms < 5000
        assert first.next_retry_ms is not None and first.next_retry_ms > first.at_ms
        successor = attempt_job_id("m-n", 0, 2)
        assert c.run({"id": "m-n", "not_before": 0.0}, token=successor) == "delivered"
        notes = (state.get("m-n") or StateRecord()).callback_attempt_log(0)
        assert [(n.number, n.http_status, n.outcome, n.next_retry_ms is None) for n in notes] == [
            (1, 503, "retry", False),
            (2, 200, "delivered", True),
        ]
    finally:
        receiver.close()


def test_the_attempt_notes_are_bounded(env: dict[str, str], state: StateStore, redis_client: redis.Redis) -> None:
    settings = Settings.from_env({**env, "KSR_CALLBACK_MAX_ATTEMPTS": str(ATTEMPT_LOG_MAX + 10)})
    receiver = Answering(503)
    try:
        owed_record(state, "m-b", receiver.url)
        token = mark(state, settings, "m-b", 0)
        c = courier(redis_client, settings)
        for n in range(ATTEMPT_LOG_MAX + 3):
            assert c.run({"id": "m-b", "not_before": 0.0}, token=str(token)) == "retry"
            token = attempt_job_id("m-b", 0, n + 2)
        notes = (state.get("m-b") or StateRecord()).callback_attempt_log(0)
        assert [n.number for n in notes] == list(range(4, ATTEMPT_LOG_MAX + 4))
    finally:
        receiver.close()
