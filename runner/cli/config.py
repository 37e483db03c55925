"""`ksr config`: the effective settings, secrets masked."""

from __future__ import annotations

import click

from runner.cli._context import cli_context, json_option
from runner.cli._output import emit_json


@click.command()
@json_option
def config(as_json: bool) -> None:
    """The effective settings, secrets masked.

    Every variable (docs/configuration.md), from the environment, the defaults and --redis-url.
    """
    masked = cli_context().settings().masked()
    if as_json:
        emit_json(masked)
        return
    for key, value in masked.items():
        click.echo(f"{key}={'' if value is None else value}")
