"""Delivering one callback: the RQ job `deliver`, one attempt, in order, retried with backoff.

The runner enqueues (runner.callbacks.enqueue); every replica's RQ worker
(runner.callbacks.worker) executes `deliver`, one attempt per RQ job. A retry or an
ordering wait is a new RQ job scheduled with `enqueue_at`.

What is written to Redis besides RQ's own keys (docs/callbacks.md has the table), all in the
state record `<CACHE_JOB_KEY_PREFIX><id>` and only when that record exists (a record we
created here would look like a claimed message to `StateStore.claim`): the callback's
outcome once it finished, the RQ job id of its chain's latest job (idempotent enqueue) and
the URL that answered 410 (runner.store.record names these fields).
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypedDict

import redis
from rq import Queue, get_current_job

from runner import metrics
from runner.callbacks.http import (
    OutcomeKind,
    UniformSource,
    build_headers,
    callback_body,
    next_delay,
    send,
    webhook_id,
)
from runner.settings import Settings
from runner.store import scripts
from runner.store.record import Field, StateRecord
from runner.store.streams import redis_errors

log = logging.getLogger(__name__)

ORDER_WAIT = 0.5  # seconds before re-checking an earlier status; RQ's scheduler rounds up to ~1 s
_RQ_SAFE = re.compile(r"[A-Za-z0-9-]")


class CallbackPayload(TypedDict):
    """The RQ job argument: small and JSON-able."""

    id: str  # message id
    status: int
    detail: dict[str, Any]
    url: str
    first: float  # Unix time the callback was first enqueued: the retry horizon counts from it
    attempt: int  # 1 = the first attempt
    waits: int  # ordering waits so far (not attempts)


# -- settings the worker needs ------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    base: float  # KSR_CALLBACK_BACKOFF_BASE, seconds
    cap: float  # KSR_CALLBACK_BACKOFF_CAP, seconds

    @classmethod
    def of(cls, settings: Settings) -> Backoff:
        return cls(settings.callbacks.backoff_base, settings.callbacks.backoff_cap)


@lru_cache(maxsize=1)
def _worker_config() -> tuple[Settings, Backoff]:
    """Parsed once per worker process: every job of that process shares it."""
    settings = Settings.from_env()
    return settings, Backoff.of(settings)


# -- ids and records -------------------------------------------------------------------------


def rq_job_id(message_id: str, status: int, *suffix: object) -> str:
    """The RQ job id for webhook-id `<id>:<status>` (plus `:<attempt>` etc. for retries).

    RQ allows only [A-Za-z0-9_-] in job ids and message ids may hold `._:@+=~`, so every
    other character (and `_` itself) is written `_xx` in hex: injective, and readable for
    the usual UUID ids (`31a8-...:0` becomes `31a8-..._3a0`).
    """
    text = ":".join([webhook_id(message_id, status), *(str(s) for s in suffix)])
    return "".join(c if _RQ_SAFE.match(c) else "".join(f"_{b:02x}" for b in c.encode("utf-8")) for c in text)


def read_record(conn: redis.Redis, key: str) -> StateRecord:
    with redis_errors():
        return StateRecord.from_reply(conn.hgetall(key))


def _pending_before(record: StateRecord, status: int) -> list[int]:
    """Earlier statuses of this message that are enqueued but not finished."""
    return [s for s in record.callbacks(owed=True) if s < status]


def owed_key(settings: Settings) -> str:
    """Sorted set of callbacks enqueued and not finished (member `<status>:<id>`, score: the
    last time something was enqueued for it). The leader's sweep re-enqueues stale ones."""
    return settings.state.active_key.rsplit(":", 1)[0] + ":callbacks:owed"


def owed_member(message_id: str, status: int) -> str:
    return f"{int(status)}:{message_id}"


def job_timeout(settings: Settings) -> int:
    return int(settings.callbacks.timeout) + 30  # one attempt plus Redis round trips


def job_options(settings: Settings) -> dict[str, Any]:
    return {
        "result_ttl": 3600,  # finished jobs are only kept for inspection: the state record has the outcome
        "failure_ttl": 7 * 24 * 3600,  # a crashed job stays visible in `rq info` for a week
        "description": "ksr callback",
    }


# -- the RQ job -----------------------------------------------------------------------------


def deliver(payload: CallbackPayload) -> str:
    """RQ job function: one attempt at one callback. Returns the outcome (RQ keeps it as the result)."""
    settings, backoff = _worker_config()
    job = get_current_job()
    conn = job.connection if job is not None else redis.Redis.from_url(settings.redis.url)
    return Courier(conn, settings, backoff).run(payload)


