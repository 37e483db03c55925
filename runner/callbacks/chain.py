"""The RQ jobs of a callback: their ids and options, the job argument, the owed index.

A callback `<id>:<status>` is one chain of RQ jobs, one per attempt (runner.callbacks.courier
runs them, runner.callbacks.enqueue starts them). Its fields in the state record (outcome,
latest job id, attempts, when it was first owed) are named and parsed by
runner.store.record; they are written only while that record exists (a record created
here would look like a claimed message to `StateStore.claim`).
"""

from __future__ import annotations

import re
from typing import Any, TypedDict

import redis

from runner.callbacks.http import webhook_id
from runner.settings import Settings
from runner.store.errors import redis_errors
from runner.store.record import StateRecord

_RQ_SAFE = re.compile(r"[A-Za-z0-9-]")


class CallbackPayload(TypedDict):
    """The RQ job argument: small and JSON-able. `first` and `attempt` are only the fallback
    for a callback whose state record is gone; the record's `cb_`/`cba_` fields rule."""

    id: str  # message id
    status: int
    detail: dict[str, Any]
    url: str
    first: float  # Unix time the callback was first enqueued
    attempt: int  # 1 = the first attempt


def rq_job_id(message_id: str, status: int, *suffix: object) -> str:
    """The RQ job id for webhook-id `<id>:<status>` (plus `:<attempt>` etc. for retries).

    RQ allows only [A-Za-z0-9_-] in job ids and message ids may hold `._:@+=~`, so every
    other character (and `_` itself) is written `_xx` in hex: injective, and readable for
    the usual UUID ids (`31a8-...:0` becomes `31a8-..._3a0`).
    """
    text = ":".join([webhook_id(message_id, status), *(str(s) for s in suffix)])
    return "".join(c if _RQ_SAFE.match(c) else "".join(f"_{b:02x}" for b in c.encode("utf-8")) for c in text)


def attempt_job_id(message_id: str, status: int, attempt: int) -> str:
    """Attempt 1 is `<webhook-id>`, attempt n is `<webhook-id>:<n>`."""
    return rq_job_id(message_id, status) if attempt <= 1 else rq_job_id(message_id, status, attempt)


def read_record(conn: redis.Redis, key: str) -> StateRecord:
    with redis_errors():
        return StateRecord.from_reply(conn.hgetall(key))


def pending_before(record: StateRecord, status: int) -> list[int]:
    """Earlier statuses of this message that are owed: `status` waits for them."""
    return [s for s in record.callbacks(owed=True) if s < status]


def next_owed(record: StateRecord, status: int) -> int | None:
    """The status whose turn comes when `status` finishes."""
    later = [s for s in record.callbacks(owed=True) if s > status]
    return later[0] if later else None


def owed_key(settings: Settings) -> str:
    """Sorted set of callbacks owed and not finished (member `<status>:<id>`, score: the last
    time something was enqueued for it). The leader's sweep re-enqueues stale ones."""
    return settings.state.active_key.rsplit(":", 1)[0] + ":callbacks:owed"


def owed_member(message_id: str, status: int) -> str:
    return f"{int(status)}:{message_id}"


def job_timeout(settings: Settings) -> int:
    """RQ's limit for one attempt: the attempt's own wall-clock deadline plus Redis round trips."""
    return int(settings.callbacks.timeout) + 10


def job_options(settings: Settings) -> dict[str, Any]:
    return {
        "result_ttl": 0,  # the record's cbd_<s> is the result: a finished job leaves no keys
        "failure_ttl": 24 * 3600,  # a job that raised (Redis lost mid-job) stays in `rq info` a day
        "description": "ksr callback",
    }
