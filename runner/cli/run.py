"""`ksr run`: the container's entry point."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

import click
import redis

from runner.cli._context import cli_context
from runner.settings import Settings
from runner.store.state import TERM_KEY
from runner.store.streams import GROUP_START_ID

if TYPE_CHECKING:
    from runner.process.supervisor import ChildSpec


def serve(settings: Settings, *, on_started: callable | None = None) -> int:  # type: ignore[valid-type]
    """The runner in this process, gunicorn (probes) and an RQ worker as supervised children.
    Returns the exit code (0 after a clean SIGTERM)."""
    from runner.logs import setup_logging
    from runner.process.supervisor import Supervisor

    setup_logging(settings.server.log_format, settings.server.log_level)
    check_redis(settings)
    # The supervisor first: it prepares the metrics directory before any metric exists.
    supervisor = Supervisor(settings, children=default_children(settings))

    def runner_main(stop: threading.Event) -> None:
        from runner.pipeline.wiring import build_runner
        from runner.process.statusboard import BoardObserver

        build_runner(settings, observers=[BoardObserver(supervisor.board)]).run(stop)

    if on_started is not None:
        on_started(supervisor)
    return supervisor.run(runner_main)


# The children are this command's choice, not the supervisor's: process/ stays below the
# callbacks it runs. Imported when used, so the other commands start without rq.
def gunicorn_child(settings: Settings) -> ChildSpec:
    from runner.process.supervisor import ChildSpec

    return ChildSpec(
        "probes",
        (sys.executable, "-m", "gunicorn", "-c", "python:probes.gunicorn_conf", "probes.app:create_app()"),
        env={"HTTP_SERVER_PORT": str(settings.server.http_port)},
    )


def rq_worker_child(settings: Settings) -> ChildSpec:
    from runner.callbacks.worker import worker_command, worker_env
    from runner.process.supervisor import ChildSpec

    return ChildSpec("rq-worker", tuple(worker_command(settings)), env=worker_env(settings))


def default_children(settings: Settings) -> list[ChildSpec]:
    """The children of one pod: the probes under gunicorn and the callback worker."""
    return [gunicorn_child(settings), rq_worker_child(settings)]


def check_redis(settings: Settings) -> None:
    """At start, before any child: a TLS, credential or ACL mistake is one ConfigError
    naming its variable. An unreachable Redis passes: the runner waits for it."""
    from runner.store.connection import connect, preflight, require

    r = settings.redis
    client = connect(r, socket_timeout=5.0, connect_timeout=5.0)
    try:
        if not preflight(client, r):
            return
        # One call of each kind the pipeline needs, on its own keys (docs/redis.md, minimal ACL).
        stream = settings.streams.streams[0]
        require(r, f"read the stream {stream}", lambda: client.xlen(stream))
        require(r, f"create the group on {stream}", lambda: _ensure_group(client, stream, settings.streams.group))
        script = "return redis.call('GET', KEYS[1])"
        require(r, "run the state store's scripts", lambda: client.eval(script, 1, TERM_KEY))
        queue = f"rq:queue:{settings.callbacks.queue}"
        require(r, "use the callback queue", lambda: client.llen(queue))
    finally:
        client.close()


def _ensure_group(client: redis.Redis, stream: str, group: str) -> None:
    try:
        client.xgroup_create(stream, group, id=GROUP_START_ID, mkstream=True)
    except redis.ResponseError as e:
        if not str(e).startswith("BUSYGROUP"):
            raise


@click.command()
@click.option("--port", type=int, default=None, help="Port of the probes and metrics (HTTP_SERVER_PORT).")
def run(port: int | None) -> None:
    """Run the service: elector, reader and watcher here; probes and callbacks as children.

    SIGTERM stops reading, finishes in-flight creates, releases the Lease, stops the
    children and exits 0.
    """
    ctx = cli_context()
    settings = Settings.from_env(REDIS_URL=ctx.redis_url, HTTP_SERVER_PORT=None if port is None else str(port))
    sys.exit(serve(settings))
