"""`ksr pause STREAM` / `ksr resume STREAM`: stop and restart the leader's reading of a stream
(runner.store.pause; docs/operations.md, "Pausing a stream"). Entries keep arriving and wait,
their backlog ageing in `ksr status`; the leader honours a pause from its next read."""

from __future__ import annotations

import getpass

import click

from election.clock import SYSTEM_CLOCK
from runner.cli._context import cli_context, json_option
from runner.cli._output import emit_json
from runner.store.pause import PauseStore, pause_namespace

__all__ = ["pause", "resume"]


def _store_and_check(stream: str) -> PauseStore:
    obj = cli_context()
    settings = obj.settings()
    if stream not in settings.streams.streams:
        raise click.BadParameter(
            f"{stream!r} is not one of KSR_STREAMS ({', '.join(settings.streams.streams)})", param_hint="'STREAM'"
        )
    return PauseStore(obj.redis(), namespace=pause_namespace(settings.state.active_key))


@click.command()
@click.argument("stream")
@click.option("--by", default=None, metavar="WHO", help="Who pauses it (shown by ksr status); default: your login.")
@json_option
def pause(stream: str, by: str | None, as_json: bool) -> None:
    """Stop reading new entries of STREAM (one of KSR_STREAMS) until `ksr resume STREAM`."""
    store = _store_and_check(stream)
    who = by if by is not None else _login()
    changed = store.pause_stream(stream, at_ms=int(SYSTEM_CLOCK.time() * 1000), by=who)
    if as_json:
        emit_json({"stream": stream, "paused": True, "changed": changed})
    else:
        click.echo(f"paused {stream}" if changed else f"{stream} was paused already")


@click.command()
@click.argument("stream")
@json_option
def resume(stream: str, as_json: bool) -> None:
    """Read STREAM again; what waited is read in order."""
    changed = _store_and_check(stream).resume_stream(stream)
    if as_json:
        emit_json({"stream": stream, "paused": False, "changed": changed})
    else:
        click.echo(f"resumed {stream}" if changed else f"{stream} was not paused")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
