"""Recurring schedules without servers: cron ticks across DST (table-driven), and the
KSR_SCHEDULES file refused with the entry and field named."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from runner.errors import ConfigError
from runner.schedules.config import parse_schedules
from runner.schedules.cron import Cron, tick_id
from tests.support.messages import message

BERLIN = ZoneInfo("Europe/Berlin")
STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")


def _ticks(expr: str, tz: str, start: datetime, count: int) -> list[str]:
    """Chained as the ticker does: each next tick from the last one handled."""
    cron = Cron(expr, tz)
    at, out = start.timestamp(), []
    for _ in range(count):
        tick = cron.next_after(at)
        out.append(tick.astimezone(UTC).strftime("%m-%dT%H:%MZ"))
        at = tick.timestamp()
    return out


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # spring forward (2026-03-29 02:00 -> 03:00 CEST): 02:30 does not exist, runs once at 03:00
        ("30 2 * * *", datetime(2026, 3, 28, 12, tzinfo=BERLIN), ["03-29T01:00Z", "03-30T00:30Z", "03-31T00:30Z"]),
        # fall back (2026-10-25 03:00 -> 02:00 CET): 02:30 happens twice, runs once
        ("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), ["10-25T00:30Z", "10-26T01:30Z", "10-27T01:30Z"]),
        # hourly keeps absolute time: no hour skipped in spring, the repeated hour runs in autumn
        (
            "0 * * * *",
            datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN),
            ["03-29T00:00Z", "03-29T01:00Z", "03-29T02:00Z"],
        ),
        (
            "0 * * * *",
            datetime(2026, 10, 25, 1, 30, tzinfo=BERLIN),
            ["10-25T00:00Z", "10-25T01:00Z", "10-25T02:00Z", "10-25T03:00Z"],
        ),
        # fixed times in the repeated hour run once ...
        (
            "0,30 1-3 * * *",
            datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN),
            ["10-25T00:00Z", "10-25T00:30Z", "10-25T02:00Z", "10-25T02:30Z", "10-26T00:00Z"],
        ),
        # ... a wildcard minute runs in absolute time through it, as Debian cron does (cronsim)
        (
            "*/30 2 * * *",
            datetime(2026, 10, 25, 1, 0, tzinfo=BERLIN),
            ["10-25T00:00Z", "10-25T00:30Z", "10-25T01:00Z", "10-25T01:30Z", "10-26T01:00Z"],
        ),
        ("0 12 * * *", datetime(2026, 3, 28, 13, tzinfo=BERLIN), ["03-29T10:00Z", "03-30T10:00Z"]),
    ],
)
def test_dst_in_berlin_neither_skips_nor_doubles(expr: str, start: datetime, expected: list[str]) -> None:
    got = _ticks(expr, "Europe/Berlin", start, len(expected))
    assert got == expected
    assert len(set(got)) == len(got)


def test_next_after_is_strictly_after_and_latest_at_or_before_includes_the_tick() -> None:
    cron = Cron("*/5 * * * *")
    tick = datetime(2026, 12, 1, 10, 5, tzinfo=UTC).timestamp()
    assert cron.next_after(tick).timestamp() == tick + 300
    assert cron.next_after(tick - 0.001).timestamp() == tick
    assert cron.latest_at_or_before(tick).timestamp() == tick
    assert cron.latest_at_or_before(tick - 1).timestamp() == tick - 300
    assert [t.timestamp() for t in cron.between(tick - 600, tick)] == [tick - 300, tick]


def test_tick_ids_are_the_name_and_the_tick_in_utc() -> None:
    assert tick_id("nightly", datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)) == "nightly-20260329T010000Z"


def _doc(**changes: object) -> dict:
    entry = {
        "name": "ok",
        "cron": "* * * * *",
        "message": {k: v for k, v in message("x", "default").items() if k != "id"},
    }
    bad = {**entry, "name": "bad", **changes}
    return {"schedules": [entry, {**entry, "name": "ok2"}, bad]}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"cron": "61 * * * *"}, "KSR_SCHEDULES: schedules[2].cron: Bad minute in '61 * * * *'"),
        (
            {"cron": "* * * *"},
            "KSR_SCHEDULES: schedules[2].cron: must have 5 fields (minute hour day month weekday), got 4 in '* * * *'",
        ),
        ({"timezone": "Mars/Olympus"}, "KSR_SCHEDULES: schedules[2].timezone: unknown IANA time zone 'Mars/Olympus'"),
        (
            {"stream": "elsewhere"},
            "KSR_SCHEDULES: schedules[2].stream: must be one of KSR_STREAMS (ksr:jobs:critical, ksr:jobs:default, ksr:jobs:low), got 'elsewhere'",
        ),
        ({"catchUp": "all"}, "KSR_SCHEDULES: schedules[2].catchUp: must be skip or latest, got 'all'"),
        ({"catchUpWindow": 0}, "KSR_SCHEDULES: schedules[2].catchUpWindow: must be a number of seconds > 0, got 0"),
        (
            {"name": "has space"},
            "KSR_SCHEDULES: schedules[2].name: must be letters, digits, '-', '_' or '.' (at most 100), got 'has space'",
        ),
        ({"name": "ok"}, "KSR_SCHEDULES: schedules[2].name: 'ok' is used by an earlier entry"),
        (
            {"message": {"service": "s", "job": {"prefixName": "p", "namespace": "default"}}},
            "KSR_SCHEDULES: schedules[2].message.job.image: required",
        ),
        (
            {"message": {**message("x", "default")}},
            "KSR_SCHEDULES: schedules[2].message.id: must not be given: each tick's id is <name>-<tick time in UTC>",
        ),
    ],
)
def test_invalid_schedules_are_refused_naming_entry_and_field(changes: dict, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_schedules(_doc(**changes), streams=STREAMS, default_stream="ksr:jobs:default")
    assert str(e.value) == error


def test_valid_schedules_default_to_utc_skip_and_the_default_stream() -> None:
    entries = parse_schedules(
        _doc(timezone="Europe/Berlin", catchUp="latest", catchUpWindow=600),
        streams=STREAMS,
        default_stream="ksr:jobs:default",
    )
    assert [(e.name, e.timezone, e.catch_up, e.catch_up_window, e.stream) for e in entries] == [
        ("ok", "UTC", "skip", 3600.0, "ksr:jobs:default"),
        ("ok2", "UTC", "skip", 3600.0, "ksr:jobs:default"),
        ("bad", "Europe/Berlin", "latest", 600.0, "ksr:jobs:default"),
    ]
    assert '"id":"ok-20261201T100000Z"' in entries[0].payload("ok-20261201T100000Z")
