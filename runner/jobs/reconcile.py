"""The periodic resync of the active set against our Jobs and Pods (every POLLING_INTERVAL,
and once at a takeover).

It feeds the followed objects through the transitions again and is what notices Jobs
deleted from outside, pods that never started within POD_START_TIMEOUT, and Jobs whose
record a failover lost (recorded again). It reads what the watches have seen (the
informer's view) while every watch is current, and lists from the apiserver otherwise (at a
takeover, after a watch failed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from election.clock import SYSTEM_CLOCK, Clock
from runner.errors import KsrError
from runner.jobs.kube import KubeApi, Stopped
from runner.jobs.manifest import ENTRY_ID_ANNOTATION, STREAM_ANNOTATION, holds_finalizer, message_id_of
from runner.jobs.tracker import Tracker
from runner.jobs.transitions import Transitions
from runner.jobs.view import WatchedView
from runner.lifecycle import State
from runner.message import parse_entry
from runner.settings import Settings
from runner.store.errors import redis_errors
from runner.store.record import StateRecord
from runner.store.state import StateStore

log = logging.getLogger(__name__)

DELETED_GRACE = 5.0  # a Job younger than this may simply not be listed yet
# A Job holding our finalizer with no record of it this long is one a failover lost: far
# longer than a create takes from the apiserver's answer (its retries included) to its record.
UNRECORDED_GRACE = 30.0


class Reconciler:
    def __init__(
        self,
        *,
        api: KubeApi,
        tracker: Tracker,
        state: StateStore,
        settings: Settings,
        transitions: Transitions,
        namespaces: list[str | None],
        view: Callable[[], WatchedView],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`view()` is the watches' view of the moment (the informer's)."""
        self.api = api
        self.tracker = tracker
        self.state = state
        self.settings = settings
        self.transitions = transitions
        self.namespaces = namespaces
        self.view = view
        self.clock = clock
        self._unrecorded: dict[str, float] = {}  # message id -> when its Job was first listed without a record

    def start(self, stop: threading.Event, keep_going: Callable[[], bool]) -> threading.Thread:
        """The periodic resync, in a started thread of its own: listing and handling thousands
        of Jobs takes seconds, which the read -> dispatch loop must not wait for."""
        t = threading.Thread(target=self._loop, args=(stop, keep_going), daemon=True, name="reconcile")
        t.start()
        return t

    def _loop(self, stop: threading.Event, keep_going: Callable[[], bool]) -> None:
        interval = self.settings.kube.polling_interval
        while not self.clock.wait(stop, interval):
            deadline = self.clock.monotonic() + max(10.0, 2 * interval)  # an apiserver outage: give up, next round
            try:
                self.reconcile(lambda: keep_going() and self.clock.monotonic() < deadline)
            except Stopped:
                if not keep_going():
                    return
            except (KsrError, OSError, ValueError) as e:
                log.warning("reconcile failed (%s); again in %gs", e, interval)
            except Exception:  # a bug must not silently end the relist
                log.exception("reconcile crashed; again in %gs", interval)

    def reconcile(self, keep_going: Callable[[], bool] | None = None) -> None:
        """Feed every followed Job and Pod of ours through the transitions, then settle the
        active records nothing answered for: deleted Jobs and pods that never started. From
        the watches' view while it is current; else listed from the apiserver."""
        keep_going = keep_going or self.transitions.keep_going
        listed_at = self.clock.time()
        # Read before listing: a Job created after this read is the watch's (or the next
        # relist's). Only Jobs still followed, or still holding our finalizer, need the
        # handlers: each costs Redis round trips, and finished Jobs stay listed until their TTL.
        active = self.state.active_ids()
        self.transitions.prune_notes(active)
        view = self.view()
        if view.current:
            pods, _ = view.objects("pods")
            jobs, settled = view.objects("jobs")
            seen = set(settled)  # and, below, every followed Job's
            # An ended, released Job whose message is active again: a replay adopted it after
            # its record was lost. No event will come for it, so it is read here, for its end.
            for mid in active & settled.keys():
                job = self.api.get_job(*settled[mid], keep_going=keep_going)
                if job is not None:
                    jobs.append(job)
            self._resync([pods], [jobs], active, keep_going, seen)
        else:
            seen = set()
            # Page by page: finished Jobs and their pods stay listed until their TTL, so a
            # whole list grows with the messages of the last TTL, not with the active set.
            for ns in self.namespaces:
                self._resync(
                    (pods for pods, _ in self.api.pod_pages(ns, keep_going=keep_going)),
                    (jobs for jobs, _ in self.api.job_pages(ns, keep_going=keep_going)),
                    active,
                    keep_going,
                    seen,
                )
        for mid in set(self._unrecorded) - seen:
            del self._unrecorded[mid]
        # A Job seen whose pod has started needs nothing settled: neither deleted nor late
        # to start. Only the others' records are read (a record a tick per active message
        # was a tenth of the leader's CPU with thousands active).
        still = self.state.active_ids()  # read again: those that ended meanwhile are settled
        unsettled = {mid for mid in still if mid not in seen or not self.transitions.started(mid)}
        for mid, record in self.state.records(unsettled).items():
            if not record.has_job or record.executor != "kubernetes":
                continue
            try:
                self._settle(mid, record, seen, listed_at, keep_going)
            except KsrError as e:  # one record must not hold up the others
                log.warning("reconcile of message %s failed: %s", mid, e)

    def _resync(
        self,
        pod_pages: Iterable[list[dict[str, Any]]],
        job_pages: Iterable[list[dict[str, Any]]],
        active: set[str],
        keep_going: Callable[[], bool],
        seen: set[str],
    ) -> None:
        """The transitions for the pods and Jobs of active messages, and for Jobs holding our
        finalizer; every Job's message id is added to `seen`."""
        for pods in pod_pages:
            for pod in pods:
                if message_id_of(pod) in active:
                    self.transitions.handle_pod(pod)
        for jobs in job_pages:
            for job in jobs:
                mid = message_id_of(job)
                if mid:
                    seen.add(mid)
                held = holds_finalizer(job)
                if held and mid and mid not in active:
                    self._record_if_lost(mid, job)
                if mid in active or held:
                    self.transitions.handle_job(job, keep_going=keep_going)

    def _record_if_lost(self, mid: str, job: dict[str, Any]) -> None:
        """A Job holding our finalizer whose message is not active: ended and not yet
        released, or one whose record a failover lost after the entry was acked (nothing
        replays it then). The second kind, once it has been so for UNRECORDED_GRACE, is
        recorded again from the Job; its webhook comes from the record or the stream entry."""
        record = self.state.get(mid)
        if record is not None and (record.has_job or record.is_terminal):
            self._unrecorded.pop(mid, None)
            return
        first = self._unrecorded.setdefault(mid, self.clock.time())
        if self.clock.time() - first < UNRECORDED_GRACE:
            return
        meta = job["metadata"]
        webhook = (record.webhook if record is not None else None) or self._entry_webhook(meta)
        self.tracker.recorded_again(
            mid,
            job_name=meta["name"],
            namespace=meta["namespace"],
            job_uid=meta.get("uid", ""),
            webhook=webhook,
            service=(meta.get("labels") or {}).get("app", ""),
        )
        self._unrecorded.pop(mid, None)
        self.transitions.start_due_again(mid)

    def _entry_webhook(self, meta: dict[str, Any]) -> str | None:
        """The webhook of the stream entry the Job was made from (its annotations name it),
        while the stream still holds it."""
        annotations = meta.get("annotations") or {}
        stream, entry_id = annotations.get(STREAM_ANNOTATION), annotations.get(ENTRY_ID_ANNOTATION)
        if not stream or not entry_id:
            return None
        with redis_errors():
            rows: Any = self.state.redis.xrange(stream, entry_id, entry_id, count=1)
        if not rows:
            return None
        try:
            return parse_entry(rows[0][1], max_bytes=self.settings.streams.max_message_bytes).webhook_url
        except KsrError:
            return None

    def _settle(
        self, mid: str, record: StateRecord, seen: set[str], listed_at: float, keep_going: Callable[[], bool]
    ) -> None:
        created = record.created_at(default=listed_at)
        if mid not in seen and created < listed_at - DELETED_GRACE and not self._exists(record, keep_going):
            self.tracker.exception(mid, code="JobDeleted", message="the Job no longer exists")
        elif record.state is State.CREATED and listed_at - created > self.settings.kube.pod_start_timeout:
            why = self.transitions.pod_notes.get(mid, "no pod was scheduled")
            self.transitions.abort(
                mid,
                "PodStartTimeout",
                f"pod not started within {self.settings.kube.pod_start_timeout:g}s ({why})",
                keep_going,
            )

    def _exists(self, record: StateRecord, keep_going: Callable[[], bool]) -> bool:
        """Asked of the apiserver before a Job missing from a list or the view is settled as
        deleted: a watch that lags behind a loaded apiserver has not seen it yet."""
        assert record.job_name and record.namespace
        return self.api.get_job(record.namespace, record.job_name, keep_going=keep_going) is not None
