"""`ksr dead list|show|replay|purge`: the dead-letter streams `<stream>:dead`.

Replay re-validates the payload with the current settings and consults the message's state
record before moving the entry back; those rules are runner.pipeline.replay's.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import redis

from runner.cli._context import chosen_streams, cli_context, fail, json_option, login, stream_option, yes_option
from runner.cli._output import dry_run_footer, emit_json, format_ms_time, message_id_of, print_table
from runner.inspect import Layout, dead_by_reason, dead_letters, iter_dead
from runner.operate import DeadOutcome, purge_dead_entries, replay_dead
from runner.store.deadletter import (
    REASONS,
    DeadEntry,
    dead_stream,
    get_dead,
)
from runner.store.replies import text, text_fields
from runner.store.state import StateStore

__all__ = ["dead"]

log = logging.getLogger(__name__)


def _find(client: redis.Redis, streams: list[str], dead_id: str) -> DeadEntry:
    for stream in streams:
        entry = get_dead(client, stream, dead_id)
        if entry is not None:
            return entry
    fail(f"dead entry {dead_id} not found in {', '.join(s + ':dead' for s in streams)}")


def _doc(entry: DeadEntry, *, full: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dead_id": entry.dead_id,
        "stream": entry.original_stream,
        "original_id": entry.original_id,
        "message_id": message_id_of(entry.payload),
        "reason": entry.reason,
        "error": entry.error,
        "deliveries": entry.deliveries,
        "dead_at": format_ms_time(entry.dead_at),
    }
    if full:
        payload = text(entry.payload)
        try:
            doc["payload"] = json.loads(payload)
        except ValueError:
            doc["payload"] = payload
        doc["extra_fields"] = text_fields(entry.extra_fields)
    return doc


@click.group()
def dead() -> None:
    """Dead-lettered entries: list, show, replay, purge."""


@dead.command("list")
@stream_option()
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many per stream."
)
@click.option("--reason", default=None, metavar="REASON", help=f"Only this reason ({', '.join(REASONS)}).")
@json_option
def list_(stream: str | None, count: int, reason: str | None, as_json: bool) -> None:
    """Dead entries, oldest first: id, stream, message id, reason, deliveries, error."""
    obj = cli_context()
    layout = Layout.from_settings(obj.settings())
    entries = [
        e
        for s in chosen_streams(obj.settings(), stream)
        for e in dead_letters(obj.redis(), layout=layout, stream=s, reason=reason, count=count)
    ]
    if as_json:
        emit_json([_doc(e) for e in entries])
        return
    print_table(
        ["DEAD-ID", "STREAM", "MESSAGE-ID", "REASON", "DELIVERIES", "DEAD-AT", "ERROR"],
        [
            [
                e.dead_id,
                e.original_stream,
                message_id_of(e.payload) or "(unparsable)",
                e.reason,
                e.deliveries,
                format_ms_time(e.dead_at),
                _short(e.error),
            ]
            for e in entries
        ],
        empty="no dead entries",
    )


def _short(text: str, width: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


@dead.command()
@stream_option()
@json_option
def reasons(stream: str | None, as_json: bool) -> None:
    """How many dead entries each reason has, the most frequent first."""
    obj = cli_context()
    counts = dead_by_reason(obj.redis(), stream, layout=Layout.from_settings(obj.settings()))
    if as_json:
        emit_json(counts)
        return
    print_table(["REASON", "COUNT"], [[r, n] for r, n in counts.items()], empty="no dead entries")


@dead.command()
@click.argument("dead_id")
@stream_option("The stream whose dead letters to look in; default: every stream.")
@json_option
def show(dead_id: str, stream: str | None, as_json: bool) -> None:
    """One dead entry with every field, the payload pretty-printed, and its state record."""
    obj = cli_context()
    settings = obj.settings()
    entry = _find(obj.redis(), chosen_streams(settings, stream), dead_id)
    doc = _doc(entry, full=True)
    message_id = doc["message_id"]
    record = StateStore.from_settings(obj.redis(), settings).get(message_id) if message_id else None
    doc["state_record"] = None if record is None else dict(record)  # the raw fields, as JSON
    if as_json:
        emit_json(doc)
        return
    for key in ("dead_id", "stream", "original_id", "message_id", "reason", "deliveries", "dead_at", "error"):
        click.echo(f"{key + ':':<14}{doc[key] if doc[key] is not None else '-'}")
    for key, value in doc["extra_fields"].items():
        click.echo(f"{'field ' + key + ':':<14}{value}")
    record = doc["state_record"]
    click.echo(
        f"{'state:':<14}" + (", ".join(f"{k}={v}" for k, v in sorted(record.items())) if record else "no record")
    )
    click.echo("payload:")
    payload = doc["payload"]
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False) if not isinstance(payload, str) else payload)


@dead.command()
@click.argument("dead_ids", nargs=-1, metavar="[DEAD_ID]...")
@stream_option("The stream whose dead letters to look in; default: every stream.")
@click.option("--reason", default=None, metavar="REASON", help="Every dead entry with this reason.")
@click.option("--all", "all_", is_flag=True, help="Every dead entry (of --stream, or of every stream).")
@click.option("--force", is_flag=True, help="Replay even when the message's dedup record may have expired.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr; default: on a terminal.")
@json_option
def replay(
    dead_ids: tuple[str, ...],
    stream: str | None,
    reason: str | None,
    all_: bool,
    force: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Re-validate dead entries with the current settings and move them back to their stream:
    the ids given, or every one with --reason R, or --all.

    Refused (exit 1) when the payload is still invalid or refused by policy, when the
    message already has a Job, and without --force when its dedup record may have expired.
    Ends with a summary: replayed, refused by why.
    """
    if sum((bool(dead_ids), reason is not None, all_)) != 1:
        raise click.UsageError("give dead entry ids, --reason REASON or --all (one of the three)")
    obj = cli_context()
    settings = obj.settings()
    client = obj.redis()
    streams = chosen_streams(settings, stream)
    if dead_ids:
        entries = [_find(client, streams, dead_id) for dead_id in dead_ids]
        selection = " ".join(dead_ids)
    else:
        layout = Layout.from_settings(settings)
        entries = [e for s in streams for e in iter_dead(client, layout=layout, stream=s, reason=reason)]
        selection = " ".join(dead_stream(s) for s in streams) + (f" reason={reason}" if reason is not None else "")
    show = progress if progress is not None else (len(entries) > 1 and sys.stderr.isatty())
    with _bar(show, len(entries)) as bar:
        outcomes = replay_dead(
            client,
            settings,
            entries,
            force=force,
            by=login(),
            selection=selection,
            after_each=lambda _: bar.update(1),
        )
    results = [_replay_doc(o) for o in outcomes]
    refused = [doc for doc in results if not doc["replayed"]]
    if as_json:
        emit_json(results)
    else:
        for doc in results:
            if doc["replayed"]:
                click.echo(f"{doc['dead_id']} -> {doc['stream']} {doc['new_entry_id']} ({doc['reason']})")
    if len(results) == 1 and refused:
        fail(f"dead entry {refused[0]['dead_id']} not replayed: {refused[0]['reason']}")
    for doc in refused:
        click.echo(f"refused: {doc['dead_id']} (id {doc['message_id'] or '?'}): {doc['reason']}", err=True)
    if len(results) != 1:
        click.echo(_summary(results), err=True)
    if refused:
        fail(f"{len(refused)} of {len(results)} dead entries not replayed")


def _replay_doc(outcome: DeadOutcome) -> dict[str, Any]:
    entry, done = outcome.entry, outcome.result
    return {
        "dead_id": entry.dead_id,
        "stream": entry.original_stream,
        "message_id": done.message_id or message_id_of(entry.payload),
        "replayed": done.replayed,
        "new_entry_id": done.new_entry_id,
        "reason": done.reason,
    }


def _summary(results: list[dict[str, Any]]) -> str:
    replayed = sum(1 for r in results if r["replayed"])
    why: dict[str, int] = {}
    for r in results:
        if not r["replayed"]:
            key = str(r["reason"]).split(":", 1)[0]
            why[key] = why.get(key, 0) + 1
    refused = "; ".join(f"{n} {k}" for k, n in sorted(why.items(), key=lambda kv: -kv[1]))
    return f"summary: {replayed} replayed, {len(results) - replayed} refused" + (f" ({refused})" if refused else "")


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _bar(show: bool, length: int) -> Iterator[Any]:
    if not show:
        yield _NoBar()
        return
    with click.progressbar(length=length, label="replaying dead entries", file=sys.stderr) as bar:
        yield bar


@dead.command()
@click.argument("dead_ids", nargs=-1, metavar="[DEAD_ID]...")
@stream_option()
@click.option("--all", "all_", is_flag=True, help="Every dead entry (of --stream, or of every stream).")
@yes_option
@json_option
def purge(dead_ids: tuple[str, ...], stream: str | None, all_: bool, yes: bool, as_json: bool) -> None:
    """Delete dead entries for good. Dry run unless --yes."""
    if bool(dead_ids) == all_:
        raise click.UsageError("give dead entry ids or --all (one of the two)")
    obj = cli_context()
    client = obj.redis()
    streams = chosen_streams(obj.settings(), stream)
    by_stream: dict[str, list[str]] = {}
    if all_:
        with_counts = {s: int(client.xlen(dead_stream(s))) for s in streams}
        targets = {s: n for s, n in with_counts.items() if n}
    else:
        for dead_id in dead_ids:
            by_stream.setdefault(_find(client, streams, dead_id).original_stream, []).append(dead_id)
        targets = {s: len(ids) for s, ids in by_stream.items()}
    removed: dict[str, int] = {}
    if yes:
        for s in targets:
            removed[s] = purge_dead_entries(
                client,
                obj.settings(),
                stream=s,
                ids="all" if all_ else by_stream[s],
                by=login(),
                selection=dead_stream(s) + (" all" if all_ else " " + " ".join(by_stream[s])),
            )
    if as_json:
        emit_json(
            {
                "dry_run": not yes,
                "streams": {s: {"matched": n, "removed": removed.get(s, 0)} for s, n in targets.items()},
            }
        )
    else:
        for s, n in targets.items():
            click.echo(f"{dead_stream(s)}  {'removed ' + str(removed.get(s, 0)) if yes else 'would remove ' + str(n)}")
    if not yes:
        dry_run_footer(sum(targets.values()), "purge")
