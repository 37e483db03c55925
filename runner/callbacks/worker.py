"""The callback worker process: an RQ worker with the scheduler, one per replica."""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from rq.worker import SimpleWorker

from runner.callbacks.lanes import queues
from runner.process.lifeline import die_with_parent
from runner.settings import Settings
from runner.settings.variables import POD_NAME

# Retries are scheduled jobs, moved to their queue by whichever worker
# holds RQ's scheduler lock. When that worker dies with its pod the lock lapses after 61 s,
# and the others only try to take it in their maintenance pass, which RQ runs every 600 s
# and an idle worker reaches only between blocking reads of worker_ttl - 15 s (default 405).
MAINTENANCE_INTERVAL = 30  # seconds
WORKER_TTL = 35  # seconds: blocking reads of 20 s; a job (callback timeout + 10 s) fits
PUBSUB_STOP_WAIT = 1.0  # seconds: the pubsub thread is a daemon; the exit does not depend on it


class CallbackWorker(SimpleWorker):
    """SimpleWorker (no forked work horse per job: one set of metric files per process)
    named `<POD_NAME>.<pid>.<random>`: readable in `rq info`, and a restarted worker never
    collides with the registration its killed predecessor left behind (RQ refuses a live name)."""

    def __init__(self, queues: Any, name: str | None = None, *args: Any, **kwargs: Any) -> None:
        die_with_parent()  # this worker and its scheduler process end with the supervisor
        pod = POD_NAME.read()
        super().__init__(queues, name or f"{pod}.{os.getpid()}.{uuid.uuid4().hex[:6]}", *args, **kwargs)

    def unsubscribe(self) -> None:
        """RQ's teardown sends UNSUBSCRIBE before it tells its pubsub thread to stop: a thread
        that reads the reply first waits up to 60 s (RQ's sleep_time) for a new subscription,
        and redis-py's stop() joins it without a bound, so one SIGTERM in eight took a minute.
        Told first, the thread ends on the reply; the join is bounded all the same."""
        thread = self.pubsub_thread
        if thread is None:
            return
        thread.stop(timeout=0)  # clears its run flag, does not wait
        self.pubsub.unsubscribe()
        thread.join(PUBSUB_STOP_WAIT)
        self.pubsub.close()


def worker_command(settings: Settings) -> list[str]:
    """argv of the RQ worker that delivers callbacks; run it with `worker_env(settings)`.

    It is `main()` below rather than `rq worker`: RQ's command line builds its own client
    from a URL, and this one must be `runner.store.connection.connect`'s (TLS files, ACL
    credentials from their variables, Sentinel). The scheduler is required: retries are
    scheduled jobs, and without one they would never run. Every replica runs one; RQ's
    lock makes one scheduler active per queue at a time.
    """
    return [sys.executable, "-m", __name__, *queues(settings)]  # the main queue first: see runner.callbacks.lanes


def worker_env(settings: Settings) -> dict[str, str]:
    """The Redis URL goes in the environment, not argv: no password in `ps`. The worker
    reads every other variable from the environment it inherits, as the runner did."""
    return {"REDIS_URL": settings.redis.url, "POD_NAME": settings.identity.pod_name}


def main(argv: list[str]) -> int:
    """`python -m runner.callbacks.worker QUEUE...`: serve the queues, in priority order, until SIGTERM."""
    from rq.logutils import setup_loghandlers

    from runner.store.connection import connect, describe, preflight

    settings = Settings.from_env()
    # A blocking dequeue holds the socket for up to WORKER_TTL - 15 s: the timeout outlasts it.
    conn = connect(settings.redis, socket_timeout=WORKER_TTL + 10, retries=3, health_check_interval=30)
    preflight(conn, settings.redis)  # a configuration mistake ends the worker with its variable's name
    setup_loghandlers("WARNING")  # a line per callback at INFO is noise; our own module logs what matters
    worker = CallbackWorker(
        argv or queues(settings),
        connection=conn,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
    )
    print(f"callback worker {worker.name} on {describe(settings.redis)}", file=sys.stderr)
    worker.work(with_scheduler=True, logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
