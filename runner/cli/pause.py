"""`ksr pause STREAM` / `ksr resume STREAM`: stop and restart the leader's reading of a stream
(runner.store.pause; docs/operations.md, "Pausing a stream"). Entries keep arriving and wait,
their backlog ageing in `ksr status`; the leader honours a pause from its next read."""

from __future__ import annotations

from collections.abc import Callable

import click
import redis

from runner.cli._context import cli_context, json_option, login
from runner.cli._output import emit_json
from runner.operate import UnknownTarget, pause_stream, resume_stream
from runner.settings import Settings

__all__ = ["pause", "resume"]


def _act(operation: Callable[..., bool], stream: str, by: str) -> bool:
    obj = cli_context()
    conn: redis.Redis = obj.redis()
    settings: Settings = obj.settings()
    try:
        return operation(conn, settings, stream, by=by)
    except UnknownTarget as e:
        raise click.BadParameter(str(e), param_hint="'STREAM'") from None


@click.command()
@click.argument("stream")
@click.option("--by", default=None, metavar="WHO", help="Who pauses it (shown by ksr status); default: your login.")
@json_option
def pause(stream: str, by: str | None, as_json: bool) -> None:
    """Stop reading new entries of STREAM (one of KSR_STREAMS) until `ksr resume STREAM`."""
    changed = _act(pause_stream, stream, by if by is not None else login())
    if as_json:
        emit_json({"stream": stream, "paused": True, "changed": changed})
    else:
        click.echo(f"paused {stream}" if changed else f"{stream} was paused already")


@click.command()
@click.argument("stream")
@json_option
def resume(stream: str, as_json: bool) -> None:
    """Read STREAM again; what waited is read in order."""
    changed = _act(resume_stream, stream, login())
    if as_json:
        emit_json({"stream": stream, "paused": False, "changed": changed})
    else:
        click.echo(f"resumed {stream}" if changed else f"{stream} was not paused")
