"""The callback worker stops promptly on SIGTERM (real redis-server, real RQ worker).

Measured before the fix: 3 of 24 SIGTERMs took 60-61 s, the rest about 1 s. RQ's teardown
sends UNSUBSCRIBE and only then tells its pubsub thread to stop; when the thread reads the
reply first it goes back to wait up to 60 s (RQ's sleep_time) for a subscription, and
redis-py 8's stop() joins it without a bound. Tests then waited out stop_child's 10 s grace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import redis
from rq import Queue, Worker

from runner.callbacks.worker import CallbackWorker, worker_command, worker_env
from runner.settings import Settings
from tests.support.ports import wait_for
from tests.support.redis_server import RedisServer

PROMPT = 3.0  # seconds: the scheduler's 1 s sleep plus start-up noise on a loaded machine


def test_unsubscribe_returns_promptly_when_the_pubsub_thread_already_saw_its_unsubscribe(
    redis_client: redis.Redis,
) -> None:
    worker = CallbackWorker(["ksr-callbacks"], name="shutdown-test", connection=redis_client)
    worker.subscribe()
    assert worker.pubsub is not None
    wait_for(lambda: worker.pubsub.subscribed, timeout=10, what="worker subscribed")
    # The losing side of the race: the thread handled the UNSUBSCRIBE reply while still
    # told to run, and is now parked waiting for a subscription.
    worker.pubsub.unsubscribe()
    wait_for(lambda: not worker.pubsub.subscribed, timeout=10, what="unsubscribe handled by the thread")
    done = threading.Event()
    threading.Thread(target=lambda: (worker.unsubscribe(), done.set()), daemon=True).start()
    assert done.wait(PROMPT), f"unsubscribe() still waiting after {PROMPT}s"


def test_an_idle_worker_exits_promptly_on_sigterm(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    env = {"REDIS_URL": redis_server.url, "POD_NAME": "shutdown-test", "KSR_EXECUTOR": "local", "KSR_LOCK": "redis"}
    settings = Settings.from_env(env)
    queue = Queue(worker_command(settings)[3], connection=redis_client)
    for _ in range(5):  # the race is lost about one time in eight
        proc = subprocess.Popen(
            worker_command(settings),
            env={**os.environ, **env, **worker_env(settings)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Idle: in its blocking read, signal handlers installed (a SIGTERM before that ends it at once).
            wait_for(
                lambda: [w.get_state() for w in Worker.all(queue=queue)] == ["idle"], timeout=30, what="worker idle"
            )
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(PROMPT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker still running {PROMPT}s after SIGTERM") from None
            assert code == 0, f"exit code {code} after {time.monotonic() - sent:.2f}s"
            assert Worker.all(queue=queue) == [], "the worker registered its death"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
