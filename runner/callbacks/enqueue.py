"""Enqueueing callbacks: at most one live RQ job per message, in status order.

The runner calls `CallbackQueue.enqueue` after `StateStore.mark_callback`; the courier
calls it for the next status when one finishes (the chain); the leader's `sweep`
re-enqueues a callback whose chain died with its worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import redis
from redis.exceptions import NoScriptError
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry
from rq.worker import Worker

from runner.callbacks.chain import (
    CallbackPayload,
    attempt_job_id,
    job_options,
    job_timeout,
    owed_key,
    owed_member,
    pending_before,
    read_record,
)
from runner.callbacks.lanes import queue_for
from runner.settings import Settings
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.record import Field, StateRecord
from runner.store.replies import text

log = logging.getLogger(__name__)

DELIVER = "runner.callbacks.courier.deliver"  # by name: the courier imports this module
# What _enqueue did: queued a job, found the callback waiting its turn, found a live job of
# its chain, or nothing to do (no URL, finished).
QUEUED, WAITING, LIVE, NOTHING = "queued", "waiting", "live", "nothing"
_LIVE = frozenset({JobStatus.CREATED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED})


class CallbackQueue:
    """Put a callback on an RQ queue, at most one live chain per message."""

    def __init__(
        self, redis_client: redis.Redis, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.clock = clock
        self._hset_if_exists = scripts.load(redis_client, "hset_if_exists")

    def enqueue(
        self,
        message_id: str,
        status: int,
        detail: dict[str, Any],
        url: str | None,
        *,
        record: StateRecord | None = None,
    ) -> bool:
        """Enqueue the callback `<message_id>:<status>`; True if this call enqueued it, or if
        it waits its turn behind an earlier status of the message that is still owed (the
        courier enqueues it when that one finishes).

        False when there is no URL (the events stream still has the status), when the
        callback already finished, or when a job of its chain is still queued, scheduled or
        running. So re-enqueueing after a crash, or from takeover recovery, is harmless,
        and a message holds at most one live RQ job.

        `record` is the message's state record when the caller has just read it (the mark's
        reply: StateStore.mark_callback); without it, it is read here.
        """
        return self._enqueue(message_id, status, detail, url, record=record) in (QUEUED, WAITING)

    def _enqueue(
        self,
        message_id: str,
        status: int,
        detail: dict[str, Any],
        url: str | None,
        *,
        record: StateRecord | None = None,
    ) -> str:
        if not url:
            log.debug("callback %s:%s: message has no webhook URL, nothing to send", message_id, status)
            return NOTHING
        status = int(status)
        key = self.settings.state.record_key(message_id)
        if record is None:
            record = read_record(self.redis, key)
        if record.callback_outcome(status) is not None:
            log.debug("callback %s:%s already finished (%s)", message_id, status, record.callback_outcome(status))
            return NOTHING
        earlier = pending_before(record, status)
        if earlier:
            log.debug("callback %s:%s waits for %s: enqueued when they finish", message_id, status, earlier)
            return WAITING
        attempt = record.callback_attempts(status) + 1  # attempts survive a killed worker and the sweep
        job_id = attempt_job_id(message_id, status, attempt)
        chain = record.callback_chain(status)
        payload: CallbackPayload = {
            "id": message_id,
            "status": status,
            "detail": dict(detail),
            "url": url,
            "first": record.callback_first_owed(status) or float(self.clock()),
            "attempt": attempt,
        }
        with redis_errors():
            queue = Queue(queue_for(self.redis, self.settings, url), connection=self.redis)
            # Usually no job of this chain exists yet (a callback just marked): enqueue at once,
            # RQ's `unique` refusing an id that exists. Otherwise look first: a live job of the
            # chain stays the only one; a dead one of this attempt makes room for the new one.
            if not (chain in (None, job_id) and self._put(queue, job_id, payload, message_id, status)):
                for candidate in dict.fromkeys([chain or job_id, job_id]):
                    if _live(self.redis, candidate, stale_after=stale_after(self.settings)):
                        log.debug("callback %s:%s: job %s is still live", message_id, status, candidate)
                        return LIVE
                _delete_job(self.redis, job_id)
                if not self._put(queue, job_id, payload, message_id, status):
                    log.debug("callback %s:%s enqueued concurrently by someone else", message_id, status)
                    return LIVE
        log.info("callback %s:%s enqueued (attempt %d)", message_id, status, attempt)
        return QUEUED

    def _put(self, queue: Queue, job_id: str, payload: CallbackPayload, message_id: str, status: int) -> bool:
        """Enqueue job `job_id` unless a job of that id exists (False), and with it note the
        job as its chain's latest (`cbj_<s>`) and refresh the callback's owed score."""
        key = self.settings.state.record_key(message_id)
        pipe = self.redis.pipeline(transaction=False)
        try:
            queue.enqueue_call(
                DELIVER,
                args=(payload,),
                job_id=job_id,
                unique=True,  # its own atomic script, run at once; RQ's bookkeeping goes into `pipe`
                timeout=job_timeout(self.settings),
                pipeline=pipe,
                **job_options(self.settings),
            )
        except DuplicateJobError:
            return False
        chain_args = [Field.chain(status), job_id]
        at = len(pipe)
        # EVALSHA without redis-py's script registration: that would cost a SCRIPT EXISTS first.
        pipe.evalsha(self._hset_if_exists.sha, 1, key, *chain_args)
        pipe.zadd(owed_key(self.settings), {owed_member(message_id, status): self.clock()})
        replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[at], NoScriptError):  # a Redis that lost its script cache
            self._hset_if_exists(keys=[key], args=chain_args)
            replies[at] = 1
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return True

    def sweep(self, *, older_than: float | None = None, limit: int = 500) -> int:
        """Re-enqueue owed callbacks (marked sent, not finished) that have no live RQ job:
        one whose chain died with its worker (a pod killed mid-delivery), or that a crash
        between mark and enqueue never queued. Only those owed for `older_than` seconds
        (default: `stale_after`; takeover passes 0). Returns how many."""
        key = owed_key(self.settings)
        stale = self.clock() - (stale_after(self.settings) if older_than is None else older_than)
        count = 0
        with redis_errors():
            members = self.redis.zrangebyscore(key, "-inf", stale, start=0, num=limit)
        for raw in members:
            member = text(raw)
            status_text, _, message_id = member.partition(":")
            status = int(status_text)
            record = read_record(self.redis, self.settings.state.record_key(message_id))
            url = record.webhook
            if not record or not url or record.callback_outcome(status) is not None:
                self.redis.zrem(key, member)  # nothing (more) to send
                continue
            if self._enqueue(message_id, status, record.callback_detail(status), url, record=record) == QUEUED:
                log.warning("callback %s re-enqueued: its previous delivery never finished", member)
                count += 1
            else:
                # Live, or waiting its turn: due again at the next sweep, behind the older ones
                # (a score of now would let a chain that dies meanwhile wait a whole stale period).
                self.redis.zadd(key, {member: stale})
        return count


def stale_after(settings: Settings) -> float:
    """Seconds after which a "started" job is a dead worker's: RQ itself would have stopped
    it at its job timeout."""
    return job_timeout(settings) + 2


def _live(conn: redis.Redis, job_id: str, *, stale_after: float) -> bool:
    """Queued, scheduled or deferred jobs are live while their queue or registry still holds
    them; a started one while its worker is registered and it is younger than its timeout.

    A Redis failover can keep a job's hash and lose its queue entry (replication is
    asynchronous): such a job would never run. A worker that dies between taking a job
    (into RQ's intermediate list) and marking it started leaves it "queued" there until
    RQ's own cleanup fails it a minute or two later; a worker killed mid-job leaves it
    "started" for good. Those are dead now. The price is a rare second attempt when a live
    worker is within the moment between the two steps: the webhook-id makes it harmless."""
    with redis_errors():
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED and job.started_at is not None:
            started = job.started_at.replace(tzinfo=job.started_at.tzinfo or UTC).timestamp()
            worker = job.worker_name
            worker_alive = bool(worker) and bool(conn.exists(f"{Worker.redis_worker_namespace_prefix}{worker}"))
            return worker_alive and time.time() - started < stale_after
        if status == JobStatus.QUEUED:
            return conn.lpos(Queue(job.origin, connection=conn).key, job_id) is not None
        if status == JobStatus.SCHEDULED:
            return job_id in ScheduledJobRegistry(job.origin, connection=conn)
        if status == JobStatus.DEFERRED:
            return job_id in DeferredJobRegistry(job.origin, connection=conn)
        return status in _LIVE


def _delete_job(conn: redis.Redis, job_id: str) -> None:
    try:
        Job.fetch(job_id, connection=conn).delete()
    except NoSuchJobError:
        pass
