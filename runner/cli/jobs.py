"""`ksr jobs list`: the Jobs in flight (the active set); `ksr jobs show ID`: one message,
wherever it is. Looking, never touching."""

from __future__ import annotations

import logging
from typing import Any

import click

from runner.cli._context import cli_context, fail, json_option
from runner.cli._output import DURATION, age_of_ms, emit_json, format_ms_time, print_table
from runner.client import Client, Status
from runner.durations import format_age
from runner.lifecycle import State
from runner.store.deadletter import DEAD_ERROR_CODE
from runner.store.record import Field, StateRecord
from runner.store.state import StateStore

log = logging.getLogger(__name__)


# -- jobs -----------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Jobs the runner follows (the state store's active set)."""


@jobs.command("list")
@json_option
def jobs_list(as_json: bool) -> None:
    """Active Jobs: message id, Job name, namespace, state, age."""
    obj = cli_context()
    records = StateStore.from_settings(obj.redis(), obj.settings()).active_records()
    rows: list[dict[str, Any]] = []
    for message_id, record in sorted(records.items()):
        age = age_of_ms(record.created_at_ms or record.claimed_at_ms)
        row: dict[str, Any] = {
            "message_id": message_id,
            "job_name": record.job_name or None,
            "namespace": record.namespace or None,
            "state": record.state or "(record gone)",
            "stream": record.stream or None,
            "age_seconds": None if age is None else round(age, 1),
        }
        rows.append(row)
    if as_json:
        emit_json(rows)
        return
    print_table(
        ["MESSAGE-ID", "JOB", "NAMESPACE", "STATE", "AGE"],
        [[r["message_id"], r["job_name"], r["namespace"], r["state"], format_age(r["age_seconds"])] for r in rows],
        empty="no active jobs",
    )


# -- jobs show --------------------------------------------------------------------------------

_TIMES = ("claimed_at", "created_at", "updated_at", "finished_at", "cancelled_at", "cancel_requested")


def describe(status: Status) -> dict[str, Any]:
    """What `ksr jobs show` prints: where the message is now and what its record says."""
    record = StateRecord(status.record)
    callbacks = []
    for code in record.callbacks():
        marked = record.callback_first_owed(code)
        callbacks.append(
            {
                "status": code,
                "enqueued_at": None if marked is None else format_ms_time(int(marked * 1000)),
                "delivery": record.callback_outcome(code) or "in flight",
                "attempts": record.callback_attempts(code),
                "detail": record.callback_detail(code) or None,
            }
        )
    error = next((c["detail"]["error"] for c in reversed(callbacks) if (c["detail"] or {}).get("error")), None)
    dead = None
    if status.where == "finished" and status.state == "dead":
        dead = {
            "reason": record.get(Field.DEAD_REASON),
            "error": record.get(Field.DEAD_ERROR),
            "stream": status.stream,
            "dead_id": record.get(Field.DEAD_ID),
        }
        error = error or {"errorCode": DEAD_ERROR_CODE, "message": dead["error"]}
    where = {
        "scheduled": f"scheduled for {format_ms_time(int((status.due or 0) * 1000))} in {status.stream}",
        "pending": f"pending in stream {status.stream}" if status.stream else "pending",
        "running": "running" if status.state == State.RUNNING else f"{status.state} (the Job exists)",
        "finished": f"finished: {status.state}" + (f" ({dead['reason']})" if dead and dead["reason"] else ""),
        "unknown": "unknown: no record, not scheduled, not waiting in a stream",
    }[status.where]
    started = record.started_at_ms  # ms, or an older record's seconds
    return {
        "id": status.id,
        "where": status.where,
        "now": where,
        "state": status.state,
        "stream": status.stream,
        "entry_id": record.get("entry_id"),
        "due": None if status.due is None else format_ms_time(int(status.due * 1000)),
        "job_name": record.get("job_name"),
        "namespace": record.get("namespace"),
        "pod_name": record.get("pod_name") or None,
        "callbacks": callbacks,
        "times": {
            **{k: format_ms_time(int(record[k])) for k in _TIMES if record.get(k, "").isdigit()},
            **({"started_at": format_ms_time(started)} if started else {}),
        },
        "error": error,
        "cancel_stage": record.get("cancel_stage"),
        "dead_letter": dead,
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
    """One message by id: where it is now (scheduled for T, pending in stream S, running,
    finished; a dead letter with its reason and dead entry), its Job and pod, the callbacks
    sent and how their delivery went, timestamps, and the error if any. Exit 1 when nothing
    is known of it."""
    obj = cli_context()
    client = Client(obj.settings(), redis_client=obj.redis())
    status = client.status(message_id) if wait is None else client.wait(message_id, wait)
    doc = describe(status)
    if as_json:
        emit_json(doc)
    else:
        click.echo(f"{message_id}: {doc['now']}")
        for label, key in (
            ("stream", "stream"),
            ("entry", "entry_id"),
            ("job", "job_name"),
            ("namespace", "namespace"),
            ("pod", "pod_name"),
        ):
            if doc[key]:
                click.echo(f"  {label:<10} {doc[key]}")
        for name, value in doc["times"].items():
            click.echo(f"  {name:<10} {value}" if len(name) <= 10 else f"  {name} {value}")
        for cb in doc["callbacks"]:
            click.echo(f"  callback {cb['status']:<3} enqueued {cb['enqueued_at']}, delivery: {cb['delivery']}")
        if doc["error"]:
            click.echo(f"  error      {doc['error'].get('errorCode')}: {doc['error'].get('message')}")
        if doc["dead_letter"]:
            dead = doc["dead_letter"]
            click.echo(f"  dead       ksr dead show {dead['dead_id']} --stream {dead['stream']}")
    if status.where == "unknown":
        fail(f"no message {message_id} known (no record, not scheduled, not waiting in a stream)")
