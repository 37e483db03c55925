"""runAt / delaySeconds in a message: parsed to Unix time, refused naming the field, and
the due time bounded by KSR_SCHEDULE_MAX_AHEAD (runner.pipeline.delay)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.errors import InvalidMessage
from runner.message import parse_message
from runner.pipeline.delay import due_time, sent_at
from tests.support.messages import VALID


def _parse(**timing: Any):
    return parse_message(json.dumps({**VALID, **timing}))


@pytest.mark.parametrize(
    ("timing", "run_at", "delay"),
    [
        ({"runAt": "2026-12-01T10:00:00Z"}, 1796119200.0, None),
        ({"runAt": "2026-12-01T11:00:00+01:00"}, 1796119200.0, None),
        ({"runAt": "2026-12-01T10:00:00.250Z"}, 1796119200.25, None),
        ({"delaySeconds": 3}, None, 3.0),
        ({"delaySeconds": 0.5}, None, 0.5),
        ({"runAt": None}, None, None),
        ({}, None, None),
    ],
)
def test_timing_is_parsed(timing: dict[str, Any], run_at: float | None, delay: float | None) -> None:
    m = _parse(**timing)
    assert (m.run_at, m.delay_seconds) == (run_at, delay)


@pytest.mark.parametrize(
    ("timing", "error"),
    [
        ({"runAt": "2026-12-01T10:00:00Z", "delaySeconds": 1}, "runAt: give either runAt or delaySeconds, not both"),
        ({"runAt": "2026-12-01T10:00:00"}, "runAt: must carry a UTC offset (Z or +01:00), got '2026-12-01T10:00:00'"),
        (
            {"runAt": "2026-12-01"},
            "runAt: must be an RFC 3339 date-time such as 2026-12-01T10:00:00+01:00, got '2026-12-01'",
        ),
        (
            {"runAt": "2026-13-01T10:00:00Z"},
            "runAt: must be an RFC 3339 date-time such as 2026-12-01T10:00:00+01:00, got '2026-13-01T10:00:00Z'",
        ),
        ({"runAt": 1796119200}, "runAt: must be an RFC 3339 date-time string, got number"),
        ({"delaySeconds": -1}, "delaySeconds: must be >= 0, got -1"),
        ({"delaySeconds": "5"}, "delaySeconds: must be a number of seconds, got string"),
        ({"delaySeconds": True}, "delaySeconds: must be a number of seconds, got boolean"),
    ],
)
def test_bad_timing_names_the_field(timing: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        _parse(**timing)
    assert str(e.value) == error


def test_due_time_counts_a_delay_from_the_entry_and_bounds_how_far_ahead() -> None:
    assert due_time(_parse(delaySeconds=3), added_at=100.0, now=150.0, max_ahead=10) == 103.0
    assert due_time(_parse(runAt="1970-01-01T00:01:00Z"), added_at=0.0, now=0.0, max_ahead=60) == 60.0
    assert due_time(_parse(), added_at=0.0, now=0.0, max_ahead=60) is None
    with pytest.raises(InvalidMessage) as e:
        due_time(_parse(runAt="1970-01-01T00:01:01Z"), added_at=0.0, now=0.0, max_ahead=60)
    assert str(e.value) == "runAt: due 1m01s ahead, more than KSR_SCHEDULE_MAX_AHEAD (1m00s) allows"


@pytest.mark.parametrize(
    ("entry_id", "now", "sent"),
    [
        ("100000-0", 150.0, 100.0),  # read (or read again) later: from the id, never pushed further
        ("100000-3", 100.0, 100.0),
        ("3700000-0", 150.0, 150.0),  # the id an hour ahead of Redis's clock (it stepped back): from now
    ],
)
def test_a_delay_counts_from_the_entry_id_unless_it_lies_ahead_of_redis_clock(entry_id: str, now: float, sent: float):
    assert sent_at(entry_id, now=now) == sent
