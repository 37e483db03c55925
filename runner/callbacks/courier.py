"""Delivering a message's callbacks: the RQ job `deliver`, the holder of the message's owner
lease, sends what the message owes, in order.

A job is enqueued only after a script granted it the lease (runner.callbacks.enqueue, or
its predecessor here). It renews the lease at each step and asks runner.callbacks.owed
what to do: attempt the next owed status, finish it, or, when nothing is owed, release the
lease in the same script that checks nothing new was marked meanwhile (else it goes on).
A retryable attempt hands the lease to the job of the next attempt, scheduled with
`enqueue_at`; a job that lost its lease (it lapsed and the leader's recovery took over)
stops at its next step. The record's fields are named in runner.store.record.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from rq import get_current_job

from election.clock import SYSTEM_CLOCK, Clock
from runner import metrics
from runner.backoff import UniformSource
from runner.callbacks.chain import (
    CourierPayload,
    attempt_job_id,
    job_timeout,
    lease_ms,
    owed_key,
    owed_member,
    put,
    rq_job_id,
)
from runner.callbacks.http import Outcome, OutcomeKind, build_headers, callback_body, send, webhook_id
from runner.callbacks.lanes import clear_slow, is_slow, main_queue, mark_slow, queue_for, slow_queue
from runner.callbacks.owed import next_step, retry_delay
from runner.settings import Settings
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.record import CallbackAttempt, Field, StateRecord, attempt_log_with
from runner.store.replies import text

__all__ = ["Backoff", "Courier", "deliver"]

log = logging.getLogger(__name__)

# A job goes on to the next status itself only while a whole attempt still fits in RQ's
# limit for it, with this margin for the Redis round trips around it.
_MARGIN = 5.0


@dataclass(frozen=True)
class Backoff:
    base: float  # KSR_CALLBACK_BACKOFF_BASE, seconds
    cap: float  # KSR_CALLBACK_BACKOFF_CAP, seconds

    @classmethod
    def of(cls, settings: Settings) -> Backoff:
        return cls(settings.callbacks.backoff_base, settings.callbacks.backoff_cap)


class LostLease(Exception):
    """Another job holds the message's lease now: this one must stop at once."""


@lru_cache(maxsize=1)
def _worker_config() -> tuple[Settings, Backoff]:
    """Parsed once per worker process: every job of that process shares it."""
    settings = Settings.from_env()
    return settings, Backoff.of(settings)


def deliver(payload: CourierPayload) -> str:
    """RQ job function: deliver what the message owes while this job holds its lease.
    Returns the last outcome (RQ keeps no result)."""
    settings, backoff = _worker_config()
    job = get_current_job()
    if job is None:
        raise RuntimeError("deliver runs as an RQ job: its id is its owner token")
    return Courier(job.connection, settings, backoff).run(payload, token=job.id, queue=job.origin)


