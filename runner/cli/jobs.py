"""`ksr jobs list`: the messages that moved lately (live Jobs first among them), filtered;
`ksr jobs show ID`: one message, in every place it is, and its timeline in ms. Looking,
never touching: both read through runner.inspect, as the console does."""

from __future__ import annotations

import logging
from typing import Any

import click

from election.clock import SYSTEM_CLOCK
from runner.cli._context import cli_context, fail, json_option, stream_option
from runner.cli._output import (
    DURATION,
    emit_json,
    format_duration,
    format_duration_ms,
    format_ms_time,
    format_ms_time_exact,
    parse_since,
    print_table,
    say,
)
from runner.client import Client
from runner.inspect import (
    Layout,
    Moment,
    MomentKind,
    Place,
    Recent,
    Sighting,
    find,
    read_record,
    recent,
    timeline,
    where_of,
)
from runner.lifecycle import RECORD_STATES, State
from runner.store.deadletter import DEAD_ERROR_CODE
from runner.store.record import Field, StateRecord
from runner.store.state import StateStore

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50


# -- jobs list ----------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Messages and their Jobs: the recent ones, one in detail."""


class SinceType(click.ParamType):
    name = "since"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_since(str(value), now=SYSTEM_CLOCK.time())
        except ValueError as e:
            self.fail(str(e), param, ctx)


