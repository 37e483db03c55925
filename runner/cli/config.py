"""`ksr config`: the effective settings, secrets masked."""

from __future__ import annotations

import logging

import click

from runner.cli._context import cli_context, json_option
from runner.cli._output import emit_json

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
EVENTS_PAGE = 1000
HEALTH_TIMEOUT = 3.0
DONE, FAILED, DISPATCHED = "done", "failed", "dispatched"
_OUTCOME = {0: DISPATCHED, 2: DONE, 3: FAILED, 99: FAILED}


# -- config ---------------------------------------------------------------------------------------


@click.command()
@json_option
def config(as_json: bool) -> None:
    """The effective settings, secrets masked.

    From the environment, the defaults and --redis-url.
    """
    masked = cli_context().settings().masked()
    if as_json:
        emit_json(masked)
        return
    for key, value in masked.items():
        click.echo(f"{key}={value}")
