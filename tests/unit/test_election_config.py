"""ElectionConfig: defaults, the shared duration parser, and errors that carry the variable."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from election.config import ElectionConfig
from election.durations import parse_seconds
from election.errors import ElectionConfigError


def test_defaults_are_client_go_s() -> None:
    c = ElectionConfig()
    assert (c.lease_duration, c.renew_deadline, c.retry_period, c.jitter, c.lock_name) == (
        15.0,
        10.0,
        2.0,
        1.2,
        "ksr-leader",
    )


@pytest.mark.parametrize(
    "text, seconds",
    [("15", 15.0), ("2.5", 2.5), ("15s", 15.0), (" 15s ", 15.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "15x", "s", "-1", "0", "0s", "nan", "inf", "1e400", "15 s s"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_seconds(text)
    assert str(caught.value) == f"must be a number of seconds > 0, got {text!r}"


@pytest.mark.parametrize(
    "fields, variable, problem",
    [
        ({"renew_deadline": 20.0}, "KSR_LEASE_DURATION", "must be greater than KSR_RENEW_DEADLINE (20), got 15"),
        ({"lease_duration": 10.0}, "KSR_LEASE_DURATION", "must be greater than KSR_RENEW_DEADLINE (10), got 10"),
        (
            {"retry_period": 9.0},
            "KSR_RENEW_DEADLINE",
            "must be greater than KSR_RETRY_PERIOD x 1.2 (9 x 1.2 = 10.8), got 10",
        ),
        (
            {"renew_deadline": 2.4, "retry_period": 2.0},
            "KSR_RENEW_DEADLINE",
            "must be greater than KSR_RETRY_PERIOD x 1.2 (2 x 1.2 = 2.4), got 2.4",
        ),
        ({"retry_period": -1.0}, "KSR_RETRY_PERIOD", "must be a number of seconds > 0, got -1.0"),
        ({"renew_deadline": 0.0}, "KSR_RENEW_DEADLINE", "must be a number of seconds > 0, got 0.0"),
        ({"lease_duration": float("nan")}, "KSR_LEASE_DURATION", "must be a number of seconds > 0, got nan"),
        ({"jitter": 0.5}, "jitter", "must be at least 1.0, got 0.5"),
        (
            {"lock_name": "Not_A_Name"},
            "LEADER_ELECTION_LOCK_NAME",
            "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.'), got 'Not_A_Name'",
        ),
    ],
)
def test_invalid_settings_carry_the_variable(fields: dict[str, object], variable: str, problem: str) -> None:
    with pytest.raises(ElectionConfigError) as info:
        ElectionConfig(**fields)  # type: ignore[arg-type]
    assert (info.value.variable, info.value.problem) == (variable, problem)
    assert str(info.value) == f"{variable}: {problem}"
    assert isinstance(info.value, ValueError)


def test_is_frozen() -> None:
    c = ElectionConfig()
    with pytest.raises(AttributeError):
        c.lease_duration = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("renew,retry,expected", [(10.0, 2.0, 2.0), (2.0, 0.5, 0.5), (60.0, 20.0, 15.0)])
def test_request_timeout_stays_well_inside_the_deadline(renew: float, retry: float, expected: float) -> None:
    c = ElectionConfig(lease_duration=renew * 2, renew_deadline=renew, retry_period=retry)
    assert c.request_timeout == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20) | st.from_regex(r"\A[-+]?[0-9.e]{1,8}(ms|s|m|h)?\Z", fullmatch=True))
def test_a_duration_is_a_positive_finite_number_or_a_value_error(text: str) -> None:
    try:
        value = parse_seconds(text)
    except ValueError as e:
        assert str(e).startswith("must be a number of seconds > 0, got ")
    else:
        assert math.isfinite(value) and value > 0
