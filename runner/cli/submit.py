"""`ksr submit` and `ksr validate`: job messages from a file or stdin, checked before XADD.

Input: one JSON message, a JSON list of messages, or JSON Lines (one message a line; blank
lines are skipped). The schema (runner.message) is always checked; the runner's policy
(runner.pipeline.policy: namespaces, images, envRefs, webhook hosts) only with --check-policy, since
it depends on the settings of the runner that will read the stream, which may not be the
environment `ksr` runs in.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import click
import redis

from election.clock import SYSTEM_CLOCK
from runner.cli._context import cli_context, fail, json_option
from runner.cli._output import DURATION, emit_json
from runner.errors import InvalidMessage
from runner.lifecycle import State
from runner.message import Message, parse_message, payload_id, rfc3339_problem
from runner.pipeline.delay import due_time
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from runner.store.errors import redis_errors
from runner.store.record import Field
from runner.store.replication import NotReplicated, add_replicated
from runner.store.replies import text

__all__ = ["Item", "default_stream", "read_items", "submit", "validate"]

log = logging.getLogger(__name__)

PROGRESS_MIN = 20  # a progress bar for at least this many messages (on a terminal)
XADD_CHUNK = 100  # XADDs per pipeline round trip


@dataclass
class Item:
    """One message read from the input, with where it came from (for error lines)."""

    where: str  # "jobs.jsonl:3", "jobs.json[2]", "jobs.json"
    payload: str  # the message as compact JSON, what goes into the `payload` field
    message: Message | None = None
    error: InvalidMessage | None = None

    @property
    def label(self) -> str:
        message_id = self.message.id if self.message else payload_id(self.payload)
        return f"{self.where} (id {message_id})" if message_id else self.where


def _compact(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def read_items(text: str, name: str) -> list[Item]:
    """Split the input into messages. A line of JSON Lines that is not JSON is an item whose
    payload is that line (so validation reports it with its line number)."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        doc = json.loads(stripped)
    except ValueError:
        doc = _NOT_JSON
    if isinstance(doc, list):
        return [Item(f"{name}[{i}]", _compact(d)) for i, d in enumerate(doc)]
    if doc is not _NOT_JSON:
        return [Item(name, _compact(doc))]
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            payload = _compact(json.loads(line))
        except ValueError:
            payload = line.strip()  # parse_message names the JSON error
        items.append(Item(f"{name}:{number}", payload))
    return items


_NOT_JSON = object()


def with_timing(payload: str, timing: dict[str, Any]) -> str:
    """The payload with --at / --in applied (runAt / delaySeconds; the other one removed)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload  # parse_message reports it
    if not isinstance(doc, dict):
        return payload
    for key in ("runAt", "delaySeconds"):
        doc.pop(key, None)
    return _compact({**doc, **timing})


def check_items(items: list[Item], settings: Settings, *, policy: bool) -> list[Item]:
    """Validate every item in place; return the invalid ones."""
    max_bytes = settings.streams.max_message_bytes
    now = SYSTEM_CLOCK.time()
    for item in items:
        try:
            item.message = parse_message(item.payload, max_bytes=max_bytes)
            due_time(item.message, added_at=now, now=now, max_ahead=settings.schedule.max_ahead)
            if policy:
                check_policy(item.message, settings)
        except InvalidMessage as e:
            item.error = e
    seen: dict[str, str] = {}
    for item in items:
        if item.message is not None and item.error is None:
            if item.message.id in seen:
                # Two messages with one id would give one Job: the runner drops the second.
                item.error = InvalidMessage("id", f"duplicate of {seen[item.message.id]} in this input")
            else:
                seen[item.message.id] = item.where
    return [item for item in items if item.error is not None]


def warn_known(client: redis.Redis, settings: Settings, items: list[Item]) -> None:
    """A warning on stderr for each id whose record makes the runner drop it as a duplicate
    (a Job recorded, a claim, an end other than a dead letter's); submitting goes on."""
    ids = [item.message.id for item in items if item.message is not None]
    with redis_errors():
        for start in range(0, len(ids), XADD_CHUNK):
            chunk = ids[start : start + XADD_CHUNK]
            pipe = client.pipeline(transaction=False)
            for message_id in chunk:
                pipe.hmget(settings.state.record_key(message_id), [Field.STATE, Field.JOB_NAME])
            for message_id, (state, job) in zip(chunk, pipe.execute()):
                if state is None or (text(state) == State.DEAD and not job):
                    continue  # unknown, or a dead letter's: the claim starts afresh
                click.echo(
                    f"warning: {message_id} already has a record ({text(state)}): the runner drops it as a duplicate"
                    " (ksr jobs show it; a new id runs it again)",
                    err=True,
                )


def report_invalid(invalid: list[Item]) -> None:
    for item in invalid:
        click.echo(f"invalid: {item.label}: {item.error}", err=True)


def default_stream(settings: Settings) -> str:
    """The "default" priority stream: the one whose last segment is `default`, else the first."""
    return settings.streams.default_stream


def _read_input(source: IO[bytes], name: str) -> str:
    data = source.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"{name}: not UTF-8 ({e.reason} at byte {e.start})")


def _load(
    source: IO[bytes], settings: Settings, *, policy: bool, timing: dict[str, Any] | None = None
) -> tuple[list[Item], list[Item]]:
    raw_name = str(getattr(source, "name", "-"))
    name = "stdin" if raw_name in ("<stdin>", "-") else raw_name
    items = read_items(_read_input(source, name), name)
    if not items:
        fail(f"{name}: no messages")
    if timing:
        for item in items:
            item.payload = with_timing(item.payload, timing)
    return items, check_items(items, settings, policy=policy)


