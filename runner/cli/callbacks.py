"""`ksr callbacks redeliver ID STATUS`: one callback of a message once more, to its webhook
(runner.operate.redeliver; docs/callbacks.md, "Re-delivery")."""

from __future__ import annotations

import click

from runner.cli._context import cli_context, fail, json_option, login
from runner.cli._output import emit_json
from runner.operate import NotRedeliverable, redeliver_callback
from runner.operate.redeliver import STATUSES

__all__ = ["callbacks"]


@click.group()
def callbacks() -> None:
    """A message's webhook callbacks."""


@callbacks.command()
@click.argument("message_id", metavar="ID")
@click.argument("status", metavar="STATUS", type=click.Choice([str(s) for s in STATUSES]))
@click.option("--by", default=None, metavar="WHO", help="Who asks (in the events stream); default: your login.")
@json_option
def redeliver(message_id: str, status: str, by: str | None, as_json: bool) -> None:
    """Send callback STATUS of message ID to its webhook once more (the same body, a new
    attempt after the earlier ones), by the message's one courier. Refused (exit 1, the
    reason on stderr) for an unknown id, a status never owed, a message without a webhook,
    a callback still in flight or being delivered, and a URL that answered 410."""
    obj = cli_context()
    try:
        done = redeliver_callback(
            obj.redis(), obj.settings(), message_id, int(status), by=by if by is not None else login()
        )
    except NotRedeliverable as e:
        if as_json:
            emit_json({"id": message_id, "status": int(status), "redelivered": False, "reason": e.reason})
        fail(str(e))
    if as_json:
        emit_json({"id": message_id, "status": done.status, "redelivered": True, "courier": done.courier})
    else:
        click.echo(f"callback {done.status} of {message_id} owed again: courier {done.courier} delivers it")
