"""The `ksr` command line: one click group, one module per command group.

    ksr submit | validate            runner.cli.submit
    ksr pending list|replay|ack      runner.cli.pending
    ksr dead list|show|replay|purge  runner.cli.dead
    ksr jobs list|show               runner.cli.jobs
    ksr callbacks redeliver          runner.cli.callbacks
    ksr cancel, ksr scheduled list,
    ksr schedules list               runner.cli.schedule
    ksr pause | resume STREAM        runner.cli.pause
    ksr status | health | config     runner.cli.status, runner.cli.health, runner.cli.config
    ksr run, ksr dev                 runner.cli.run, runner.cli.dev

Errors of ours and of redis-py become one line on stderr and exit code 1 (failure) or 2
(usage or configuration); see runner.cli._context and docs/cli.md.
"""

from __future__ import annotations

import logging

import click

from runner import __version__
from runner.cli._context import CliContext, KsrGroup

__all__ = ["main"]

log = logging.getLogger(__name__)


@click.group("ksr", cls=KsrGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="ksr")
@click.option(
    "--redis-url",
    metavar="URL",
    default=None,
    help="Redis to use; overrides REDIS_URL (default redis://127.0.0.1:6379/0).",
)
@click.option("-v", "--verbose", count=True, help="Log what happens on stderr (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, verbose: int) -> None:
    """kube-stream-runner: turn job messages in Redis Streams into Kubernetes Jobs.

    Settings come from the environment (see `ksr config`). Exit codes: 0 ok, 1 failure,
    2 usage or configuration error.
    """
    if verbose:
        from runner.logs import setup_logging

        setup_logging("auto", "DEBUG" if verbose > 1 else "INFO")
    obj = ctx.ensure_object(CliContext)
    obj.redis_url = redis_url
    ctx.call_on_close(obj.close)


def _register() -> None:
    from runner.cli import (
        callbacks,
        config,
        dead,
        dev,
        health,
        jobs,
        pause,
        pending,
        resend,
        run,
        schedule,
        status,
        submit,
    )

    for command in (
        submit.submit,
        submit.validate,
        pending.pending,
        dead.dead,
        jobs.jobs,
        callbacks.callbacks,
        schedule.cancel,
        resend.resend,
        pause.pause,
        pause.resume,
        schedule.scheduled,
        schedule.schedules,
        status.status,
        health.health,
        config.config,
        run.run,
        dev.dev,
    ):
        main.add_command(command)


_register()
