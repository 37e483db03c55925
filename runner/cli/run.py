"""`ksr run`: the container's entry point."""

from __future__ import annotations

import sys
import threading

import click

from runner.cli._context import cli_context
from runner.settings import Settings


def serve(settings: Settings, *, on_started: callable | None = None) -> int:  # type: ignore[valid-type]
    """The runner in this process, gunicorn (probes) and an RQ worker as supervised children.
    Returns the exit code (0 after a clean SIGTERM)."""
    from runner.logs import setup_logging
    from runner.process.supervisor import Supervisor, default_children

    setup_logging(settings.server.log_format, settings.server.log_level)
    # The supervisor first: it prepares the metrics directory before any metric exists.
    supervisor = Supervisor(settings, children=default_children(settings))

    def runner_main(stop: threading.Event) -> None:
        from runner.pipeline.loop import Runner
        from runner.process.statusboard import BoardObserver

        Runner(settings, observers=[BoardObserver(supervisor.board)]).run(stop)

    if on_started is not None:
        on_started(supervisor)
    return supervisor.run(runner_main)


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
