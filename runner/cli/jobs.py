"""`ksr jobs list`: the Jobs in flight (the active set), looking, never touching."""

from __future__ import annotations

import logging
from typing import Any

import click

from runner.cli._context import cli_context, json_option
from runner.cli._output import age_of_ms, emit_json, print_table
from runner.durations import format_age
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
