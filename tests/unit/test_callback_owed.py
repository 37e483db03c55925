"""What a message owes next and what its courier does about it (runner.callbacks.owed):
pure decisions on a record and a clock reading, table-driven (STYLE.md lesson 6)."""

from __future__ import annotations

import pytest

from runner.callbacks.owed import Step, next_step, owed_next, retry_delay
from runner.store.record import StateRecord

URL = "http://receiver.test/hook"
NOW = 1_800_000_000.0


class Ceiling:
    """A random source that always picks the top of the range: the delay is the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def rec(**fields: str) -> StateRecord:
    return StateRecord({"webhook": URL, **fields})


@pytest.mark.parametrize(
    "fields, owed",
    [
        ({}, None),
        ({"cb_0": "1"}, 0),
        ({"cb_0": "1", "cb_1": "2", "cb_2": "3"}, 0),  # marked together: the lowest first
        ({"cb_0": "1", "cbd_0": "delivered", "cb_1": "2", "cb_2": "3"}, 1),
        ({"cb_0": "1", "cbd_0": "expired", "cb_1": "2", "cbd_1": "gone", "cb_99": "3"}, 99),
        ({"cb_0": "1", "cbd_0": "failed", "cb_2": "3", "cbd_2": "delivered"}, None),
        ({"cb_0": "1", "cbd_0": "retry?"}, 0),  # not a final outcome: still owed
        ({"cb_1": "2", "cb_owner": "j 1 1", "cb_seq": "4", "cba_1": "2"}, 1),  # owner fields are not marks
    ],
)
def test_owed_next_is_the_lowest_marked_unfinished_status(fields: dict[str, str], owed: int | None) -> None:
    assert owed_next(rec(**fields)) == owed


@pytest.mark.parametrize(
    "record, now, not_before, step",
    [
        (rec(cb_0="1", cbd_0="delivered"), NOW, 0.0, Step("release")),
        (rec(cb_1="1"), NOW, 0.0, Step("attempt", 1)),
        (StateRecord({"cb_1": "1"}), NOW, 0.0, Step("no_url", 1)),
        (rec(cb_0="1", cbd_0="gone", cbd_gone_url=URL, cb_1="1"), NOW, 0.0, Step("skip_gone", 1)),
        (rec(cb_1="1", cbd_gone_url="http://other.test/"), NOW, 0.0, Step("attempt", 1)),
        (rec(cb_1="1"), NOW, NOW + 0.4, Step("wait", 1)),  # RQ's scheduler ran it 0.4 s early
        (rec(cb_1="1"), NOW + 0.4, NOW + 0.4, Step("attempt", 1)),  # its time has come
        (rec(cb_1="1", cba_1="4"), NOW, 0.0, Step("expire", 1)),  # the last one's worker was killed
        (rec(cb_1="1", cba_1="3"), NOW, 0.0, Step("attempt", 1)),
        # An operator's re-delivery after 4 attempts: its own allowance counts from there.
        (rec(cb_1="1", cba_1="4", cbr_1="4 1800000000000"), NOW, 0.0, Step("attempt", 1)),
        (rec(cb_1="1", cba_1="7", cbr_1="4 1800000000000"), NOW, 0.0, Step("attempt", 1)),
        (rec(cb_1="1", cba_1="8", cbr_1="4 1800000000000"), NOW, 0.0, Step("expire", 1)),
    ],
)
def test_next_step(record: StateRecord, now: float, not_before: float, step: Step) -> None:
    assert next_step(record, now=now, not_before=not_before, max_attempts=4) == step


def delay(attempt: int, *, now: float = NOW, retry_after: float | None = None, max_attempts: int = 12) -> float | None:
    return retry_delay(
        attempt=attempt,
        first_owed=NOW,
        now=now,
        retry_after=retry_after,
        base=1.0,
        cap=300.0,
        max_attempts=max_attempts,
        horizon=3600.0,
        rng=Ceiling(),
    )


def test_retries_back_off_to_the_cap() -> None:
    assert [delay(n) for n in (1, 2, 3, 9, 10)] == [1.0, 2.0, 4.0, 256.0, 300.0]


def test_retry_after_is_a_floor_never_cut_and_never_rounded() -> None:
    assert delay(1, retry_after=2.5) == 2.5
    assert delay(3, retry_after=2.5) == 4.0  # the backoff is longer


def test_the_last_attempt_and_the_horizon_end_the_retries() -> None:
    assert delay(4, max_attempts=4) is None
    assert delay(3, max_attempts=4) == 4.0
    assert delay(1, now=NOW + 3599.5) is None  # the next attempt would start after the horizon
    assert delay(1, now=NOW + 3599.0) == 1.0  # exactly at the horizon is still in
    assert delay(1, now=NOW + 3000.0, retry_after=601.0) is None


@pytest.mark.parametrize(
    "fields, tries, since",
    [
        ({"cb_2": "1700000000000", "cba_2": "3"}, 3, 1_700_000_000.0),
        ({"cb_2": "1700000000000", "cba_2": "5", "cbr_2": "3 1800000000500"}, 2, 1_800_000_000.5),
        ({"cb_2": "1700000000000", "cba_2": "5", "cbr_2": "garbage"}, 5, 1_700_000_000.0),  # unreadable: ignored
    ],
)
def test_a_redelivery_has_its_own_attempt_count_and_horizon(fields: dict[str, str], tries: int, since: float) -> None:
    record = rec(**fields)
    assert (record.callback_tries(2), record.callback_owed_since(2)) == (tries, since)
