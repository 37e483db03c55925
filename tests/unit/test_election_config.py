"""ElectionConfig: defaults, the environment, and messages that name the variable."""

from __future__ import annotations

import pytest

from election.config import ElectionConfig
from election.errors import ElectionConfigError


def test_defaults_are_client_go_s() -> None:
    c = ElectionConfig.from_env({})
    assert (c.lease_duration, c.renew_deadline, c.retry_period, c.jitter, c.lock_name) == (
        15.0,
        10.0,
        2.0,
        1.2,
        "ksr-leader",
    )


def test_reads_the_environment() -> None:
    c = ElectionConfig.from_env(
        {
            "KSR_LEASE_DURATION": "3",
            "KSR_RENEW_DEADLINE": "2.0",
            "KSR_RETRY_PERIOD": "0.5",
            "LEADER_ELECTION_LOCK_NAME": "my-lock",
        }
    )
    assert (c.lease_duration, c.renew_deadline, c.retry_period, c.lock_name) == (3.0, 2.0, 0.5, "my-lock")


@pytest.mark.parametrize(
    "env,message",
    [
        ({"KSR_RENEW_DEADLINE": "20"}, "KSR_LEASE_DURATION (15.0) must be greater than KSR_RENEW_DEADLINE (20.0)"),
        ({"KSR_LEASE_DURATION": "10"}, "KSR_LEASE_DURATION (10.0) must be greater than KSR_RENEW_DEADLINE (10.0)"),
        (
            {"KSR_RETRY_PERIOD": "9"},
            "KSR_RENEW_DEADLINE (10.0) must be greater than KSR_RETRY_PERIOD x 1.2 (9.0 x 1.2 = 10.8)",
        ),
        (
            {"KSR_RENEW_DEADLINE": "2.4", "KSR_RETRY_PERIOD": "2"},
            "KSR_RENEW_DEADLINE (2.4) must be greater than KSR_RETRY_PERIOD x 1.2 (2.0 x 1.2 = 2.4)",
        ),
        ({"KSR_LEASE_DURATION": "abc"}, "KSR_LEASE_DURATION must be a number of seconds, got 'abc'"),
        ({"KSR_RETRY_PERIOD": "-1"}, "KSR_RETRY_PERIOD must be a positive number of seconds, got -1.0"),
        ({"KSR_RENEW_DEADLINE": "0"}, "KSR_RENEW_DEADLINE must be a positive number of seconds, got 0.0"),
        ({"KSR_LEASE_DURATION": "nan"}, "KSR_LEASE_DURATION must be a positive number of seconds, got nan"),
        ({"LEADER_ELECTION_LOCK_NAME": "Not_A_Name"}, "LEADER_ELECTION_LOCK_NAME must be a DNS-1123 subdomain"),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ElectionConfigError) as info:
        ElectionConfig.from_env(env)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_is_frozen() -> None:
    c = ElectionConfig()
    with pytest.raises(AttributeError):
        c.lease_duration = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("renew,retry,expected", [(10.0, 2.0, 2.0), (2.0, 0.5, 0.5), (60.0, 20.0, 15.0)])
def test_request_timeout_stays_well_inside_the_deadline(renew: float, retry: float, expected: float) -> None:
    c = ElectionConfig(lease_duration=renew * 2, renew_deadline=renew, retry_period=retry)
    assert c.request_timeout == expected