@jobs.command("list")
@click.option(
    "--state", type=click.Choice(sorted(s.value for s in RECORD_STATES)), default=None, help="Only in this state."
)
@stream_option("Only messages read from this stream.")
@click.option("--service", default=None, metavar="NAME", help="Only this message `service`.")
@click.option("--namespace", default=None, metavar="NS", help="Only Jobs in this namespace.")
@click.option("--since", type=SinceType(), default=None, metavar="WHEN", help="Moved since: 30m, 2h, or an ISO time.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--before", "cursor", default=None, metavar="CURSOR", help="The next page: the cursor a page printed.")
@json_option
def jobs_list(
    state: str | None,
    stream: str | None,
    service: str | None,
    namespace: str | None,
    since: int | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Messages newest first by their last move: the Jobs in flight (the active set) and the
    messages of the events stream (created, started, ended, cancelled, dead-lettered), with
    their record's state. What is listed is bounded by what is kept: the events stream
    (KSR_EVENTS_MAXLEN) and the records (KSR_STATE_TTL after the end)."""
    obj = cli_context()
    settings = obj.settings()
    if stream is not None and stream not in settings.streams.streams:
        raise click.BadParameter(f"{stream!r} is not one of KSR_STREAMS", param_hint="'--stream'")
    layout = Layout.from_settings(settings)
    conn = obj.redis()
    page = recent(
        conn,
        layout=layout,
        state=state,
        stream=stream,
        service=service,
        namespace=namespace,
        since_ms=since,
        limit=limit,
        cursor=cursor,
    )
    rows = [_row(i) for i in page.items]
    if cursor is None:  # live Jobs with no event yet (an old runner's, or a lost event) come first
        listed = {r["message_id"] for r in rows}
        live = StateStore.from_settings(conn, settings).active_records()
        extra = [_live_row(mid, rec) for mid, rec in live.items() if mid not in listed]
        rows = [r for r in extra if _keeps(r, state, stream, service, namespace, since)] + rows
        rows = sorted(rows, key=lambda r: -(r["at_ms"] or 0))[:limit]
    if as_json:
        emit_json(rows)
    else:
        print_table(
            ["MESSAGE-ID", "STATE", "STREAM", "SERVICE", "NAMESPACE", "JOB", "LAST MOVE (UTC)", "AGO"],
            [
                [
                    r["message_id"],
                    r["state"],
                    r["stream"],
                    r["service"],
                    r["namespace"],
                    r["job_name"],
                    r["at"],
                    format_duration(r["age_seconds"]),
                ]
                for r in rows
            ],
            empty="no messages match",
        )
    if page.next_cursor:
        click.echo(f"more: ksr jobs list --before {page.next_cursor} (with the same filters)", err=True)
    if not page.complete:
        click.echo(f"(looked through the newest {page.scanned} events only)", err=True)


def _age(at_ms: int | None) -> float | None:
    return None if not at_ms else round(max(0.0, SYSTEM_CLOCK.time() - at_ms / 1000), 1)


def _row(item: Recent) -> dict[str, Any]:
    return {
        "message_id": item.message_id,
        "state": item.state.value if item.state else None,
        "stream": item.stream,
        "service": item.service,
        "namespace": item.namespace,
        "job_name": item.job_name,
        "at": format_ms_time(item.at_ms),
        "at_ms": item.at_ms,
        "age_seconds": _age(item.at_ms),
        "recorded": item.recorded,
    }


def _live_row(message_id: str, record: StateRecord) -> dict[str, Any]:
    at = record.started_at_ms or record.created_at_ms or record.claimed_at_ms
    return {
        "message_id": message_id,
        "state": record.state.value if record.state else "(record gone)",
        "stream": record.stream or None,
        "service": record.get("service") or None,
        "namespace": record.namespace or None,
        "job_name": record.job_name or None,
        "at": format_ms_time(at),
        "at_ms": at,
        "age_seconds": _age(at),
        "recorded": bool(record),
    }


def _keeps(
    row: dict[str, Any],
    state: str | None,
    stream: str | None,
    service: str | None,
    namespace: str | None,
    since: int | None,
) -> bool:
    wanted = {"state": state, "stream": stream, "service": service, "namespace": namespace}
    if any(v is not None and row[k] != v for k, v in wanted.items()):
        return False
    return since is None or (row["at_ms"] or 0) >= since


# -- jobs show ----------------------------------------------------------------------------------

_TIMES = ("claimed_at", "created_at", "updated_at", "finished_at", "cancelled_at", "cancel_requested")


def _now_line(where: str, s: Sighting | None) -> str:
    if s is None:
        return "unknown: not in any stream, dead letter, held set or record"
    if where == "dead":
        return f"dead letter in {s.stream}:dead ({s.entry_id}): {s.reason or 'no reason'}"
    if where == "finished":
        state = s.state.value if s.state else "ended"
        return f"finished: {state}" + (f" ({s.reason})" if s.state is State.DEAD and s.reason else "")
    if where == "running":
        return "running" if s.state is State.RUNNING else f"{s.state} (the Job exists)"
    if s.place is Place.SCHEDULED:
        return f"scheduled for {format_ms_time(s.due_ms)} in {s.stream}"
    if s.place is Place.PENDING:
        return (
            f"pending in stream {s.stream}: delivered to {s.consumer} {s.deliveries} times, "
            f"idle {format_duration_ms(s.idle_ms)}"
        )
    if s.place is Place.WAITING:
        return f"waiting to be created (refused {s.deliveries} times, next try {format_ms_time(s.due_ms)})"
    if s.place is Place.CLAIMED:
        return f"pending in stream {s.stream}: claimed, its Job not created yet"
    return f"pending in stream {s.stream}: not read yet"


def _delivery(record: StateRecord, status: int) -> str:
    outcome = record.callback_outcome(status)
    if outcome:
        return outcome
    if not record.webhook:
        return "no webhook"
    return "in flight"


def _sighting_doc(s: Sighting) -> dict[str, Any]:
    doc: dict[str, Any] = {"place": s.place.value}
    for name in (
        "stream",
        "entry_id",
        "since_ms",
        "due_ms",
        "consumer",
        "idle_ms",
        "deliveries",
        "reason",
        "error",
        "original_id",
        "job_name",
        "namespace",
        "pod_name",
    ):
        value = getattr(s, name)
        if value is not None:
            doc[name] = value
    if s.state is not None:
        doc["state"] = s.state.value
    return doc


def _moment_doc(m: Moment) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": m.kind.value, "at_ms": m.at_ms, "at": format_ms_time_exact(m.at_ms)}
    for name in (
        "stream",
        "entry_id",
        "callback",
        "attempt",
        "http_status",
        "duration_ms",
        "outcome",
        "next_retry_ms",
    ):
        value = getattr(m, name)
        if value is not None:
            doc[name] = value
    if m.detail:
        doc["detail"] = m.detail
    return doc


def _moment_text(m: Moment) -> str:
    if m.kind is MomentKind.CALLBACK_ATTEMPT:
        got = f"HTTP {m.http_status}" if m.http_status is not None else "no answer"
        text = f"callback {m.callback} attempt {m.attempt}: {got} in {format_duration_ms(m.duration_ms)}, {m.outcome}"
        if m.next_retry_ms:
            text += f", next try {format_ms_time_exact(m.next_retry_ms)}"
        return text + (f" ({m.detail})" if m.detail and m.outcome != "delivered" else "")
    if m.kind in (MomentKind.CALLBACK_OWED, MomentKind.CALLBACK_DONE):
        what = m.outcome or m.detail
        return f"callback {m.callback}: {what}" + (f" ({m.detail})" if m.outcome and m.detail else "")
    parts = [p for p in (m.stream if m.kind is MomentKind.ADDED else None, m.entry_id, m.detail) if p]
    return " ".join(parts)


def describe(message_id: str, sightings: list[Sighting], record: StateRecord, moments: list[Moment]) -> dict[str, Any]:
    """What `ksr jobs show` prints: where the message is now, every place it is, its record,
    the callbacks and how their delivery goes, and the timeline."""
    where, main = where_of(sightings)
    callbacks = []
    for code in record.callbacks():
        marked = record.callback_first_owed(code)
        callbacks.append(
            {
                "status": code,
                "enqueued_at": None if marked is None else format_ms_time(int(marked * 1000)),
                "delivery": _delivery(record, code),
                "attempts": record.callback_attempts(code),
                "detail": record.callback_detail(code) or None,
            }
        )
    error = next((c["detail"]["error"] for c in reversed(callbacks) if (c["detail"] or {}).get("error")), None)
    dead = None
    dead_entry = next((s for s in sightings if s.place is Place.DEAD), None)
    if record.state is State.DEAD or (where == "dead" and dead_entry is not None):
        dead = {
            "reason": record.get(Field.DEAD_REASON) or (dead_entry.reason if dead_entry else None),
            "error": record.get(Field.DEAD_ERROR) or (dead_entry.error if dead_entry else None),
            "stream": record.stream or (dead_entry.stream if dead_entry else None),
            "dead_id": record.get(Field.DEAD_ID) or (dead_entry.entry_id if dead_entry else None),
        }
        error = error or {"errorCode": DEAD_ERROR_CODE, "message": dead["error"]}
    started = record.started_at_ms
    return {
        "id": message_id,
        "where": where,
        "now": _now_line(where, main),
        "state": record.state.value if record.state else None,
        "stream": record.stream or (main.stream if main else None),
        "entry_id": record.entry_id or (main.entry_id if main and main.place is not Place.DEAD else None),
        "due": format_ms_time(main.due_ms) if main and main.place is Place.SCHEDULED else None,
        "job_name": record.job_name or None,
        "namespace": record.namespace or None,
        "pod_name": record.pod_name or None,
        "webhook": bool(record.webhook),
        "callbacks": callbacks,
        "times": {
            **{k: format_ms_time_exact(int(record[k])) for k in _TIMES if record.get(k, "").isdigit()},
            **({"started_at": format_ms_time_exact(started)} if started else {}),
        },
        "error": error,
        "cancel_stage": record.get("cancel_stage"),
        "dead_letter": dead,
        "places": [_sighting_doc(s) for s in sightings],
        "timeline": [_moment_doc(m) for m in moments],
    }


@jobs.command("show")
@click.argument("message_id")
@click.option(
    "--wait",
    metavar="DURATION",
    type=DURATION,
    default=None,
    help="First wait until the message ends (30s, 5m); exit 1 if it has not by then.",
)
@json_option
def jobs_show(message_id: str, wait: float | None, as_json: bool) -> None:
    """One message by id, wherever it is: not read yet, scheduled, pending (holder, idle),
    waiting for its create, claimed, running, finished, dead letter (with the reason). Its
    Job and pod, its callbacks and their delivery ("no webhook" for a message without one),
    and its timeline in ms (UTC). Exit 1 when nothing is known of it, or when --wait ends
    before the message does."""
    obj = cli_context()
    if wait is not None:
        Client(obj.settings(), redis_client=obj.redis()).wait(message_id, wait)
    conn = obj.redis()
    layout = Layout.from_settings(obj.settings())
    record = read_record(conn, message_id, layout)
    sightings = find(conn, message_id, layout=layout, record=record)
    moments = timeline(conn, message_id, layout=layout, sightings=sightings, record=record)
    doc = describe(message_id, sightings, record or StateRecord(), moments)
    if as_json:
        emit_json(doc)
    else:
        _print_show(message_id, doc, sightings, moments)
    if doc["where"] == "unknown":
        fail(f"no message {message_id} known (no record, not held, not in a stream or its dead letters)")


def _print_show(message_id: str, doc: dict[str, Any], sightings: list[Sighting], moments: list[Moment]) -> None:
    say(f"{message_id}: {doc['now']}")
    for label, key in (
        ("stream", "stream"),
        ("entry", "entry_id"),
        ("job", "job_name"),
        ("namespace", "namespace"),
        ("pod", "pod_name"),
    ):
        if doc[key]:
            say(f"  {label:<10} {doc[key]}")
    for cb in doc["callbacks"]:
        delivery = cb["delivery"]
        if delivery == "no webhook":
            say(f"  callback {cb['status']:<3} no webhook (an event only)")
        else:
            tries = f", {cb['attempts']} attempt{'s' if cb['attempts'] != 1 else ''}" if cb["attempts"] else ""
            say(f"  callback {cb['status']:<3} {delivery}{tries}")
    if doc["error"]:
        say(f"  error      {doc['error'].get('errorCode')}: {doc['error'].get('message')}")
    if doc["dead_letter"] and doc["dead_letter"]["dead_id"]:
        dead = doc["dead_letter"]
        say(f"  dead       ksr dead show {dead['dead_id']} --stream {dead['stream']}")
    if len(sightings) > 1:
        say("places")
        for s in sightings:
            say(f"  {s.place.value:<10} {_now_line(_where_word(s), s)}")
    if moments:
        say("timeline (UTC)")
        width = max(len(m.kind.value) for m in moments)
        for m in moments:
            say(f"  {format_ms_time_exact(m.at_ms)}  {m.kind.value:<{width}}  {_moment_text(m)}".rstrip())


def _where_word(s: Sighting) -> str:
    return {Place.RUNNING: "running", Place.FINISHED: "finished", Place.DEAD: "dead"}.get(s.place, "pending")
