"""Output and parsing helpers every `ksr` command shares: durations, times, payload ids, tables, JSON.

The one place the CLI formats for people: times are ISO 8601 in UTC (`format_ms_time`, to
the ms in timelines: `format_ms_time_exact`), durations are short (`format_duration`: 250ms,
42s, 9m58s, 1h00m), never a bare count of seconds.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import click

from election.clock import SYSTEM_CLOCK
from runner.durations import format_age

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
    """A Unix time in ms as ISO 8601 in UTC, to the second: 2026-12-07T13:20:52+00:00."""
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC).isoformat(timespec="seconds")


def format_ms_time_exact(ms: int | None) -> str:
    """The same to the millisecond, for timelines: 2026-12-07T13:20:52.417+00:00."""
    if not ms:
        return "-"
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.UTC).isoformat(timespec="milliseconds")


def format_duration(seconds: float | None) -> str:
    """A duration for people: 250ms, 42s, 9m58s, 1h00m, 3d04h (runner.durations beyond a second)."""
    if seconds is None:
        return "-"
    if 0 <= seconds < 1:
        return f"{int(seconds * 1000)}ms"
    return format_age(seconds)


def format_duration_ms(ms: int | None) -> str:
    return "-" if ms is None else format_duration(ms / 1000)


def parse_since(text: str, *, now: float) -> int:
    """`--since`: a duration back from now (30m, 2h, 1d) or an ISO 8601 time with a UTC
    offset; Unix ms. ValueError saying which forms are understood."""
    try:
        return int((now - parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"neither a duration (30m, 2h) nor an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"must carry a UTC offset (Z or +01:00), got {text!r}")
    return int(when.timestamp() * 1000)


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


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
_CONTROL.update({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})  # C1: ESC's 8-bit forms (CSI)


def terminal_safe(text: str) -> str:
    """`text` with every control character written as an escape: a message's id, service or
    error text printed to a terminal can then move no cursor and rewrite no earlier line."""
    return text.translate(_CONTROL)


def say(text: str) -> None:
    """click.echo of a line that holds values from messages."""
    click.echo(terminal_safe(text))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str | None = None) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    if not rows and empty is not None:
        click.echo(empty, err=True)
        return
    cells = [[str(h) for h in headers]] + [["-" if c is None else terminal_safe(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo(
            "  ".join(c.ljust(w) if i < len(row) - 1 else c for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        )


def dry_run_footer(count: int, verb: str) -> None:
    click.echo(f"dry run: would {verb} {count} {'entry' if count == 1 else 'entries'}; pass --yes to act", err=True)