policy_option = click.option(
    "--check-policy",
    "policy",
    is_flag=True,
    help="Also check the runner's policy (KSR_ALLOWED_* settings of this environment).",
)


@click.command()
@click.argument("source", type=click.File("rb"), default="-", metavar="[FILE|-]")
@click.option(
    "--stream",
    "-s",
    metavar="STREAM",
    default=None,
    help="Stream to add to (one of KSR_STREAMS); default: the 'default' priority stream.",
)
@click.option(
    "--at",
    "run_at",
    metavar="TIME",
    default=None,
    help="Run no earlier than TIME (RFC 3339 with an offset, e.g. 2026-12-01T10:00:00+01:00): sets runAt.",
)
@click.option(
    "--in",
    "run_in",
    metavar="DURATION",
    type=DURATION,
    default=None,
    help="Run after DURATION (30s, 5m, 1h): sets delaySeconds.",
)
@policy_option
@click.option("--skip-invalid", is_flag=True, help="Submit the valid messages even if some are invalid (still exit 1).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help=f"Progress bar on stderr; default: for {PROGRESS_MIN}+ messages on a terminal.",
)
@json_option
def submit(
    source: IO[bytes],
    stream: str | None,
    run_at: str | None,
    run_in: float | None,
    policy: bool,
    skip_invalid: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Validate messages and add them to a stream.

    Prints the new entry ids.
    FILE holds one JSON message, a JSON list, or JSON Lines; `-` (the default) reads stdin.
    If any message is invalid, each is reported with its field path and nothing is
    submitted (exit 1), unless --skip-invalid.
    """
    obj = cli_context()
    settings = obj.settings()
    if stream is None:
        stream = default_stream(settings)
    elif stream not in settings.streams.streams:
        raise click.BadParameter(
            f"{stream!r} is not one of KSR_STREAMS ({', '.join(settings.streams.streams)})", param_hint="'--stream'"
        )
    if run_at is not None and run_in is not None:
        raise click.UsageError("give --at or --in, not both")
    if run_at is not None and (problem := rfc3339_problem(run_at)):
        raise click.BadParameter(problem, param_hint="'--at'")
    timing = {"runAt": run_at} if run_at is not None else {"delaySeconds": run_in} if run_in is not None else {}
    items, invalid = _load(source, settings, policy=policy, timing=timing)
    report_invalid(invalid)
    if invalid and not skip_invalid:
        fail(f"{len(invalid)} of {len(items)} messages invalid; nothing submitted (--skip-invalid submits the rest)")
    valid = [item for item in items if item.error is None]
    client = obj.redis()
    warn_known(client, settings, valid)
    results: list[dict[str, str]] = []
    show = progress if progress is not None else (len(valid) >= PROGRESS_MIN and sys.stderr.isatty())
    short: list[NotReplicated] = []
    with _progress(show, len(valid), f"submitting to {stream}") as bar:
        for start in range(0, len(valid), XADD_CHUNK):
            chunk = valid[start : start + XADD_CHUNK]
            payloads = [item.payload for item in chunk]
            with redis_errors():
                try:
                    ids = add_replicated(
                        client,
                        stream,
                        payloads,
                        replicas=settings.redis.min_replicas,
                        timeout=settings.redis.wait_timeout,
                    )
                except NotReplicated as e:  # added all the same: report them, then fail
                    short.append(e)
                    ids = e.entry_ids
            for item, entry_id in zip(chunk, ids):
                assert item.message is not None
                results.append({"stream": stream, "entry_id": entry_id, "id": item.message.id})
            bar.update(len(chunk))
    log.info("submitted %d messages to %s", len(results), stream)
    if as_json:
        emit_json({"submitted": results, "invalid": [_invalid_doc(i) for i in invalid]})
    else:
        for row in results:
            click.echo(row["entry_id"])
    if short:
        fail(
            f"{sum(len(e.entry_ids) for e in short)} of {len(results)} submitted messages reached only "
            f"{min(e.acked for e in short)} of {settings.redis.min_replicas} replicas within "
            f"{settings.redis.wait_timeout:g}s (KSR_REDIS_MIN_REPLICAS, KSR_REDIS_WAIT_TIMEOUT): "
            "a failover could lose them; submit them again, the runner drops duplicates"
        )
    if invalid:
        fail(f"{len(invalid)} of {len(items)} messages invalid and skipped; {len(results)} submitted to {stream}")


@click.command()
@click.argument("source", type=click.File("rb"), metavar="FILE|-")
@policy_option
@json_option
def validate(source: IO[bytes], policy: bool, as_json: bool) -> None:
    """Validate messages without submitting them.

    Exit 0 when all are valid, 1 otherwise.
    """
    settings = cli_context().settings()
    items, invalid = _load(source, settings, policy=policy)
    if as_json:
        emit_json({"valid": len(items) - len(invalid), "invalid": [_invalid_doc(i) for i in invalid]})
    else:
        report_invalid(invalid)
    if invalid:
        fail(f"{len(invalid)} of {len(items)} messages invalid")
    if not as_json:
        click.echo(f"{len(items)} {'message' if len(items) == 1 else 'messages'} valid")


def _invalid_doc(item: Item) -> dict[str, Any]:
    assert item.error is not None
    return {
        "where": item.where,
        "id": item.message.id if item.message else payload_id(item.payload),
        "errors": [{"field": f, "problem": p} for f, p in item.error.problems],
    }


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _progress(show: bool, length: int, label: str) -> Iterator[Any]:
    if not show:
        yield _NoBar()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar
