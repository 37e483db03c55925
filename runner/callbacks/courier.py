"""Delivering one callback: the RQ job `deliver`, one attempt, retried with backoff, then
the next status of the message.

The runner enqueues (runner.callbacks.enqueue); every replica's RQ worker
(runner.callbacks.worker) executes `deliver`, one attempt per RQ job. A retry is a new RQ
job scheduled with `enqueue_at`; when a callback finishes, the courier enqueues the next
status the message owes (a chain per message: later statuses do not poll while an earlier
one is retried). The record's fields are named in runner.store.record.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import redis
from rq import Queue, get_current_job

from runner import backoff, metrics
from runner.backoff import UniformSource
from runner.callbacks.chain import (
    CallbackPayload,
    attempt_job_id,
    job_options,
    job_timeout,
    next_owed,
    owed_key,
    owed_member,
    pending_before,
    read_record,
    rq_job_id,
)
from runner.callbacks.enqueue import CallbackQueue
from runner.callbacks.http import (
    Outcome,
    OutcomeKind,
    build_headers,
    callback_body,
    send,
    webhook_id,
)
from runner.callbacks.lanes import clear_slow, is_slow, main_queue, mark_slow, queue_for, slow_queue
from runner.settings import Settings
from runner.store import scripts
from runner.store.connection import connect
from runner.store.errors import redis_errors
from runner.store.record import Field

__all__ = ["Backoff", "Courier", "deliver"]

log = logging.getLogger(__name__)


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


def deliver(payload: CallbackPayload) -> str:
    """RQ job function: one attempt at one callback. Returns the outcome (RQ keeps no result)."""
    settings, backoff = _worker_config()
    job = get_current_job()
    conn = job.connection if job is not None else connect(settings.redis, socket_timeout=settings.callbacks.timeout + 5)
    origin = job.origin if job is not None else main_queue(settings)
    return Courier(conn, settings, backoff).run(payload, queue=origin)


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
        self.chain = CallbackQueue(conn, settings, clock=clock)
        self._hset_if_exists = scripts.load(conn, "hset_if_exists")
        self._incr_if_exists = scripts.load(conn, "hincr_if_exists")

    def run(self, p: CallbackPayload, *, queue: str | None = None) -> str:
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
        earlier = pending_before(record, status)
        if earlier:
            # Enqueued out of turn (a race with the sweep): the earlier one's end enqueues it.
            log.debug("callback %s:%s waits for %s", message_id, status, earlier)
            return "waiting"
        if queue == main_queue(self.settings) and is_slow(self.conn, self.settings, url):
            moved = rq_job_id(message_id, status, p["attempt"], "slow")
            self._schedule(key, p, 0.0, moved, slow_queue(self.settings))  # not an attempt
            return "moved"

        wid = webhook_id(message_id, status)
        attempt = self._count_attempt(key, p)
        if attempt > self.settings.callbacks.max_attempts:  # the last one's worker was killed
            log.warning("callback %s expired: %d attempts started, none finished", wid, attempt - 1)
            return self._finish(key, p, "expired")
        started = time.monotonic()
        raised = False
        try:
            body = callback_body(message_id, status, p["detail"])  # deterministic: same bytes every attempt
            headers = build_headers(wid, body, keys=self.settings.callbacks.signing_keys)
            outcome = send(
                url, body, headers, allow=self.settings.policy.webhook_allow, timeout=self.settings.callbacks.timeout
            )
        except Exception as e:  # a bug or an input nobody foresaw: this callback's problem only
            log.exception("callback %s attempt %d raised", wid, attempt)
            outcome = Outcome(OutcomeKind.RETRY, detail=f"unexpected {type(e).__name__}: {e}")
            raised = True
        self._note_speed(url, outcome, time.monotonic() - started)

        if outcome.kind is OutcomeKind.DELIVERED:
            log.info("callback %s delivered (HTTP %s, attempt %d)", wid, outcome.status, attempt)
            return self._finish(key, p, "delivered")
        if outcome.kind is OutcomeKind.GONE:
            log.info("callback %s: %s answered 410, no more callbacks to it for this message", wid, url)
            return self._finish(key, p, "gone", gone_url=url)
        if outcome.kind is OutcomeKind.FAILED:
            log.warning("callback %s failed for good (attempt %d): %s", wid, attempt, outcome.detail)
            return self._finish(key, p, "failed")

        # Full jitter spreads a recovering receiver's load; its Retry-After is a floor, not
        # capped: the retry horizon is what bounds the total.
        delay = backoff.delay(
            attempt,
            base=self.backoff.base,
            cap=self.backoff.cap,
            jitter="full",
            rng=self.rng,
            floor=outcome.retry_after,
        )
        horizon_end = (record.callback_first_owed(status) or p["first"]) + self.settings.callbacks.retry_horizon
        if attempt >= self.settings.callbacks.max_attempts or self.clock() + delay > horizon_end:
            log.warning(
                "callback %s expired after %d attempts (%gs horizon); last: %s",
                wid,
                attempt,
                self.settings.callbacks.retry_horizon,
                outcome.detail,
            )
            return self._finish(key, p, "expired")
        log.info("callback %s attempt %d: %s; next in %.1fs", wid, attempt, outcome.detail, delay)
        _count(status, "error" if raised else "retry")
        self._schedule(
            key,
            {**p, "attempt": attempt + 1},
            delay,
            attempt_job_id(message_id, status, attempt + 1),
            queue_for(self.conn, self.settings, url),
        )
        return "retry"

    def _count_attempt(self, key: str, p: CallbackPayload) -> int:
        """Count this attempt in the record before making it: a worker killed mid-attempt
        must not give the callback a fresh allowance. Without a record, the payload counts."""
        with redis_errors():
            counted = int(self._incr_if_exists(keys=[key], args=[Field.attempts(p["status"])]))
        return counted or p["attempt"]

    def _note_speed(self, url: str, outcome: Outcome, took: float) -> None:
        if outcome.timed_out:
            mark_slow(self.conn, self.settings, url)
        elif outcome.status is not None and took < self.settings.callbacks.timeout / 2:
            clear_slow(self.conn, self.settings, url)

    def _finish(self, key: str, p: CallbackPayload, outcome: str, *, gone_url: str | None = None) -> str:
        status = int(p["status"])
        fields = [Field.outcome(status), outcome]
        if gone_url is not None:
            fields += [Field.GONE_URL, gone_url]
        _count(status, outcome)  # first: whoever sees the outcome recorded finds it counted
        with redis_errors():
            if not self._hset_if_exists(keys=[key], args=fields):
                log.debug("no state record %s: outcome %s of status %s not recorded", key, outcome, status)
            self.conn.zrem(owed_key(self.settings), owed_member(p["id"], status))
        self._enqueue_next(key, p)
        return outcome

    def _enqueue_next(self, key: str, p: CallbackPayload) -> None:
        """The chain: the next status the message owes gets its turn. (If the runner marks
        it only after this read, its own enqueue finds this status finished and goes on.)"""
        record = read_record(self.conn, key)
        following = next_owed(record, int(p["status"]))
        if following is None:
            return
        self.chain.enqueue(p["id"], following, record.callback_detail(following), record.webhook or p["url"])

    def _schedule(self, key: str, p: CallbackPayload, delay: float, job_id: str, queue_name: str) -> None:
        status = int(p["status"])
        queue = Queue(queue_name, connection=self.conn)
        options = dict(job_id=job_id, **job_options(self.settings))
        with redis_errors():
            if delay <= 0:
                queue.enqueue_call(deliver, args=(p,), timeout=job_timeout(self.settings), **options)
            else:
                # RQ's scheduled registry keeps whole seconds and enqueues when its second has
                # come: round up, or a Retry-After could be cut short by up to a second.
                when = datetime.fromtimestamp(math.ceil(self.clock() + delay), tz=UTC)
                queue.enqueue_at(when, deliver, args=(p,), job_timeout=job_timeout(self.settings), **options)
            self._hset_if_exists(keys=[key], args=[Field.chain(status), job_id])
            self.conn.zadd(owed_key(self.settings), {owed_member(p["id"], status): self.clock()})


def _count(status: int, outcome: str) -> None:
    metrics.get().callbacks.labels(status=str(status), outcome=outcome).inc()
