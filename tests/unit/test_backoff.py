"""The one backoff formula (runner.backoff), as every retry loop uses it."""

from __future__ import annotations

import random

import pytest

from runner.backoff import delay


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (10_000, 10.0)],
)
def test_doubles_from_base_up_to_cap(attempt: int, expected: float) -> None:
    assert delay(attempt, base=0.5, cap=10.0) == expected


def test_equal_jitter_stays_in_the_upper_half_and_full_jitter_spans_the_range() -> None:
    rng = random.Random(7)
    equal = [delay(4, base=1.0, cap=60.0, jitter="equal", rng=rng) for _ in range(500)]
    full = [delay(4, base=1.0, cap=60.0, jitter="full", rng=rng) for _ in range(500)]
    assert 4.0 <= min(equal) and max(equal) <= 8.0 and max(equal) - min(equal) > 3.0
    assert 0.0 <= min(full) < 1.0 and 7.0 < max(full) <= 8.0


def test_floor_is_never_cut_and_jitter_needs_a_source() -> None:
    assert delay(1, base=1.0, cap=2.0, floor=30.0) == 30.0
    assert delay(3, base=1.0, cap=60.0, floor=1.0) == 4.0
    with pytest.raises(ValueError, match="needs a random source"):
        delay(1, base=1.0, cap=2.0, jitter="full")
