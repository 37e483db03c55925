"""Enqueueing callbacks: the runner's side of the RQ queue, at most one live chain per webhook-id.

The runner calls `CallbackQueue.enqueue` after `StateStore.mark_callback_sent`; the leader's
`sweep` re-enqueues a callback whose chain died with its worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

import redis
from rq import Queue
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from runner.callbacks.courier import (
    CallbackPayload,
    deliver,
    job_options,
    job_timeout,
    owed_key,
    owed_member,
    read_record,
    rq_job_id,
)
from runner.settings import Settings
from runner.store import scripts
from runner.store.record import Field
from runner.store.replies import text
from runner.store.streams import redis_errors

log = logging.getLogger(__name__)

_LIVE = frozenset({JobStatus.CREATED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED})


class CallbackQueue:
    """The runner's side: put a callback on the RQ queue, at most one live chain per webhook-id."""

    def __init__(
        self, redis_client: redis.Redis, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis_client
        self.settings = settings
        self.clock = clock
        self.queue = Queue(settings.callbacks.queue, connection=redis_client)
        self._hset_if_exists = scripts.load(redis_client, "hset_if_exists")

    def enqueue(self, message_id: str, status: int, detail: dict[str, Any], url: str | None) -> bool:
        """Enqueue the callback `<message_id>:<status>`; True if a job was enqueued.

        False when there is no URL (the events stream still has the status), when the
        callback already finished, or when a job of its chain is still queued, scheduled or
        running. So re-enqueueing after a crash, or from takeover recovery, is harmless.
        """
        if not url:
            log.debug("callback %s:%s: message has no webhook URL, nothing to send", message_id, status)
            return False
        status = int(status)
        key = self.settings.state.record_key(message_id)
        record = read_record(self.redis, key)
        if record.callback_outcome(status) is not None:
            log.debug("callback %s:%s already finished (%s)", message_id, status, record.callback_outcome(status))
            return False
        first_id = rq_job_id(message_id, status)
        for job_id in dict.fromkeys([record.callback_chain(status) or first_id, first_id]):
            if _live(self.redis, job_id, stale_after=job_timeout(self.settings) + 10):
                log.debug("callback %s:%s: job %s is still live", message_id, status, job_id)
                return False
        payload: CallbackPayload = {
            "id": message_id,
            "status": status,
            "detail": dict(detail),
            "url": url,
            "first": float(self.clock()),
            "attempt": 1,
            "waits": 0,
        }
        with redis_errors():
            _delete_job(self.redis, first_id)  # a finished or failed chain start: make room for the new one
            try:
                self.queue.enqueue_call(
                    deliver,
                    args=(payload,),
                    job_id=first_id,
                    unique=True,
                    timeout=job_timeout(self.settings),
                    **job_options(self.settings),
                )
            except DuplicateJobError:
                log.debug("callback %s:%s enqueued concurrently by someone else", message_id, status)
                return False
            self._hset_if_exists(keys=[key], args=[Field.chain(status), first_id])
            self.redis.zadd(owed_key(self.settings), {owed_member(message_id, status): self.clock()})
        log.info("callback %s:%s enqueued", message_id, status)
        return True

    def sweep(self, *, older_than: float | None = None, limit: int = 500) -> int:
        """Re-enqueue owed callbacks (marked sent, not finished) that have no live RQ job:
        one whose chain died with its worker (a pod killed mid-delivery), or that a crash
        between mark and enqueue never queued. Only those owed for `older_than` seconds
        (default: one job timeout + 10 s; takeover passes 0). Returns how many."""
        key = owed_key(self.settings)
        stale = self.clock() - (job_timeout(self.settings) + 10 if older_than is None else older_than)
        count = 0
        with redis_errors():
            members = self.redis.zrangebyscore(key, "-inf", stale, start=0, num=limit)
        for raw in members:
            member = text(raw)
            status_text, _, message_id = member.partition(":")
            status = int(status_text)
            record = read_record(self.redis, self.settings.state.record_key(message_id))
            if not record or record.callback_outcome(status) is not None:
                self.redis.zrem(key, member)
                continue
            if self.enqueue(message_id, status, record.callback_detail(status), record.webhook):
                log.warning("callback %s re-enqueued: its previous delivery never finished", member)
                count += 1
            else:
                self.redis.zadd(key, {member: self.clock()})  # still live: look again later
        return count


def _live(conn: redis.Redis, job_id: str, *, stale_after: float) -> bool:
    """Queued, scheduled or deferred jobs are live; a started one only while it is younger
    than its timeout (a worker killed mid-job leaves it "started" for good)."""
    with redis_errors():
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            return False
        status = job.get_status(refresh=False)
        if status == JobStatus.STARTED and job.started_at is not None:
            started = job.started_at.replace(tzinfo=job.started_at.tzinfo or UTC).timestamp()
            return time.time() - started < stale_after
        return status in _LIVE


def _delete_job(conn: redis.Redis, job_id: str) -> None:
    try:
        Job.fetch(job_id, connection=conn).delete()
    except NoSuchJobError:
        pass
