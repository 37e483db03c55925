"""`ksr pending list|replay|ack`: entries the group delivered and nobody acked yet.

An entry stays pending when the consumer that read it died before XACK (a killed leader),
or while the leader is working on it. A new leader reclaims them all (XAUTOCLAIM) on
takeover, so these commands are for the cases in between: look at what is stuck, put an
entry back at the end of its stream with a fresh delivery counter (replay), or drop it (ack).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

import click
import redis
from redis.exceptions import ResponseError

from runner.cli._context import chosen_streams, cli_context, fail, json_option, login, stream_option, yes_option
from runner.cli._output import DURATION, dry_run_footer, emit_json, message_id_of, print_table
from runner.durations import format_age
from runner.operate import ack_pending_entry, replay_pending_entry
from runner.store.errors import redis_errors
from runner.store.stream_inspection import StreamInspection

__all__ = ["PendingRow", "collect", "pending"]

log = logging.getLogger(__name__)

PAGE = 1000
ENTRY_ID = re.compile(r"^\d+(-\d+)?$")


@dataclass(frozen=True)
class PendingRow:
    stream: str
    entry_id: str
    message_id: str | None  # None: the payload is unreadable, or the entry was deleted
    consumer: str
    idle_ms: int
    deliveries: int
    exists: bool  # False when the stream entry was trimmed or deleted


def _pending(inspection: StreamInspection, stream: str, **kwargs: Any) -> list[Any]:
    try:
        return inspection.pending(stream, **kwargs)
    except ResponseError as e:
        if str(e).startswith("NOGROUP"):  # no stream or no group yet: nothing pending
            return []
        raise


def collect(
    inspection: StreamInspection,
    streams: list[str],
    *,
    ids: tuple[str, ...] = (),
    consumer: str | None = None,
    min_idle_ms: int | None = None,
    limit: int | None = None,
) -> list[PendingRow]:
    """Pending entries of the group, with their message ids read from the payloads."""
    infos: list[tuple[str, Any]] = []
    if ids:
        for entry_id in ids:
            found = [(s, i) for s in streams for i in _pending(inspection, s, start=entry_id, end=entry_id, count=1)]
            if not found:
                fail(f"entry {entry_id} is not pending in {', '.join(streams)}")
            infos.extend(found)
    else:
        for stream in streams:
            start = "-"
            while limit is None or len(infos) < limit:
                page = _pending(inspection, stream, consumer=consumer, min_idle_ms=min_idle_ms, start=start, count=PAGE)
                infos.extend((stream, info) for info in page)
                if len(page) < PAGE:
                    break
                start = "(" + page[-1].entry_id
        if limit is not None:
            infos = infos[:limit]
    return _with_payloads(inspection.redis, infos)


def _with_payloads(client: redis.Redis, infos: list[tuple[str, Any]]) -> list[PendingRow]:
    if not infos:
        return []
    with redis_errors():
        pipe = client.pipeline(transaction=False)
        for stream, info in infos:
            pipe.xrange(stream, info.entry_id, info.entry_id)
        replies = pipe.execute()
    rows = []
    for (stream, info), found in zip(infos, replies):
        fields = dict(found[0][1]) if found else {}
        rows.append(
            PendingRow(
                stream=stream,
                entry_id=info.entry_id,
                message_id=message_id_of(fields.get(b"payload")),
                consumer=info.consumer,
                idle_ms=info.idle_ms,
                deliveries=info.deliveries,
                exists=bool(found),
            )
        )
    return rows


# -- commands -----------------------------------------------------------------------------------


@click.group()
def pending() -> None:
    """Entries delivered to the group and not acked: list, replay, ack."""


def _check_ids(ids: tuple[str, ...]) -> None:
    for entry_id in ids:
        if not ENTRY_ID.match(entry_id):
            raise click.BadParameter(
                f"not a stream entry id (like 1700000000000-0): {entry_id!r}", param_hint="ENTRY_ID"
            )


def _rows_doc(rows: list[PendingRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def _table(rows: list[PendingRow]) -> None:
    print_table(
        ["STREAM", "ENTRY", "MESSAGE-ID", "CONSUMER", "IDLE", "DELIVERIES"],
        [
            [
                r.stream,
                r.entry_id,
                r.message_id or ("(deleted)" if not r.exists else "(unparsable)"),
                r.consumer,
                format_age(r.idle_ms / 1000),
                r.deliveries,
            ]
            for r in rows
        ],
        empty="no pending entries",
    )


filters = [
    stream_option(),
    click.option("--consumer", "-c", metavar="NAME", default=None, help="Only entries owned by this consumer (pod)."),
    click.option(
        "--idle-over",
        type=DURATION,
        default=None,
        metavar="DURATION",
        help="Only entries idle longer than this (30s, 5m, 1h).",
    ),
]


def _with_filters(f: Any) -> Any:
    for option in reversed(filters):
        f = option(f)
    return f


@pending.command("list")
@_with_filters
@click.option(
    "--count", "-n", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many entries."
)
@json_option
def list_(stream: str | None, consumer: str | None, idle_over: float | None, count: int, as_json: bool) -> None:
    """Pending entries: entry id, message id, consumer, idle time, deliveries."""
    obj = cli_context()
    rows = collect(
        obj.inspection(),
        chosen_streams(obj.settings(), stream),
        consumer=consumer,
        min_idle_ms=_ms(idle_over),
        limit=count,
    )
    if as_json:
        emit_json(_rows_doc(rows))
    else:
        _table(rows)


def _select(
    ids: tuple[str, ...], stream: str | None, consumer: str | None, idle_over: float | None, all_: bool
) -> list[PendingRow]:
    """Entries named by id, or chosen by --idle-over / --all (with the filters)."""
    _check_ids(ids)
    if ids and (all_ or idle_over is not None):
        raise click.UsageError("give entry ids, or --idle-over / --all, not both")
    if not ids and not all_ and idle_over is None:
        raise click.UsageError("name the entries: ENTRY_ID..., --idle-over DURATION or --all")
    obj = cli_context()
    streams = chosen_streams(obj.settings(), stream)
    return collect(obj.inspection(), streams, ids=ids, consumer=consumer, min_idle_ms=_ms(idle_over))


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def _acting_on_selection(act: Any) -> Any:
    """A replay/ack command: entry ids or filters/--all choose the rows, --yes acts, --json prints.

    `act(rows, idle_over, yes)` returns one result document a row; the table or JSON is ours.
    """

    @functools.wraps(act)
    def command(
        ids: tuple[str, ...],
        stream: str | None,
        consumer: str | None,
        idle_over: float | None,
        all_: bool,
        yes: bool,
        as_json: bool,
    ) -> None:
        rows = _select(ids, stream, consumer, idle_over, all_)
        _report(act(rows, idle_over, yes), as_json, yes, act.__name__)

    options = [
        click.argument("ids", nargs=-1, metavar="[ENTRY_ID]..."),
        *filters,
        click.option("--all", "all_", is_flag=True, help="Every pending entry (within the filters)."),
        yes_option,
        json_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@pending.command()
@_acting_on_selection
def replay(rows: list[PendingRow], idle_over: float | None, yes: bool) -> list[dict[str, Any]]:
    """Put pending entries back at the end of their stream, acking the old ones.

    Each replay re-adds the entry's fields to the same stream and XACKs the old entry in one
    Lua step, so the new entry starts with a fresh delivery counter. Safe while a leader
    runs: if it is still working on the old entry, the state store recognises the message
    id and no second Job is made. Dry run unless --yes.
    """
    obj = cli_context()
    results: list[dict[str, Any]] = []
    for row in rows:
        doc: dict[str, Any] = {**asdict(row), "outcome": "would-replay", "new_entry_id": None}
        if yes:
            outcome, new_id = replay_pending_entry(
                obj.redis(),
                obj.settings(),
                stream=row.stream,
                entry_id=row.entry_id,
                by=login(),
                min_idle_ms=_ms(idle_over) or 0,
            )
            doc.update(outcome=outcome.lower().replace("notpending", "not-pending"), new_entry_id=new_id)
        results.append(doc)
    return results


@pending.command()
@_acting_on_selection
def ack(rows: list[PendingRow], idle_over: float | None, yes: bool) -> list[dict[str, Any]]:
    """Acknowledge pending entries without running them. Dry run unless --yes.

    An acked entry is never delivered again: its message runs only if a Job was already
    made for it. Use it for entries you know are done or unwanted.
    """
    obj = cli_context()
    results: list[dict[str, Any]] = []
    for row in rows:
        doc: dict[str, Any] = {**asdict(row), "outcome": "would-ack"}
        if yes:
            acked = ack_pending_entry(obj.redis(), obj.settings(), stream=row.stream, entry_id=row.entry_id, by=login())
            doc["outcome"] = "acked" if acked else "not-pending"
        results.append(doc)
    return results


def _report(results: list[dict[str, Any]], as_json: bool, yes: bool, verb: str) -> None:
    if as_json:
        emit_json(results)
    elif not results:
        click.echo("no pending entries matched", err=True)
    else:
        print_table(
            ["STREAM", "ENTRY", "MESSAGE-ID", "CONSUMER", "IDLE", "OUTCOME", "NEW-ENTRY"][
                : 7 if verb == "replay" else 6
            ],
            [
                [
                    r["stream"],
                    r["entry_id"],
                    r["message_id"],
                    r["consumer"],
                    format_age(r["idle_ms"] / 1000),
                    r["outcome"],
                    *([r.get("new_entry_id")] if verb == "replay" else []),
                ]
                for r in results
            ],
        )
    if not yes:
        dry_run_footer(len(results), verb)
