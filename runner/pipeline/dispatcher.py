"""One stream entry to one Job: validate, claim, create, record, callback 0, ack.

The order is what makes a crash at any point harmless (DESIGN, data flow 3-6): the
claim is set-if-absent, the Job name is deterministic and a 409 for our own message is
adopted, and the entry is acked last. The leader's term is checked before every side
effect; a lost term leaves the entry pending for the next leader.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from runner.errors import InvalidMessage, KsrError, KubeApiError, PolicyRefused
from runner.jobs.executors import Executor
from runner.jobs.kube import JobRef, Stopped
from runner.jobs.tracker import Tracker
from runner.logs import log_context
from runner.pipeline.delay import DelayGate
from runner.pipeline.message import Message, parse_entry
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from runner.signals import Dispatched, MessageHandled, Signals
from runner.store.deadletter import dead_letter, is_poison
from runner.store.state import ClaimStatus, StaleTerm, StateStore
from runner.store.streams import Entry, StreamReader

log = logging.getLogger(__name__)

# An apiserver answer that retrying the same message cannot change: dead-letter it. A 403
# is not among them: a ResourceQuota refusal passes, and the delivery counter decides.
_FINAL_STATUSES = {400, 404, 409, 422}
CREATE_DEADLINE = 30.0  # seconds one create may keep retrying before the entry waits for a rescan


class Dispatcher:
    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        reader: StreamReader,
        state: StateStore,
        executor: Executor,
        tracker: Tracker,
        settings: Settings,
        holds_term: Callable[[int], bool],
        signals: Signals,
        delays: DelayGate | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`delays` holds messages carrying runAt / delaySeconds until they are due."""
        self.redis = redis_client
        self.delays = delays
        self.reader = reader
        self.state = state
        self.executor = executor
        self.tracker = tracker
        self.settings = settings
        self._holds_term = holds_term
        self.signals = signals
        self._now = wall_clock
        self._pool = ThreadPoolExecutor(max_workers=settings.kube.worker_pool_size, thread_name_prefix="create")
        self._stop = threading.Event()  # set by the caller's stop: in-flight retries give up

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- batches -----------------------------------------------------------------------
    def process_batch(self, entries: list[Entry], term: int, *, stop: threading.Event | None = None) -> dict[str, int]:
        """Process `entries` in parallel (QUEUE_WORKER_POOL_SIZE); entries carrying the same
        message id go one after the other, so the second one sees the first one's record.
        Returns the outcome counts; returns only when every entry is done (in-flight creates
        finish before a shutdown or a step-down goes on)."""
        self._stop = stop or threading.Event()
        groups: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            groups[_message_key(entry)].append(entry)
        futures = [self._pool.submit(self._process_group, group, term) for group in groups.values()]
        outcomes: dict[str, int] = defaultdict(int)
        for f in futures:
            for outcome in f.result():
                outcomes[outcome] += 1
        return dict(outcomes)

    def _process_group(self, group: list[Entry], term: int) -> list[str]:
        return [self.process(entry, term) for entry in group]

    # -- one entry ---------------------------------------------------------------------
    def process(self, entry: Entry, term: int) -> str:
        with log_context(entry_id=entry.entry_id, stream=entry.stream):
            try:
                outcome = self._process(entry, term)
            except (Stopped, StaleTerm) as e:
                log.info("entry %s left pending: %s", entry.entry_id, e)
                outcome = "retried"
            except KsrError as e:  # Redis or the apiserver away: the entry stays pending
                log.warning("entry %s left pending: %s", entry.entry_id, e)
                outcome = "retried"
            self.signals.emit(MessageHandled(outcome))
            return outcome

    def _process(self, entry: Entry, term: int) -> str:
        self._fence(term)  # even a dead letter is a side effect: a deposed leader must not write it
        if is_poison(entry.deliveries, self.settings.streams.max_deliveries):
            return self._dead(
                entry,
                "poison",
                f"delivered {entry.deliveries} times without being done "
                f"(KSR_MAX_DELIVERIES={self.settings.streams.max_deliveries})",
            )
        try:
            message = parse_entry(entry.fields, max_bytes=self.settings.streams.max_message_bytes)
            check_policy(message, self.settings)
            held = self.delays is not None and self.delays.hold(entry, message, term)
        except PolicyRefused as e:
            return self._dead(entry, "policy", str(e))
        except InvalidMessage as e:
            return self._dead(entry, "invalid", str(e))
        if held:
            self.reader.ack(entry)
            return "scheduled"
        with log_context(message_id=message.id):
            return self._dispatch(entry, message, term)

    def _dispatch(self, entry: Entry, message: Message, term: int) -> str:
        claim = self.state.claim(message.id, stream=entry.stream, entry_id=entry.entry_id, term=term)
        if claim.status is ClaimStatus.DUPLICATE and claim.record.get("state") == "cancelled":
            # Cancelled before it was read (runner.pipeline.cancels): no Job, and the 99 is
            # sent now that the webhook is known.
            stage = claim.record.get("cancel_stage") or "pending"
            self.tracker.cancelled(message.id, stage=stage, webhook=message.webhook_url)
            self.reader.ack(entry)
            return "cancelled"
        if claim.status is ClaimStatus.DUPLICATE:
            record = claim.record
            if record.has_job and not record.is_terminal:
                # Recorded, then a failure before callback 0 (or the local launch): finish the
                # step now; both are no-ops when they had happened.
                self.tracker.created(message.id, job_name=record.job_name, job_uid=record.job_uid)
                self.executor.launched(
                    JobRef(name=record.job_name, namespace=record.namespace, uid=record.job_uid, adopted=True)
                )
            log.info("message %s is a duplicate (job %s): acked", message.id, record.job_name or "-")
            self.reader.ack(entry)
            return "duplicate"
        self._crash_point("after_claim")

        self._fence(term)
        deadline = time.monotonic() + CREATE_DEADLINE
        try:
            ref = self.executor.create(
                message,
                stream=entry.stream,
                entry_id=entry.entry_id,
                keep_going=lambda: self._holds_term(term) and not self._stop.is_set() and time.monotonic() < deadline,
            )
        except KubeApiError as e:
            if e.status not in _FINAL_STATUSES:
                raise
            self.state.release(message.id, term=term)  # no Job: a corrected replay starts afresh
            return self._dead(entry, "api_rejected", f"kubernetes answered {e.status} {e.reason}: {e.message}")
        self._crash_point("after_create")

        with log_context(job_name=ref.name):
            self._fence(term)
            now = self._now()
            self.state.record_job(
                message.id,
                job_name=ref.name,
                namespace=ref.namespace,
                job_uid=ref.uid,
                term=term,
                webhook=message.webhook_url or "",
                service=message.service,
                executor=self.executor.name,
            )
            self._crash_point("after_record")
            self.tracker.created(message.id, job_name=ref.name, job_uid=ref.uid)
            self.executor.launched(ref)
            self._crash_point("after_callback")
            self._crash_point("before_ack")
            self.reader.ack(entry)
            self.signals.emit(Dispatched(latency=now - _entry_time(entry.entry_id)))
            log.info(
                "job %s/%s %s for message %s",
                ref.namespace,
                ref.name,
                "recorded as gone (it existed; the reconcile reports 99)"
                if ref.gone
                else "adopted"
                if ref.adopted
                else "created",
                message.id,
            )
            return "dispatched"

    # -- helpers -----------------------------------------------------------------------
    def _dead(self, entry: Entry, reason: str, error: str) -> str:
        dead_letter(
            self.redis,
            entry,
            group=self.settings.streams.group,
            reason=reason,
            error=error,
            deliveries=entry.deliveries,
        )
        log.warning("entry %s dead-lettered (%s): %s", entry.entry_id, reason, error)
        return "invalid" if reason in ("invalid", "policy") else "dead_lettered"

    def _fence(self, term: int) -> None:
        if not self._holds_term(term):
            raise Stopped(f"no longer leading in term {term}")
        self.state.fence(term)

    def _crash_point(self, step: str) -> None:
        """Tests only (KSR_TEST_CRASH_AT): die hard at `step`, once per Redis database."""
        if self.settings.test_crash_at != step:
            return
        if self.redis.set(f"ksr:test:crashed:{step}", os.getpid(), nx=True):
            log.error("KSR_TEST_CRASH_AT=%s: exiting hard", step)
            os._exit(70)


def _message_key(entry: Entry) -> str:
    """The message id if the payload has one (cheaply), else the entry id."""
    try:
        payload: Any = json.loads(entry.fields.get(b"payload") or b"")
        if isinstance(payload, dict) and isinstance(payload.get("id"), str):
            return payload["id"]
    except ValueError:
        pass
    return f"entry:{entry.stream}:{entry.entry_id}"


def _entry_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0