class Courier:
    """One attempt, with the clock and the random source as parameters (STYLE.md lesson 3)."""

    def __init__(
        self,
        conn: redis.Redis,
        settings: Settings,
        backoff: Backoff,
        *,
        clock: Callable[[], float] = time.time,
        rng: UniformSource | None = None,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.backoff = backoff
        self.clock = clock
        self.rng: UniformSource = rng or random.SystemRandom()
        self.queue = Queue(settings.callbacks.queue, connection=conn)
        self._hset_if_exists = scripts.load(conn, "hset_if_exists")

    def run(self, p: CallbackPayload) -> str:
        message_id, status, url = p["id"], int(p["status"]), p["url"]
        key = self.settings.state.record_key(message_id)
        record = read_record(self.conn, key)
        done = record.callback_outcome(status)
        if done is not None:
            log.debug("callback %s:%s already %s", message_id, status, done)
            return done
        if record.gone_url == url:
            log.info("callback %s:%s not sent: %s answered 410 earlier", message_id, status, url)
            return self._finish(key, p, "gone")
        horizon_end = p["first"] + self.settings.callbacks.retry_horizon
        waiting_for = _pending_before(record, status)
        if waiting_for:
            if self.clock() + ORDER_WAIT < horizon_end:
                log.debug("callback %s:%s waits for %s", message_id, status, waiting_for)
                self._schedule(key, {**p, "waits": p["waits"] + 1}, ORDER_WAIT, f"w{p['waits'] + 1}")
                return "waiting"
            # The earlier callbacks had at least as long: at-least-once beats strict order now.
            log.warning(
                "callback %s:%s sent although %s not finished after %gs",
                message_id,
                status,
                waiting_for,
                self.settings.callbacks.retry_horizon,
            )

        body = callback_body(message_id, status, p["detail"])  # deterministic: same bytes every attempt
        wid = webhook_id(message_id, status)
        headers = build_headers(wid, body, keys=self.settings.callbacks.signing_keys)
        outcome = send(
            url, body, headers, allow=self.settings.policy.webhook_allow, timeout=self.settings.callbacks.timeout
        )

        if outcome.kind is OutcomeKind.DELIVERED:
            log.info("callback %s delivered (HTTP %s, attempt %d)", wid, outcome.status, p["attempt"])
            return self._finish(key, p, "delivered")
        if outcome.kind is OutcomeKind.GONE:
            log.info("callback %s: %s answered 410, no more callbacks to it for this message", wid, url)
            return self._finish(key, p, "gone", gone_url=url)
        if outcome.kind is OutcomeKind.FAILED:
            log.warning("callback %s failed for good (attempt %d): %s", wid, p["attempt"], outcome.detail)
            return self._finish(key, p, "failed")

        delay = next_delay(
            p["attempt"], base=self.backoff.base, cap=self.backoff.cap, rng=self.rng, retry_after=outcome.retry_after
        )
        if p["attempt"] >= self.settings.callbacks.max_attempts or self.clock() + delay > horizon_end:
            log.warning(
                "callback %s expired after %d attempts (%gs horizon); last: %s",
                wid,
                p["attempt"],
                self.settings.callbacks.retry_horizon,
                outcome.detail,
            )
            return self._finish(key, p, "expired")
        log.info("callback %s attempt %d: %s; next in %.1fs", wid, p["attempt"], outcome.detail, delay)
        _count(status, "retry")
        attempt = p["attempt"] + 1
        self._schedule(key, {**p, "attempt": attempt, "waits": 0}, delay, attempt)
        return "retry"

    def _finish(self, key: str, p: CallbackPayload, outcome: str, *, gone_url: str | None = None) -> str:
        fields = [Field.outcome(p["status"]), outcome]
        if gone_url is not None:
            fields += [Field.GONE_URL, gone_url]
        _count(int(p["status"]), outcome)  # first: whoever sees the outcome recorded finds it counted
        with redis_errors():
            if not self._hset_if_exists(keys=[key], args=fields):
                log.debug("no state record %s: outcome %s of status %s not recorded", key, outcome, p["status"])
            self.conn.zrem(owed_key(self.settings), owed_member(p["id"], p["status"]))
        return outcome

    def _schedule(self, key: str, p: CallbackPayload, delay: float, *suffix: object) -> None:
        # RQ's scheduled registry keeps whole seconds and enqueues when its second has come:
        # round up, or a Retry-After could be cut short by up to a second.
        when = datetime.fromtimestamp(math.ceil(self.clock() + delay), tz=UTC)
        job_id = rq_job_id(p["id"], int(p["status"]), *suffix)
        with redis_errors():
            self.queue.enqueue_at(
                when,
                deliver,
                args=(p,),
                job_id=job_id,
                job_timeout=job_timeout(self.settings),
                **job_options(self.settings),
            )
            self._hset_if_exists(keys=[key], args=[Field.chain(p["status"]), job_id])
            self.conn.zadd(owed_key(self.settings), {owed_member(p["id"], p["status"]): self.clock()})


def _count(status: int, outcome: str) -> None:
    metrics.get().callbacks.labels(status=str(status), outcome=outcome).inc()
