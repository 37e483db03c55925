"""`ksr cancel`, `ksr scheduled list` and `ksr schedules list`: the producer's scheduling
seen from the command line (runner.client does the work; docs/scheduling.md)."""

from __future__ import annotations

from typing import Any

import click

from election.clock import SYSTEM_CLOCK
from runner.cli._context import cli_context, fail, json_option, login
from runner.cli._output import emit_json, format_duration, print_table
from runner.client import AlreadyFinished, Client
from runner.operate import (
    UnknownMessage,
    UnknownTarget,
    cancel_message,
    resume_schedule,
    suspend_schedule,
)
from runner.schedules.config import load_schedules
from runner.schedules.overview import iso, schedule_rows
from runner.store.pause import pause_namespace

__all__ = ["cancel", "scheduled", "schedules"]


def client() -> Client:
    obj = cli_context()
    return Client(obj.settings(), redis_client=obj.redis())


@click.command()
@click.argument("message_id")
@click.option(
    "--force", is_flag=True, help="Cancel an id never seen yet: it is dropped when it arrives (for KSR_STATE_TTL)."
)
@json_option
def cancel(message_id: str, force: bool, as_json: bool) -> None:
    """Cancel a message wherever it is: scheduled, pending in a stream, or running (its Job
    is deleted by the leader). The producer gets one callback 99 `Cancelled`. A finished
    message is left alone (exit 1); so is an id found nowhere (a typo would block that id
    for KSR_STATE_TTL), unless --force."""
    obj = cli_context()
    try:
        done = cancel_message(obj.redis(), obj.settings(), message_id, force=force, by=login())
    except UnknownMessage as e:
        fail(f"{e}; --force cancels it before it arrives")
    except AlreadyFinished as e:
        fail(str(e))
    if as_json:
        emit_json({"id": message_id, "stage": done.stage})
        return
    click.echo(
        {
            "scheduled": f"cancelled {message_id} (it was scheduled)",
            "pending": f"cancelled {message_id}: not read yet; the runner drops it when it does",
            "running": f"cancel of {message_id} requested: the leader deletes its Job",
        }[done.stage]
    )


@click.group()
def scheduled() -> None:
    """Delayed messages held until they are due."""


@scheduled.command("list")
@json_option
def scheduled_list(as_json: bool) -> None:
    """Held messages, the earliest due first: id, stream, due time, in how long."""
    now = SYSTEM_CLOCK.time()
    rows: list[dict[str, Any]] = [
        {"id": s.message_id, "stream": s.stream, "due": iso(s.due), "in_seconds": round(s.due - now, 3)}
        for s in client().scheduled.listing()
    ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ["MESSAGE-ID", "STREAM", "DUE (UTC)", "IN"],
        [[r["id"], r["stream"], r["due"], format_duration(max(0.0, r["in_seconds"]))] for r in rows],
        empty="no scheduled messages",
    )


@click.group()
def schedules() -> None:
    """Recurring schedules (KSR_SCHEDULES)."""


@schedules.command("list")
@json_option
def schedules_list(as_json: bool) -> None:
    """Each entry with its next run in its own time zone and in UTC, and the last tick handled."""
    obj = cli_context()
    settings = obj.settings()
    entries = load_schedules(
        settings.schedule.schedules_file,
        streams=settings.streams.streams,
        default_stream=settings.streams.default_stream,
    )
    rows = schedule_rows(
        obj.redis(), entries, now=SYSTEM_CLOCK.time(), pause_namespace=pause_namespace(settings.state.active_key)
    )
    if as_json:
        emit_json(rows)
        return
    print_table(
        ["NAME", "CRON", "TZ", "NEXT (LOCAL)", "NEXT (UTC)", "LAST TICK (UTC)", "SUSPENDED"],
        [
            [
                r["name"],
                r["cron"],
                r["timezone"],
                r["next_run"],
                r["next_run_utc"],
                r["last_tick_utc"] or "-",
                _suspension_text(r["suspended"]),
            ]
            for r in rows
        ],
        empty="no schedules (KSR_SCHEDULES unset or empty)",
    )


def _suspension_text(suspended: dict[str, str | None] | None) -> str:
    if not suspended:
        return "-"
    return f"since {suspended['at']}" + (f" by {suspended['by']}" if suspended["by"] else "")


def _schedule_names() -> set[str]:
    settings = cli_context().settings()
    entries = load_schedules(
        settings.schedule.schedules_file,
        streams=settings.streams.streams,
        default_stream=settings.streams.default_stream,
    )
    return {e.name for e in entries}


@schedules.command("pause")
@click.argument("name")
@click.option(
    "--by", default=None, metavar="WHO", help="Who suspends it (shown by ksr schedules list); default: your login."
)
@json_option
def schedules_pause(name: str, by: str | None, as_json: bool) -> None:
    """Suspend schedule NAME: it fires nothing until resumed, and never catches up."""
    obj = cli_context()
    try:
        changed = suspend_schedule(
            obj.redis(), obj.settings(), name, known=_schedule_names(), by=by if by is not None else login()
        )
    except UnknownTarget as e:
        raise click.BadParameter(str(e), param_hint="'NAME'") from None
    if as_json:
        emit_json({"schedule": name, "suspended": True, "changed": changed})
    else:
        click.echo(f"suspended {name}" if changed else f"{name} was suspended already")


@schedules.command("resume")
@click.argument("name")
@json_option
def schedules_resume(name: str, as_json: bool) -> None:
    """Resume schedule NAME from its next tick on."""
    obj = cli_context()
    changed = resume_schedule(obj.redis(), obj.settings(), name, by=login())
    if as_json:
        emit_json({"schedule": name, "suspended": False, "changed": changed})
    else:
        click.echo(f"resumed {name}" if changed else f"{name} was not suspended")
