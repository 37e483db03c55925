"""`ksr dead list|show|replay|purge`: the dead-letter streams `<stream>:dead`.

Replay re-validates the payload with the current settings (schema and policy) and refuses
what is still invalid, then consults the state store before moving the entry back:

- a record with a Job: the message already ran; the runner would drop the replay as a
  duplicate, so it is refused (submit it under a new id to run it again);
- a record without a Job in a terminal state (e.g. the apiserver refused the Job): the
  record is released so the replay can run;
- no record, and the message is younger than KSR_STATE_TTL: it never got one (it was
  dead-lettered before the claim, e.g. invalid or refused by policy): safe to replay;
- no record, and the message is older than KSR_STATE_TTL: the record may have expired, so
  whether a Job already ran for it cannot be told any more: refused without --force.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import click
import redis

from runner.cli._context import (
    chosen_streams,
    cli_context,
    fail,
    json_option,
    stream_option,
    yes_option,
)
from runner.cli._output import (
    dry_run_footer,
    emit_json,
    entry_time_ms,
    format_age,
    format_ms_time,
    message_id_of,
    print_table,
)
from runner.errors import InvalidMessage
from runner.pipeline.message import parse_message
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from runner.store.deadletter import (
    DeadEntry,
    dead_stream,
    get_dead,
    list_dead,
    purge_dead,
    replay_dead,
)
from runner.store.record import StateRecord
from runner.store.replies import text, text_fields
from runner.store.state import StateStore

__all__ = ["ReplayDecision", "dead", "decide_replay"]

log = logging.getLogger(__name__)


def state_store(client: redis.Redis, settings: Settings) -> StateStore:
    return StateStore(
        client,
        ttl_seconds=settings.state.ttl_seconds,
        prefix=settings.state.key_prefix,
        active_key=settings.state.active_key,
    )


@dataclass(frozen=True)
class ReplayDecision:
    allowed: bool
    release: bool  # release the state record first so the replayed message is not a duplicate
    reason: str


def decide_replay(
    entry: DeadEntry, record: StateRecord | None, *, ttl_seconds: int, force: bool, now: float | None = None
) -> ReplayDecision:
    """Whether a (valid) dead entry may be replayed, given its message's state record. Pure."""
    if record is not None:
        if record.has_job:
            return ReplayDecision(
                False,
                False,
                f"message already has Job {record.namespace or '?'}/{record.job_name} "
                f"(state {record.state or '?'}); the runner would drop the replay as a "
                "duplicate: submit it under a new id to run it again",
            )
        if record.is_terminal:
            return ReplayDecision(True, True, f"state record ({record.state}, no Job) released")
        return ReplayDecision(True, False, f"state record {record.state or '?'} without a Job: the runner resumes it")
    born_ms = entry_time_ms(entry.original_id) or entry.dead_at or 0
    age = (time.time() if now is None else now) - born_ms / 1000
    if age < ttl_seconds:
        return ReplayDecision(True, False, "no state record: the message never got one")
    if force:
        return ReplayDecision(True, False, "no state record and older than KSR_STATE_TTL; replayed with --force")
    return ReplayDecision(
        False,
        False,
        f"no state record and the message is {format_age(age)} old, older than KSR_STATE_TTL "
        f"({ttl_seconds}s): its record may have expired, so a Job may already have run for it "
        "and a replay could not be deduplicated; pass --force to replay anyway",
    )


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
@json_option
def list_(stream: str | None, count: int, as_json: bool) -> None:
    """Dead entries, oldest first: id, stream, message id, reason, deliveries, error."""
    obj = cli_context()
    entries = [e for s in chosen_streams(obj.settings(), stream) for e in list_dead(obj.redis(), s, count=count)]
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
    record = state_store(obj.redis(), settings).get(message_id) if message_id else None
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
@click.argument("dead_ids", nargs=-1, required=True, metavar="DEAD_ID...")
@stream_option("The stream whose dead letters to look in; default: every stream.")
@click.option("--force", is_flag=True, help="Replay even when the message's dedup record may have expired.")
@json_option
def replay(dead_ids: tuple[str, ...], stream: str | None, force: bool, as_json: bool) -> None:
    """Re-validate dead entries with the current settings and move them back to their stream.

    Refused (exit 1) when the payload is still invalid or refused by policy, when the
    message already has a Job, and without --force when its dedup record may have expired.
    """
    obj = cli_context()
    settings = obj.settings()
    client = obj.redis()
    streams = chosen_streams(settings, stream)
    store = state_store(client, settings)
    results: list[dict[str, Any]] = []
    refused = []
    for dead_id in dead_ids:
        entry = _find(client, streams, dead_id)
        doc: dict[str, Any] = {
            "dead_id": dead_id,
            "stream": entry.original_stream,
            "message_id": None,
            "replayed": False,
            "new_entry_id": None,
        }
        try:
            message = parse_message(entry.payload, max_bytes=settings.streams.max_message_bytes)
            check_policy(message, settings)
        except InvalidMessage as e:
            doc.update(message_id=message_id_of(entry.payload), reason=f"still invalid: {e}")
        else:
            doc["message_id"] = message.id
            decision = decide_replay(entry, store.get(message.id), ttl_seconds=settings.state.ttl_seconds, force=force)
            doc["reason"] = decision.reason
            if decision.allowed:
                if decision.release:
                    store.release(message.id)
                new_id = replay_dead(client, entry.original_stream, dead_id)
                if new_id is None:
                    doc["reason"] = "gone: replayed or purged by someone else meanwhile"
                else:
                    doc.update(replayed=True, new_entry_id=new_id)
        results.append(doc)
        if not doc["replayed"]:
            refused.append(doc)
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
    if refused:
        fail(f"{len(refused)} of {len(results)} dead entries not replayed")


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
            removed[s] = purge_dead(client, s, "all" if all_ else by_stream[s])
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
