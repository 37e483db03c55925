"""Output and parsing helpers every `ksr` command shares: durations, times, payload ids, tables, JSON."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import click

from election.clock import SYSTEM_CLOCK

log = logging.getLogger(__name__)

# -- durations and times ----------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """'250ms', '30s', '5m', '1h', '2d' or plain seconds ('90') -> seconds; ValueError if not."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration (like 30s, 5m, 1h): {text!r}")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


DURATION = DurationType()


def format_ms_time(ms: int | None) -> str:
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC).isoformat(timespec="seconds")


def age_of_ms(ms: int | str | None, *, now: float | None = None) -> float | None:
    if ms is None or ms == "":
        return None
    try:
        value = int(ms)
    except ValueError:
        return None
    if not value:
        return None
    return max(0.0, (SYSTEM_CLOCK.time() if now is None else now) - value / 1000)


# -- payloads -----------------------------------------------------------------------------------


def message_id_of(payload: bytes | str | None) -> str | None:
    """The `id` field of a payload, without validating anything else; None if unreadable."""
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


# -- output -------------------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str | None = None) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    if not rows and empty is not None:
        click.echo(empty, err=True)
        return
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo(
            "  ".join(c.ljust(w) if i < len(row) - 1 else c for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        )


def dry_run_footer(count: int, verb: str) -> None:
    click.echo(f"dry run: would {verb} {count} {'entry' if count == 1 else 'entries'}; pass --yes to act", err=True)