class Courier:
    """The owner's work, with the clock and the random source as parameters (STYLE.md lesson 3)."""

    def __init__(
        self,
        conn: redis.Redis,
        settings: Settings,
        backoff: Backoff,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: UniformSource | None = None,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.backoff = backoff
        self.clock = clock
        self.rng: UniformSource = rng or random.SystemRandom()
        self.lease = lease_ms(settings)
        self._renew = scripts.load(conn, "cb_renew", uses=("lib_owner",))
        self._pass = scripts.load(conn, "cb_pass", uses=("lib_owner",))
        self._release = scripts.load(conn, "cb_release", uses=("lib_owner",))

    def run(self, p: CourierPayload, *, token: str, queue: str | None = None) -> str:
        lane = queue or main_queue(self.settings)
        try:
            return _Run(self, p["id"], token, lane, float(p.get("not_before") or 0)).go()
        except LostLease:
            log.warning("callbacks of %s: job %s lost the owner lease to another job; it stops", p["id"], token)
            return "lost"

    # -- the scripts (each checks that `token` holds the lease) -------------------------
    def renew(
        self,
        key: str,
        token: str,
        *,
        count: str = "",
        trying: str = "",
        done_member: str = "",
        fields: tuple[str, ...] = (),
        with_record: bool = False,
    ) -> tuple[int, StateRecord | None]:
        args: list[Any] = [token, self.lease, count, trying, done_member, "1" if with_record else "", *fields]
        with redis_errors():
            reply = self._renew(keys=[key, owed_key(self.settings)], args=args)
        if text(reply[0]) != "OK":
            raise LostLease(token)
        return int(reply[1]), StateRecord.from_reply(reply[2]) if with_record else None

    def hand_over(
        self,
        key: str,
        token: str,
        *,
        message_id: str,
        status: int,
        successor: str,
        lane: str,
        not_before: float,
        new_job: bool = True,
    ) -> str:
        """Name `successor` the owner, then enqueue it (on `lane`, at `not_before`)."""
        args: list[Any] = [
            token,
            successor,
            status,
            owed_member(message_id, status),
            int(not_before * 1000),
            self.lease,
            "1" if new_job else "",
        ]
        with redis_errors():
            reply = self._pass(keys=[key, owed_key(self.settings)], args=args)
        if text(reply[0]) != "OK":
            raise LostLease(token)
        job_id = text(reply[1])
        put(self.conn, self.settings, lane, job_id, {"id": message_id, "not_before": not_before})
        return job_id

    def release(self, key: str, token: str, *, marked: int) -> StateRecord | None:
        """Release the lease; None when released, the record when something new was marked."""
        with redis_errors():
            reply = self._release(keys=[key], args=[token, marked, self.lease])
        answer = text(reply[0])
        if answer == "LOST":
            raise LostLease(token)
        return None if answer == "RELEASED" else StateRecord.from_reply(reply[1])


class _Run:
    """One job's run: the record it holds, updated with what it writes itself."""

    def __init__(self, courier: Courier, message_id: str, token: str, lane: str, not_before: float) -> None:
        self.c = courier
        self.settings = courier.settings
        self.message_id = message_id
        self.token = token
        self.lane = lane
        self.not_before = not_before
        self.key = self.settings.state.record_key(message_id)
        self.started = self.c.clock.monotonic()
        self.attempts = 0  # made by this job
        self.last_took = 0.0
        self.outcome = "idle"

    def go(self) -> str:
        _, record = self.c.renew(self.key, self.token, with_record=True)
        assert record is not None
        while True:
            step = next_step(
                record,
                now=self.c.clock.time(),
                not_before=self.not_before,
                max_attempts=self.settings.callbacks.max_attempts,
            )
            if step.action == "release":
                fresh = self.c.release(self.key, self.token, marked=len(record.callbacks()))
                if fresh is None:
                    return self.outcome
                record = fresh
                continue
            assert step.status is not None
            status, url = step.status, record.webhook or ""
            wid = webhook_id(self.message_id, status)
            if step.action == "no_url":
                log.warning("callback %s owed to no webhook URL: failed", wid)
                record = self._finish(record, status, "failed")
            elif step.action == "skip_gone":
                log.info("callback %s not sent: %s answered 410 earlier", wid, url)
                record = self._finish(record, status, "gone")
            elif step.action == "expire":
                log.warning(
                    "callback %s expired: %d attempts started, none finished", wid, record.callback_attempts(status)
                )
                record = self._finish(record, status, "expired")
            elif step.action == "wait":  # RQ started it before its time: a job at that time goes on
                self._hand_over(status, self.token, self.lane, self.not_before, new_job=False)
                return "waiting"
            elif self.lane == main_queue(self.settings) and is_slow(self.c.conn, self.settings, url):
                moved = rq_job_id(self.message_id, status, record.callback_attempts(status) + 1, "slow")
                self._hand_over(status, moved, slow_queue(self.settings), 0.0)  # not an attempt
                return "moved"
            elif self.attempts and not self._may_go_on():
                # A fresh job for the next status: the worker looks at its queues in between.
                self._hand_over(
                    status,
                    attempt_job_id(self.message_id, status, record.callback_attempts(status) + 1),
                    self.lane,
                    0.0,
                )
                return self.outcome
            else:
                next_record = self._attempt(record, status, url)
                if next_record is None:
                    return self.outcome
                record = next_record

    def _may_go_on(self) -> bool:
        """Another attempt in this job: on the main lane, after a quick answer, within RQ's limit."""
        timeout = self.settings.callbacks.timeout
        elapsed = self.c.clock.monotonic() - self.started
        return (
            self.lane == main_queue(self.settings)
            and self.last_took < timeout / 2
            and elapsed + timeout + _MARGIN <= job_timeout(self.settings)
        )

    def _attempt(self, record: StateRecord, status: int, url: str) -> StateRecord | None:
        """One attempt; the record after it, or None when a retry took over the lease."""
        wid = webhook_id(self.message_id, status)
        # Counted before it is made: a worker killed mid-attempt does not get a fresh allowance.
        attempt, _ = self.c.renew(
            self.key, self.token, count=Field.attempts(status), trying=owed_member(self.message_id, status)
        )
        record = StateRecord({**record, Field.attempts(status): str(attempt)})
        self.attempts += 1
        started = self.c.clock.monotonic()
        started_ms = int(self.c.clock.time() * 1000)
        raised = False
        try:
            body = callback_body(self.message_id, status, _detail(record, status))  # same bytes every attempt
            headers = build_headers(wid, body, keys=self.settings.callbacks.signing_keys)
            outcome = send(
                url, body, headers, allow=self.settings.policy.webhook_allow, timeout=self.settings.callbacks.timeout
            )
        except Exception as e:  # a bug or an input nobody foresaw: this callback's problem only
            log.exception("callback %s attempt %d raised", wid, attempt)
            outcome = Outcome(OutcomeKind.RETRY, detail=f"unexpected {type(e).__name__}: {e}")
            raised = True
        self.last_took = self.c.clock.monotonic() - started
        self._note_speed(url, outcome, self.last_took)

        def note(kind: str, next_retry: float | None = None) -> CallbackAttempt:
            return CallbackAttempt(
                number=attempt,
                at_ms=started_ms,
                duration_ms=int(self.last_took * 1000),
                http_status=outcome.status,
                outcome=kind,
                detail=outcome.detail,
                next_retry_ms=None if next_retry is None else int(next_retry * 1000),
            )

        if outcome.kind is OutcomeKind.DELIVERED:
            log.info("callback %s delivered (HTTP %s, attempt %d)", wid, outcome.status, attempt)
            return self._finish(record, status, "delivered", note=note("delivered"))
        if outcome.kind is OutcomeKind.GONE:
            log.info("callback %s: %s answered 410, no more callbacks to it for this message", wid, url)
            return self._finish(record, status, "gone", gone_url=url, note=note("gone"))
        if outcome.kind is OutcomeKind.FAILED:
            log.warning("callback %s failed for good (attempt %d): %s", wid, attempt, outcome.detail)
            return self._finish(record, status, "failed", note=note("failed"))

        now = self.c.clock.time()
        delay = retry_delay(  # a re-delivery has its own allowance and horizon
            attempt=record.callback_tries(status),
            first_owed=record.callback_owed_since(status) or now,
            now=now,
            retry_after=outcome.retry_after,
            base=self.c.backoff.base,
            cap=self.c.backoff.cap,
            max_attempts=self.settings.callbacks.max_attempts,
            horizon=self.settings.callbacks.retry_horizon,
            rng=self.c.rng,
        )
        if delay is None:
            log.warning(
                "callback %s expired after %d attempts (%gs horizon); last: %s",
                wid,
                attempt,
                self.settings.callbacks.retry_horizon,
                outcome.detail,
            )
            return self._finish(record, status, "expired", note=note("expired"))
        log.info("callback %s attempt %d: %s; next in %.1fs", wid, attempt, outcome.detail, delay)
        self._note(record, status, note("retry", now + delay))
        _count(status, "error" if raised else "retry")
        successor = attempt_job_id(self.message_id, status, attempt + 1)
        self._hand_over(status, successor, queue_for(self.c.conn, self.settings, url), now + delay)
        self.outcome = "retry"
        return None

    def _note(self, record: StateRecord, status: int, note: CallbackAttempt) -> None:
        """Keep the attempt's note (cbl_<s>) while this job holds the lease: one writer."""
        value = attempt_log_with(record.callback_attempt_log(status), note)
        self.c.renew(self.key, self.token, fields=(Field.attempt_log(status), value))

    def _finish(
        self,
        record: StateRecord,
        status: int,
        outcome: str,
        *,
        gone_url: str | None = None,
        note: CallbackAttempt | None = None,
    ) -> StateRecord:
        fields = {Field.outcome(status): outcome}
        if gone_url is not None:
            fields[Field.GONE_URL] = gone_url
        if note is not None:
            fields[Field.attempt_log(status)] = attempt_log_with(record.callback_attempt_log(status), note)
        _count(status, outcome)  # first: whoever sees the outcome recorded finds it counted
        flat = tuple(x for kv in fields.items() for x in kv)
        self.c.renew(self.key, self.token, done_member=owed_member(self.message_id, status), fields=flat)
        self.outcome = outcome
        return StateRecord({**record, **fields})

    def _hand_over(self, status: int, successor: str, lane: str, not_before: float, *, new_job: bool = True) -> None:
        job_id = self.c.hand_over(
            self.key,
            self.token,
            message_id=self.message_id,
            status=status,
            successor=successor,
            lane=lane,
            not_before=not_before,
            new_job=new_job,
        )
        log.debug("callbacks of %s: job %s goes on as %s on %s", self.message_id, self.token, job_id, lane)

    def _note_speed(self, url: str, outcome: Outcome, took: float) -> None:
        if outcome.timed_out:
            mark_slow(self.c.conn, self.settings, url)
        elif outcome.status is not None and took < self.settings.callbacks.timeout / 2:
            clear_slow(self.c.conn, self.settings, url)


def _count(status: int, outcome: str) -> None:
    metrics.get().count_callback(status, outcome)


def _detail(record: StateRecord, status: int) -> dict[str, Any]:
    """The kept detail, strictly: one the record could not keep as a JSON object fails the attempt."""
    raw = record.get(Field.detail(status)) or "{}"
    try:
        detail = json.loads(raw)
    except ValueError as e:
        raise TypeError(f"detail of status {status} is not JSON: {raw[:80]!r}") from e
    if not isinstance(detail, dict):
        raise TypeError(f"detail of status {status} is not a JSON object: {raw[:80]!r}")
    return detail
