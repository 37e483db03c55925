"""A Job's life after creation, whoever runs it: each transition (0 created, 1 pod
started, 2 completed, 3 failed, 99 exception) is recorded in the state store, its
callback enqueued exactly once (the state store's first-caller-wins mark), and appended
to the events stream (in the mark's Lua step). Terminal transitions leave the active set in that same step: the
final event is never readable before the record has ended.

Each transition is two steps: mark (one script: the mark, the callback's detail, its place
in the owed index, its event, and the owner lease of the message's callbacks when nobody
holds it), then send (enqueue the courier the mark granted the lease to; when another
courier holds it, that one delivers the new status after the ones before it). A crash
between the two leaves the lease to lapse, and the leader's recovery takes it over
(runner.callbacks.enqueue). The dispatcher's record of a new Job carries the mark of 0
(`record_created`), and it sends it after its own crash point.

The Kubernetes watcher and the local executor both report here, so the states and
callbacks are the same whatever runs the Job.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from election.clock import SYSTEM_CLOCK, Clock
from runner.callbacks.chain import lease_ms, owed_key, owed_member, rq_job_id
from runner.lifecycle import CallbackStatus, State
from runner.logs import log_context
from runner.settings import Settings
from runner.signals import Cancelled, JobFinished, Signals
from runner.store.events import new_event
from runner.store.record import Field, StateRecord
from runner.store.state import CallbackMark, Marked, StateStore

log = logging.getLogger(__name__)

_TERMINAL_STATE = {
    CallbackStatus.COMPLETED: State.COMPLETED,
    CallbackStatus.FAILED: State.FAILED,
    CallbackStatus.EXCEPTION: State.EXCEPTION,
}


_LOCK_STRIPES = 64


class CallbackSink(Protocol):
    def start(self, message_id: str, courier: str, url: str) -> None: ...

    def enqueue(
        self,
        message_id: str,
        status: int,
        detail: dict[str, Any],
        url: str | None,
        *,
        record: StateRecord | None = None,
    ) -> bool: ...


@dataclass(frozen=True)
class Transition:
    """A marked callback, ready to send (Tracker.send)."""

    message_id: str
    status: CallbackStatus
    detail: dict[str, Any]
    url: str | None
    marked: Marked


class Tracker:
    def __init__(
        self,
        *,
        state: StateStore,
        callbacks: CallbackSink,
        settings: Settings,
        term: Callable[[], int | None] = lambda: None,
        on_finished: Callable[[], None] = lambda: None,
        signals: Signals,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.state = state
        self.callbacks = callbacks
        self.settings = settings
        self._term = term
        self._on_finished = on_finished
        self.signals = signals
        self.clock = clock
        self.owed_key = owed_key(settings)
        self.lease_ms = lease_ms(settings)
        # Transitions of one message must not interleave (pod and Job watchers race); those
        # of different messages may: one lock for all would serialise every create thread and
        # watch on each other's Redis round trips (measured: docs/benchmarks.md).
        self._mutexes = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    # -- what the executors report ----------------------------------------------------
    def _mutex(self, message_id: str) -> threading.Lock:
        return self._mutexes[zlib.crc32(message_id.encode()) % _LOCK_STRIPES]

    def record_created(
        self,
        message_id: str,
        *,
        job_name: str,
        namespace: str,
        job_uid: str,
        term: int,
        webhook: str | None,
        **fields: Any,
    ) -> Transition:
        """The Job exists: record it and mark callback 0, in one step (StateStore.record_job).
        Extra keyword fields go into the record. The caller sends the returned transition."""
        detail = {"jobId": job_uid, "jobName": job_name}
        with self._mutex(message_id):
            marked = self.state.record_job(
                message_id,
                job_name=job_name,
                namespace=namespace,
                job_uid=job_uid,
                term=term,
                callback=self._callback_mark(
                    message_id, CallbackStatus.CREATED, detail, webhook=webhook, job_name=job_name, keep_webhook=""
                ),
                webhook=webhook or "",
                **fields,
            )
        return Transition(message_id, CallbackStatus.CREATED, detail, webhook or None, marked)

    def send(self, transition: Transition) -> bool:
        """Enqueue the courier the mark granted the owner lease to, if any; True when this
        process marked the callback."""
        if not transition.marked.first:
            return False
        if transition.marked.courier and transition.url:
            self.callbacks.start(transition.message_id, transition.marked.courier, transition.url)
        return True

    def created(self, message_id: str, *, job_name: str, job_uid: str, webhook: str | None = None) -> None:
        """`webhook` is the message's own: the record read here can lack it (a failover lost
        the Job's record after it was written), and callback 0 marked without its URL would
        be owed to nobody and hold up every later status of the message."""
        with self._mutex(message_id):
            record, keep = _adopt_webhook(self.state.get(message_id) or StateRecord(), webhook)
            self._emit(
                message_id, CallbackStatus.CREATED, {"jobId": job_uid, "jobName": job_name}, record, keep_webhook=keep
            )

    def recorded_again(
        self, message_id: str, *, job_name: str, namespace: str, job_uid: str, webhook: str | None, service: str
    ) -> bool:
        """A Job of ours that the state store does not know: a failover lost its record and
        the entry was acked (or lost) too, so no replay will come. Record it from the Job, so
        it is followed to its end, and enqueue what the record still owes (a callback marked
        before the loss may have no RQ job or owed entry). False when a record of a Job, or
        an end, is there by now."""
        with self._mutex(message_id):
            record = self.state.get(message_id)
            if record is not None and (record.has_job or record.is_terminal):
                return False
            self.state.record_job(
                message_id,
                job_name=job_name,
                namespace=namespace,
                job_uid=job_uid,
                term=self._term(),
                webhook=webhook or (record.webhook if record else None) or "",
                service=service,
                executor="kubernetes",
            )
            self._ensure_created(message_id, self.state.get(message_id) or StateRecord())
            record = self.state.get(message_id) or StateRecord()
            for status in record.callbacks(owed=True):  # idempotent; in order, behind 0
                self.callbacks.enqueue(message_id, status, record.callback_detail(status), record.webhook)
        with log_context(message_id=message_id, job_name=job_name):
            log.warning("job %s had no record of it in the state store (a failover lost it): recorded again", job_name)
        return True

    def pod_started(self, message_id: str, *, pod_name: str, pod_uid: str) -> bool:
        """True when the message is running and its 1 is marked (by this call or before);
        False when there is no live record (not recorded yet, or ended)."""
        return self._advance(
            message_id, CallbackStatus.STARTED, {"podId": pod_uid, "podName": pod_name}, pod=(pod_name, pod_uid)
        )

    def completed(
        self, message_id: str, *, duration: float | None = None, pod_name: str = "", pod_uid: str = ""
    ) -> None:
        self._advance(message_id, CallbackStatus.COMPLETED, {}, pod=(pod_name, pod_uid), duration=duration)

    def failed(
        self,
        message_id: str,
        *,
        code: str,
        message: str,
        pod_name: str = "",
        pod_uid: str = "",
        duration: float | None = None,
    ) -> None:
        self._advance(
            message_id,
            CallbackStatus.FAILED,
            {"error": {"errorCode": code, "message": message}},
            pod=(pod_name, pod_uid),
            duration=duration,
        )

    def exception(self, message_id: str, *, code: str, message: str) -> None:
        self._advance(message_id, CallbackStatus.EXCEPTION, {"error": {"errorCode": code, "message": message}})

    def cancelled(self, message_id: str, *, stage: str, webhook: str | None = None) -> bool:
        """Cancelled at `stage` (scheduled | pending | running): the record ends `cancelled`
        and the producer gets one 99 `Cancelled`. True for the caller that sent it; False when
        it was sent already or the message ended first. `webhook` is the message's, for a
        record written before the message was read (it has none of its own)."""
        detail = {"error": {"errorCode": "Cancelled", "message": f"cancelled while {stage}"}}
        with self._mutex(message_id):
            record = self.state.get(message_id)
            if record is None:
                return False
            record, keep = _adopt_webhook(record, webhook)
            if record.state is not State.CANCELLED:
                if record.is_terminal or not record.has_job:
                    return False
                self._ensure_created(message_id, record, keep_webhook=keep)
                self.state.finish(message_id, State.CANCELLED, term=self._term(), cancel_stage=stage)
            if not self._emit(message_id, CallbackStatus.EXCEPTION, detail, record, keep_webhook=keep):
                return False
        self.signals.emit(Cancelled(stage))
        if record.has_job:
            self.signals.emit(
                JobFinished(outcome=State.CANCELLED, duration=None, service=record.service, namespace=record.namespace)
            )
        self._on_finished()
        with log_context(message_id=message_id):
            log.info("message %s cancelled while %s", message_id, stage)
        return True

    def refused(self, message_id: str, *, webhook: str | None, code: str, message: str) -> None:
        """The message's Job could never be created (the apiserver kept refusing it): 99 to
        the producer. No Job, so no record to follow; the claim is released by the caller."""
        with self._mutex(message_id):
            stored = self.state.get(message_id) or StateRecord()
            record = StateRecord({**stored, Field.WEBHOOK: webhook or ""})
            keep = webhook if webhook and not stored.webhook else ""
            self._emit(
                message_id,
                CallbackStatus.EXCEPTION,
                {"error": {"errorCode": code, "message": message}},
                record,
                keep_webhook=keep,
            )

    # -- internals ---------------------------------------------------------------------
    def _advance(
        self,
        message_id: str,
        status: CallbackStatus,
        detail: dict[str, Any],
        *,
        pod: tuple[str, str] = ("", ""),
        duration: float | None = None,
    ) -> bool:
        """Move a live Job to `status`, emitting first the earlier statuses it implies.
        False when the record is not live (not recorded yet, ended, vanished)."""
        with self._mutex(message_id):
            record = self._live(message_id)
            if record is None:
                return False
            self._ensure_created(message_id, record)
            if status == CallbackStatus.STARTED:
                marked = CallbackStatus.STARTED in record.callbacks()  # before: every later pod event of it
                if record.state is State.CREATED:  # the table's only way to running, with 1's mark
                    start = {"pod_name": pod[0], "pod_uid": pod[1], "started_at": int(self.clock.time() * 1000)}
                    if marked:  # marked by a leader that died before the move (older code)
                        self.state.set_state(message_id, State.RUNNING, term=self._term(), **start)
                    else:
                        self._emit(message_id, CallbackStatus.STARTED, detail, record, start=start)
                elif not marked:
                    self._emit(message_id, CallbackStatus.STARTED, detail, record)
                return True
            if status != CallbackStatus.EXCEPTION:  # a Job that completed or failed had a pod that started
                self._ensure_started(message_id, record, *pod)
                if duration is None:  # the watcher knows none for a failed Job; the local executor does
                    duration = max(0.0, self.clock.time() - record.created_at(default=self.clock.time()))
                if status == CallbackStatus.COMPLETED:
                    detail = {"duration": round(duration, 3)}
            self._finish(message_id, status, detail, record, duration)
            return True

    def _live(self, message_id: str) -> StateRecord | None:
        """The record while the Job is still ours to follow; None once it ended or vanished."""
        record = self.state.get(message_id)
        if record is None or record.is_terminal or not record.has_job:
            return None
        return record

    def _ensure_created(self, message_id: str, record: StateRecord, *, keep_webhook: str = "") -> None:
        """Every later transition implies 0: a leader that died between recording the Job
        and enqueueing callback 0 must not leave the producer without it."""
        if CallbackStatus.CREATED not in record.callbacks():
            self._emit(
                message_id,
                CallbackStatus.CREATED,
                {"jobId": record.job_uid, "jobName": record.job_name},
                record,
                keep_webhook=keep_webhook,
            )

    def _ensure_started(self, message_id: str, record: StateRecord, pod_name: str, pod_uid: str) -> None:
        """A pod that ran to its end has started, even if we never saw it Running."""
        if CallbackStatus.STARTED in record.callbacks():
            return
        self._emit(
            message_id,
            CallbackStatus.STARTED,
            {"podId": pod_uid or record.pod_uid, "podName": pod_name or record.pod_name},
            record,
        )

    def _finish(
        self,
        message_id: str,
        status: CallbackStatus,
        detail: dict[str, Any],
        record: StateRecord,
        duration: float | None,
    ) -> None:
        state = _TERMINAL_STATE[status]
        self._emit(message_id, status, detail, record, finish=state)
        self.signals.emit(
            JobFinished(outcome=state, duration=duration, service=record.service, namespace=record.namespace)
        )
        with log_context(message_id=message_id, job_name=record.job_name):
            log.info("job %s ended: %s %s", record.job_name, state, detail)
        self._on_finished()

    def _emit(
        self,
        message_id: str,
        status: CallbackStatus,
        detail: dict[str, Any],
        record: StateRecord,
        *,
        keep_webhook: str = "",
        finish: State | None = None,
        start: dict[str, Any] | None = None,
    ) -> bool:
        """Mark and send (the caller holds the message's mutex); True when this call marked it.
        `keep_webhook`: the message's URL, for a stored record that has none (_adopt_webhook).
        `finish`: the terminal state the record moves to with the mark, in the same step;
        `start`: the pod's fields of the move to running that goes with callback 1's mark."""
        callback = self._callback_mark(
            message_id, status, detail, webhook=record.webhook, job_name=record.job_name, keep_webhook=keep_webhook
        )
        if start is not None:
            marked = self.state.start_with_callback(message_id, callback, term=self._term(), **start)
        elif finish is None:
            marked = self.state.mark_callback(message_id, callback, term=self._term())
        else:
            marked = self.state.finish_with_callback(message_id, finish, callback, term=self._term())
        if not marked.first:
            return False
        if marked.courier and record.webhook:
            self.callbacks.start(message_id, marked.courier, record.webhook)
        return True

    def _callback_mark(
        self,
        message_id: str,
        status: CallbackStatus,
        detail: dict[str, Any],
        *,
        webhook: str | None,
        job_name: str,
        keep_webhook: str,
    ) -> CallbackMark:
        return CallbackMark(
            status=status,
            detail=json.dumps(detail),
            # Only a callback that will be sent is owed: without a webhook the index would
            # keep the member for ever.
            owed_key=self.owed_key if webhook else "",
            owed_member=owed_member(message_id, status),
            courier=rq_job_id(message_id, status) if webhook else "",
            lease_ms=self.lease_ms,
            webhook=keep_webhook,
            event=new_event(
                message_id=message_id,
                status=status,
                detail=detail,
                job_name=job_name or None,
                stream=self.settings.streams.events_stream,
                maxlen=self.settings.streams.events_maxlen,
                now=self.clock.time(),
            ),
        )


def _adopt_webhook(record: StateRecord, webhook: str | None) -> tuple[StateRecord, str]:
    """The record with the message's `webhook` when the stored one has none (a record written
    before the message was read: a cancel, a failover that lost the Job's record), and the URL
    its next mark must keep in Redis ('' when the record has its own: nothing to write)."""
    if webhook and not record.webhook:
        return StateRecord({**record, Field.WEBHOOK: webhook}), webhook
    return record, ""
