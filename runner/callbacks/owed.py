"""What a message owes next, and what a courier does about it: the decisions, pure.

`owed_next` is the one place that decides which callback of a message goes next: the lowest
status marked (`cb_<s>`) and not finished (`cbd_<s>`), so 0, then 1, then 2, 3 or 99 (the
watcher never marks two of those). The courier (runner.callbacks.courier) asks `next_step`
what to do with the record it holds, and `retry_delay` whether a retryable attempt gets
another; both take the clock's reading as a parameter, so they are tested without Redis
and without sleeping (tests/unit/test_callback_owed.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runner import backoff
from runner.backoff import UniformSource
from runner.store.record import StateRecord

Action = Literal["release", "skip_gone", "wait", "attempt", "expire", "no_url"]


def owed_next(record: StateRecord) -> int | None:
    """The status whose callback is delivered next, or None when nothing is owed."""
    owed = record.callbacks(owed=True)
    return owed[0] if owed else None


@dataclass(frozen=True)
class Step:
    action: Action
    status: int | None = None


def next_step(
    record: StateRecord,
    *,
    now: float,
    not_before: float,
    max_attempts: int,
) -> Step:
    """What the owner of `record` does next.

    release: nothing is owed. skip_gone: the URL answered 410 for an earlier status, this
    one is finished as gone without a request. no_url: owed to nobody (failed). wait: the
    job started before its time (RQ's scheduler moves jobs when their whole second has
    come): it hands over to a job at that time. expire: the attempts allowed were all
    started (the last one's worker was killed; since an operator's re-delivery, its own
    allowance: StateRecord.callback_tries). attempt: make the next attempt of `status`
    (on the lane its receiver's speed calls for: runner.callbacks.lanes).
    """
    status = owed_next(record)
    if status is None:
        return Step("release")
    url = record.webhook
    if not url:
        return Step("no_url", status)
    if record.gone_url == url:
        return Step("skip_gone", status)
    if now < not_before:
        return Step("wait", status)
    if record.callback_tries(status) >= max_attempts:
        return Step("expire", status)
    return Step("attempt", status)


def retry_delay(
    *,
    attempt: int,
    first_owed: float,
    now: float,
    retry_after: float | None,
    base: float,
    cap: float,
    max_attempts: int,
    horizon: float,
    rng: UniformSource,
) -> float | None:
    """Seconds until the next attempt after retryable attempt number `attempt`, or None:
    the callback expires (that was the last attempt allowed, or the next would start later
    than `horizon` seconds after the callback was first owed).

    Full jitter spreads a recovering receiver's load; its Retry-After is a floor, not
    capped: the horizon is what bounds the total.
    """
    delay = backoff.delay(attempt, base=base, cap=cap, jitter="full", rng=rng, floor=retry_after)
    if attempt >= max_attempts or now + delay > first_owed + horizon:
        return None
    return delay
