"""Follows the Jobs we created, and their Pods, by label, and reports their transitions to
the tracker.

Watches (raw JSON, from a resourceVersion) give the latency; each relists when it starts
and after a 410 Gone or a failure. A periodic resync (every POLLING_INTERVAL) feeds the
followed objects through the handlers again and is what notices Jobs deleted from outside,
pods that never started within POD_START_TIMEOUT, and Jobs whose record a failover lost
(recorded again). It reads what the watches have seen (runner.jobs.view) while every watch
is current, and lists from the apiserver otherwise (at a takeover, after a watch failed).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from runner import backoff
from runner.errors import KsrError, KubeApiError
from runner.jobs.kube import KubeApi, Stopped, WatchStream
from runner.jobs.manifest import (
    ENTRY_ID_ANNOTATION,
    FINALIZER,
    STREAM_ANNOTATION,
    holds_finalizer,
    message_id_of,
)
from runner.jobs.tracker import Tracker
from runner.jobs.view import Kept, Part, WatchedView
from runner.lifecycle import State
from runner.message import parse_entry
from runner.settings import Settings
from runner.store.errors import redis_errors
from runner.store.record import StateRecord
from runner.store.state import StateStore

log = logging.getLogger(__name__)

# A container that cannot start no matter how long we wait.
FATAL_WAITING = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)
WATCH_SECONDS = 240
DELETED_GRACE = 5.0  # a Job younger than this may simply not be listed yet
STOP_TIMEOUT = 2.0  # seconds for all watch threads together to end after stop()
# A Job holding our finalizer with no record of it this long is one a failover lost: far
# longer than a create takes from the apiserver's answer (its retries included) to its record.
UNRECORDED_GRACE = 30.0


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KubeWatcher:
    def __init__(
        self,
        *,
        api: KubeApi,
        tracker: Tracker,
        state: StateStore,
        settings: Settings,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.tracker = tracker
        self.state = state
        self.settings = settings
        self._now = wall_clock
        allowed = settings.policy.allowed_namespaces
        self.namespaces: list[str | None] = [None] if "*" in allowed else list(allowed)
        self._stop = threading.Event()
        self._keep_going: Callable[[], bool] = lambda: False  # until started
        self._threads: list[threading.Thread] = []
        self._streams: set[WatchStream] = set()  # open watches, cut short by stop()
        self._streams_mutex = threading.Lock()
        self._pod_notes: dict[str, str] = {}  # message id -> why its pod is not running (for 99s)
        self._pod_failures: dict[str, str] = {}  # message id -> how its container ended
        self._running: set[str] = set()  # message ids whose start the tracker has: later pod events skip it
        self._inactive_notes: set[str] = set()  # noted, and not active at the last relist
        self._unrecorded: dict[str, float] = {}  # message id -> when its Job was first listed without a record
        self._view = WatchedView(())  # the started watches' view; none current before start()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, keep_going: Callable[[], bool]) -> None:
        """Watch while `keep_going()` (our term) holds. Each start has a stop event of its
        own, so a thread of an earlier start that is still blocked in a watch never resumes."""
        self._stop = stop = threading.Event()
        self._keep_going = lambda: keep_going() and not stop.is_set()
        self._view = WatchedView((kind, ns) for ns in self.namespaces for kind in ("jobs", "pods"))
        self._running = set()  # what a record said in an earlier term may be lost since (a failover)
        for ns in self.namespaces:
            for kind in ("jobs", "pods"):
                t = threading.Thread(
                    target=self._watch_loop,
                    args=(kind, ns, stop, self._keep_going),
                    daemon=True,
                    name=f"watch-{kind}-{ns or 'all'}",
                )
                t.start()
                self._threads.append(t)
        t = threading.Thread(target=self._reconcile_loop, args=(stop, self._keep_going), daemon=True, name="reconcile")
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every watch together: their reads are cut short, so this takes milliseconds
        whatever the number of namespaces; `timeout` bounds the whole wait, not each thread."""
        self._stop.set()
        self._view = WatchedView(())  # a later takeover lists afresh
        with self._streams_mutex:
            streams = list(self._streams)
        for stream in streams:
            stream.abort()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:  # they are fenced by their own stop event and end on their next read
            log.warning("%d watch threads still running after %gs", len(self._threads), timeout)

    def _reconcile_loop(self, stop: threading.Event, keep_going: Callable[[], bool]) -> None:
        """The periodic relist, in a thread of its own: listing and handling thousands of
        Jobs takes seconds, which the read -> dispatch loop must not wait for."""
        interval = self.settings.kube.polling_interval
        while not stop.wait(interval):
            deadline = time.monotonic() + max(10.0, 2 * interval)  # an apiserver outage: give up, next round
            try:
                self.reconcile(lambda: keep_going() and time.monotonic() < deadline)
            except Stopped:
                if not keep_going():
                    return
            except (KsrError, OSError, ValueError) as e:
                log.warning("reconcile failed (%s); again in %gs", e, interval)
            except Exception:  # a bug must not silently end the relist
                log.exception("reconcile crashed; again in %gs", interval)

    # -- watching ----------------------------------------------------------------------
    def _watch_loop(
        self, kind: str, namespace: str | None, stop: threading.Event, keep_going: Callable[[], bool]
    ) -> None:
        handle = self.handle_job if kind == "jobs" else self.handle_pod
        view, part = self._view, (kind, namespace)
        rv: str | None = None
        failures = 0
        while not stop.is_set():
            try:
                if rv is None:
                    rv = self._relist(part, view, handle, keep_going)
                stream = self.api.watch(kind, namespace, rv, timeout_seconds=WATCH_SECONDS)
                with self._streams_mutex:
                    if stop.is_set():
                        return
                    self._streams.add(stream)
                try:
                    rv = self._follow(stream, part, view, handle, rv, stop, keep_going)
                finally:
                    with self._streams_mutex:
                        self._streams.discard(stream)
                failures = 0
            except Stopped:
                return
            except (KsrError, OSError, ValueError) as e:
                view.stale(part)
                failures += 1
                rv = None  # after an outage the apiserver may have compacted past us
                delay = backoff.delay(failures + 1, base=0.5, cap=10.0)
                log.warning("watch %s in %s failed (%s); relisting in %.1fs", kind, namespace or "all", e, delay)
                stop.wait(delay)
            except Exception:  # a bug must not silently end the watch
                view.stale(part)
                log.exception("watch %s crashed; restarting", kind)
                rv = None
                stop.wait(1.0)

    def _relist(
        self, part: Part, view: WatchedView, handle: Callable[..., None], keep_going: Callable[[], bool]
    ) -> str:
        """Handle every listed object, page by page, and make the view's part what was
        listed; the list's resourceVersion, to watch from."""
        kind, namespace = part
        rv = ""
        listed: list[Kept] = []  # the part stays stale (not yet listed, or its watch failed) until replaced
        for items, page_rv in (self.api.job_pages if kind == "jobs" else self.api.pod_pages)(
            namespace, keep_going=keep_going
        ):
            rv = page_rv
            for obj in items:
                handle(obj, keep_going=keep_going)
                kept = view.keep(kind, obj)
                if kept is not None:
                    listed.append(kept)
        view.replace(part, listed)
        return rv

    def _follow(
        self,
        stream: WatchStream,
        part: Part,
        view: WatchedView,
        handle: Callable[..., None],
        rv: str,
        stop: threading.Event,
        keep_going: Callable[[], bool],
    ) -> str | None:
        """Handle one watch's events; returns the resourceVersion to go on from (None: relist)."""
        for event in stream:
            if stop.is_set():
                break
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                view.stale(part)
                if obj.get("code") == 410:  # our resourceVersion is too old: relist
                    log.info("watch %s: 410 Gone, relisting", part[0])
                return None
            rv = obj.get("metadata", {}).get("resourceVersion") or rv
            if event.get("type") == "BOOKMARK":
                continue
            if not keep_going():
                raise Stopped(f"watch {part[0]}")
            deleted = event.get("type") == "DELETED"
            view.apply(part, obj, deleted=deleted)
            handle(obj, deleted=deleted, keep_going=keep_going)
        return rv

    # -- interpreting ------------------------------------------------------------------
    def handle_pod(
        self, pod: dict[str, Any], deleted: bool = False, keep_going: Callable[[], bool] | None = None
    ) -> None:
        mid = message_id_of(pod)
        if mid is None or deleted:
            return
        status = pod.get("status") or {}
        meta = pod["metadata"]
        containers = status.get("containerStatuses") or []
        started = status.get("phase") in ("Running", "Succeeded", "Failed") or any(
            "running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {}) for c in containers
        )
        for c in containers:
            waiting = (c.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                self._abort(mid, reason, waiting.get("message") or reason)
                return
            if reason:
                self._pod_notes[mid] = f"{reason}: {waiting.get('message', '')}".rstrip(": ")
            terminated = (c.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                self._pod_failures[mid] = (
                    f"container {c.get('name')} exited {terminated.get('exitCode')}"
                    f" ({terminated.get('reason', '')}) {terminated.get('message', '')}"
                ).strip()
        if not started:
            for cond in status.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    self._pod_notes[mid] = f"{cond.get('reason')}: {cond.get('message', '')}"
            return
        # A pod has several events once started (ready, ended, its finalizer off): each would
        # cost the tracker two Redis round trips to learn that it knew already.
        if mid not in self._running and self.tracker.pod_started(
            mid, pod_name=meta["name"], pod_uid=meta.get("uid", "")
        ):
            self._running.add(mid)

    def handle_job(
        self, job: dict[str, Any], deleted: bool = False, keep_going: Callable[[], bool] | None = None
    ) -> None:
        """Report the Job's end, if it has one, then release it (take our finalizer off).

        A Job being deleted (deletionTimestamp: our finalizer holds it) still carries its
        status, so the ttl-after-finished controller deleting a finished Job while Redis was
        away costs nothing: the end is read here when Redis answers again."""
        mid = message_id_of(job)
        if mid is None:
            return
        if self._report_end(mid, job.get("status") or {}):
            self._forget(mid)
        elif deleted or job.get("metadata", {}).get("deletionTimestamp"):
            # deleted before it finished, by someone else or by our own abort (a 99 already)
            self.tracker.exception(mid, code="JobDeleted", message="the Job was deleted before it finished")
        else:
            return
        if not deleted:
            self._release(mid, job, keep_going or self._keep_going)

    def _report_end(self, mid: str, status: dict[str, Any]) -> bool:
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                start, end = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
                duration = (end - start) if start and end else None
                self.tracker.completed(mid, duration=duration)
                return True
            if cond.get("type") == "Failed":
                message = cond.get("message") or "the Job failed"
                if mid in self._pod_failures:
                    message = f"{message}; {self._pod_failures[mid]}"
                self.tracker.failed(mid, code=cond.get("reason") or "Failed", message=message)
                return True
        return False

    def _release(self, mid: str, job: dict[str, Any], keep_going: Callable[[], bool]) -> None:
        """Take our finalizer off an ended Job once the state store holds its end. A Redis
        error leaves it on, for the next event or reconcile; so does a record that is missing
        (a failover lost it: the relist records the Job again, `_record_if_lost`)."""
        if not holds_finalizer(job):
            return
        record = self.state.get(mid)
        if record is None or not record.is_terminal:
            return  # e.g. claimed, its create about to be resumed: the Job must stay
        try:
            self.api.remove_finalizer(job, FINALIZER, keep_going=keep_going)
        except Stopped:
            raise
        except KubeApiError as e:  # one Job must not hold up the others; retried next time
            log.warning("cannot remove the finalizer of job %s: %s", job["metadata"].get("name"), e)

    def _abort(self, mid: str, code: str, message: str, keep_going: Callable[[], bool] | None = None) -> None:
        """Status 99, then delete the Job (first the 99: its DELETED event must not win the race)."""
        record = self.state.get(mid) or StateRecord()
        self.tracker.exception(mid, code=code, message=message)
        self._forget(mid)
        if record.job_name and record.namespace:
            self.api.delete_job(record.namespace, record.job_name, keep_going=keep_going or self._keep_going)

    def _forget(self, mid: str) -> None:
        self._pod_notes.pop(mid, None)
        self._pod_failures.pop(mid, None)
        self._running.discard(mid)

    # -- the periodic relist -----------------------------------------------------------
    def reconcile(self, keep_going: Callable[[], bool] | None = None) -> None:
        """Feed every followed Job and Pod of ours through the handlers, then settle the
        active records nothing answered for: deleted Jobs and pods that never started. From
        the watches' view while it is current; else listed from the apiserver."""
        keep_going = keep_going or self._keep_going
        listed_at = self._now()
        # Read before listing: a Job created after this read is the watch's (or the next
        # relist's). Only Jobs still followed, or still holding our finalizer, need the
        # handlers: each costs Redis round trips, and finished Jobs stay listed until their TTL.
        active = self.state.active_ids()
        self._prune_notes(active)
        view = self._view
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
        for mid, record in self.state.active_records().items():
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
        """The handlers for the pods and Jobs of active messages, and for Jobs holding our
        finalizer; every Job's message id is added to `seen`."""
        for pods in pod_pages:
            for pod in pods:
                if message_id_of(pod) in active:
                    self.handle_pod(pod)
        for jobs in job_pages:
            for job in jobs:
                mid = message_id_of(job)
                if mid:
                    seen.add(mid)
                held = holds_finalizer(job)
                if held and mid and mid not in active:
                    self._record_if_lost(mid, job)
                if mid in active or held:
                    self.handle_job(job, keep_going=keep_going)

    def _prune_notes(self, active: set[str]) -> None:
        """Drop the notes of messages no longer active. The pod watch and the Job watch are
        separate streams, so a pod's event (its finalizer taken off, its deletion) often comes
        after its Job's end and notes it again. A note is dropped the second relist in a row
        that finds its message inactive: a pod can be noted before its message joins the
        active set (the create answers before the Job is recorded)."""
        noted = (self._pod_notes, self._pod_failures, self._running)
        inactive = {mid for notes in noted for mid in list(notes) if mid not in active}
        for mid in inactive & self._inactive_notes:
            self._forget(mid)
        self._inactive_notes = inactive - self._inactive_notes

    def _record_if_lost(self, mid: str, job: dict[str, Any]) -> None:
        """A Job holding our finalizer whose message is not active: ended and not yet
        released, or one whose record a failover lost after the entry was acked (nothing
        replays it then). The second kind, once it has been so for UNRECORDED_GRACE, is
        recorded again from the Job; its webhook comes from the record or the stream entry."""
        record = self.state.get(mid)
        if record is not None and (record.has_job or record.is_terminal):
            self._unrecorded.pop(mid, None)
            return
        first = self._unrecorded.setdefault(mid, self._now())
        if self._now() - first < UNRECORDED_GRACE:
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
        self._running.discard(mid)  # the new record is "created": its pod's start is due again

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
            why = self._pod_notes.get(mid, "no pod was scheduled")
            self._abort(
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
