"""The RQ jobs that deliver a message's callbacks: their ids, options and argument, the
owed index, and `put`, the one call that hands a courier job to RQ.

A message's callbacks are delivered by one RQ job at a time, the holder of the owner lease
in the state record (lua/lib_owner.lua, docs/callbacks.md "One owner"): a job is put on
a queue only after a script granted it the lease, so RQ never holds two live couriers of
one message and nobody needs to ask RQ whether a job is alive. The record's fields are
named and parsed by runner.store.record; they are written only while that record exists
(a record created here would look like a claimed message to `StateStore.claim`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypedDict

import redis
from rq import Queue

from runner.callbacks.http import webhook_id
from runner.settings import Settings
from runner.store.errors import redis_errors
from runner.store.record import StateRecord

DELIVER = "runner.callbacks.courier.deliver"  # by name: the courier imports this module
_RQ_SAFE = re.compile(r"[A-Za-z0-9-]")


class CourierPayload(TypedDict):
    """The RQ job argument: which message, and not before when (Unix seconds, 0: at once).
    Everything else (what is owed, details, URL, attempts) is read from the state record."""

    id: str  # message id
    not_before: float


def rq_job_id(message_id: str, status: int, *suffix: object) -> str:
    """The RQ job id for webhook-id `<id>:<status>` (plus `:<attempt>` etc. for retries).

    RQ allows only [A-Za-z0-9_-] in job ids and message ids may hold `._:@+=~`, so every
    other character (and `_` itself) is written `_xx` in hex: injective, and readable for
    the usual UUID ids (`31a8-...:0` becomes `31a8-..._3a0`).
    """
    text = ":".join([webhook_id(message_id, status), *(str(s) for s in suffix)])
    return "".join(c if _RQ_SAFE.match(c) else "".join(f"_{b:02x}" for b in c.encode("utf-8")) for c in text)


def attempt_job_id(message_id: str, status: int, attempt: int) -> str:
    """The job that makes attempt `attempt` of a status: `<webhook-id>`, then `<webhook-id>:<n>`."""
    return rq_job_id(message_id, status) if attempt <= 1 else rq_job_id(message_id, status, attempt)


def read_record(conn: redis.Redis, key: str) -> StateRecord:
    with redis_errors():
        return StateRecord.from_reply(conn.hgetall(key))


def owed_key(settings: Settings) -> str:
    """Sorted set of callbacks owed and not finished (member `<status>:<id>`), scored with
    when the leader's recovery should look at it next (Unix seconds): the mark's time, then
    the owner lease's deadline. CallbackQueue.sweep takes over the lapsed ones."""
    return settings.state.active_key.rsplit(":", 1)[0] + ":callbacks:owed"


def owed_member(message_id: str, status: int) -> str:
    return f"{int(status)}:{message_id}"


def job_timeout(settings: Settings) -> int:
    """RQ's limit for one courier job: an attempt's own wall-clock deadline plus Redis round trips."""
    return int(settings.callbacks.timeout) + 10


def lease_ms(settings: Settings) -> int:
    """How long an owner lease holds without renewal: longer than RQ lets a job run, so a
    holder that did not renew in time is dead (its worker was killed) or never started."""
    return (job_timeout(settings) + 2) * 1000


def job_options(settings: Settings) -> dict[str, Any]:
    return {
        "result_ttl": 0,  # the record's cbd_<s> is the result: a finished job leaves no keys
        "failure_ttl": 24 * 3600,  # a job that raised (Redis lost mid-job) stays in `rq info` a day
        "description": "ksr callback",
    }


def put(conn: redis.Redis, settings: Settings, queue_name: str, job_id: str, payload: CourierPayload) -> None:
    """Enqueue the courier `job_id`, which already holds the owner lease: at once, or at
    `payload["not_before"]` through RQ's scheduler. The courier checks that time itself."""
    queue = Queue(queue_name, connection=conn)
    options = dict(job_id=job_id, job_timeout=job_timeout(settings), **job_options(settings))
    with redis_errors():
        if payload["not_before"] > 0:
            when = datetime.fromtimestamp(payload["not_before"], tz=UTC)
            queue.enqueue_at(when, DELIVER, args=(payload,), **options)
        else:
            queue.enqueue(DELIVER, args=(payload,), **options)
