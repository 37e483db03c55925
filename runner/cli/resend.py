"""`ksr resend ID`: a finished message once more, under a new id (runner.operate.resend)."""

from __future__ import annotations

import click

from runner.cli._context import cli_context, fail, json_option, login
from runner.cli._output import emit_json
from runner.operate import NotResendable, resend_message

__all__ = ["resend"]


@click.command()
@click.argument("message_id")
@click.option("--new-id", default=None, metavar="ID", help="The new message's id; default: ID.resend-<unix ms>.")
@json_option
def resend(message_id: str, new_id: str | None, as_json: bool) -> None:
    """Send finished message ID again under a new id: its payload, as it was, to its stream
    (runAt / delaySeconds dropped: it runs now). A dead letter is replayed instead
    (`ksr dead replay`); a message still running is refused (exit 1)."""
    obj = cli_context()
    try:
        done = resend_message(obj.redis(), obj.settings(), message_id, new_id=new_id, by=login())
    except NotResendable as e:
        fail(str(e))
    if as_json:
        emit_json({"id": message_id, "new_id": done.message_id, "stream": done.stream})
    else:
        click.echo(f"re-sent {message_id} as {done.message_id} to {done.stream}")
