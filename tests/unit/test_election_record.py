"""LeaderRecord conversions: pure functions, round trips."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from kubernetes.client import ApiClient, V1LeaseSpec

from election.errors import LockError
from election.record import (
    LeaderRecord,
    format_time,
    from_dict,
    from_lease_spec,
    parse_time,
    to_dict,
    to_lease_spec,
)

UTC = dt.UTC
RECORDS = [
    LeaderRecord(
        holder="pod-a",
        lease_duration=15.0,
        acquire_time=dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
        renew_time=dt.datetime(2024, 5, 1, 12, 0, 8, tzinfo=UTC),
        transitions=3,
    ),
    LeaderRecord(
        holder=None,
        lease_duration=1.0,
        acquire_time=dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        renew_time=dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        transitions=9,
    ),
    LeaderRecord(holder="x", lease_duration=3.0),
]


@pytest.mark.parametrize("record", RECORDS)
def test_lease_spec_round_trip(record: LeaderRecord) -> None:
    assert from_lease_spec(to_lease_spec(record), version="17") == LeaderRecord(**{**record.__dict__, "version": "17"})


@pytest.mark.parametrize("record", RECORDS)
def test_lease_spec_round_trip_through_the_client_model(record: LeaderRecord) -> None:
    """What the kubernetes client hands back on a read: a V1LeaseSpec holding datetimes."""
    text = json.dumps({"spec": to_lease_spec(record)})
    spec = ApiClient().deserialize(text, "V1Lease", "application/json").spec
    assert isinstance(spec, V1LeaseSpec)
    assert from_lease_spec(spec) == record


def test_lease_spec_shape() -> None:
    spec = to_lease_spec(RECORDS[1])
    assert spec == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": 9,
        "acquireTime": "2024-05-01T12:00:00.000000Z",  # MicroTime: always 6 digits
        "renewTime": "2024-05-01T12:00:00.000000Z",
    }


@pytest.mark.parametrize("seconds,api_seconds", [(3.0, 3), (2.5, 3), (0.2, 1), (15.0, 15)])
def test_fractional_lease_is_rounded_up(seconds: float, api_seconds: int) -> None:
    assert to_lease_spec(LeaderRecord(holder="a", lease_duration=seconds))["leaseDurationSeconds"] == api_seconds


@pytest.mark.parametrize("record", RECORDS + [LeaderRecord(holder="a", lease_duration=2.5)])
def test_dict_round_trip(record: LeaderRecord) -> None:
    fields = {k.encode(): v.encode() for k, v in to_dict(record).items()}  # as redis returns it
    fields[b"version"] = b"4"
    assert from_dict(fields) == LeaderRecord(**{**record.__dict__, "version": "4"})


def test_empty_spec_means_nobody_holds_it() -> None:
    assert from_lease_spec(None).holder is None
    assert from_lease_spec(V1LeaseSpec()).holder is None


@pytest.mark.parametrize("value", ["yesterday", 12])
def test_malformed_times_are_lock_errors(value: object) -> None:
    with pytest.raises(LockError):
        parse_time(value)


def test_naive_times_are_taken_as_utc() -> None:
    assert format_time(dt.datetime(2024, 1, 1)) == "2024-01-01T00:00:00.000000Z"
