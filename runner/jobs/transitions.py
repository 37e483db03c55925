"""What a Job or Pod event means for its message: the tracker call it makes (started,
completed, failed, 99), our finalizer taken off once the end is stored, and the notes kept
meanwhile (why a pod is not running, how its container ended) for the messages to come.

Events come from the informer's watches and relists (runner.jobs.informer) and from the
periodic resync (runner.jobs.reconcile); all of them are handled alike.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from typing import Any

from runner.errors import KubeApiError
from runner.jobs.kube import KubeApi, Stopped
from runner.jobs.manifest import FINALIZER, holds_finalizer, message_id_of
from runner.jobs.tracker import Tracker
from runner.store.record import StateRecord
from runner.store.state import StateStore

log = logging.getLogger(__name__)

# A container that cannot start no matter how long we wait.
FATAL_WAITING = frozenset(
    {"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Transitions:
    def __init__(self, *, api: KubeApi, tracker: Tracker, state: StateStore) -> None:
        self.api = api
        self.tracker = tracker
        self.state = state
        self.keep_going: Callable[[], bool] = lambda: False  # the watching term's, once followed
        self.pod_notes: dict[str, str] = {}  # message id -> why its pod is not running (for 99s)
        self.pod_failures: dict[str, str] = {}  # message id -> how its container ended
        self._running: set[str] = set()  # message ids whose start the tracker has: later pod events skip it
        self._inactive_notes: set[str] = set()  # noted, and not active at the last relist

    def follow(self, keep_going: Callable[[], bool]) -> None:
        """A new term's watching: what a record said in an earlier term may be lost since (a failover)."""
        self.keep_going = keep_going
        self._running = set()

    # -- pods --------------------------------------------------------------------------
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
                self.abort(mid, reason, waiting.get("message") or reason)
                return
            if reason:
                self.pod_notes[mid] = f"{reason}: {waiting.get('message', '')}".rstrip(": ")
            terminated = (c.get("state") or {}).get("terminated")
            if terminated and terminated.get("exitCode", 0) != 0:
                self.pod_failures[mid] = (
                    f"container {c.get('name')} exited {terminated.get('exitCode')}"
                    f" ({terminated.get('reason', '')}) {terminated.get('message', '')}"
                ).strip()
        if not started:
            for cond in status.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    self.pod_notes[mid] = f"{cond.get('reason')}: {cond.get('message', '')}"
            return
        # A pod has several events once started (ready, ended, its finalizer off): each would
        # cost the tracker two Redis round trips to learn that it knew already.
        if mid not in self._running and self.tracker.pod_started(
            mid, pod_name=meta["name"], pod_uid=meta.get("uid", "")
        ):
            self._running.add(mid)

    def started(self, mid: str) -> bool:
        """The tracker has this message's pod start (its record is past "created")."""
        return mid in self._running

    def start_due_again(self, mid: str) -> None:
        """The message has a new record ("created"): its pod's start is reported again."""
        self._running.discard(mid)

    # -- jobs --------------------------------------------------------------------------
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
            self.forget(mid)
        elif deleted or job.get("metadata", {}).get("deletionTimestamp"):
            # deleted before it finished, by someone else or by our own abort (a 99 already)
            self.tracker.exception(mid, code="JobDeleted", message="the Job was deleted before it finished")
        else:
            return
        if not deleted:
            self._release(mid, job, keep_going or self.keep_going)

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
                if mid in self.pod_failures:
                    message = f"{message}; {self.pod_failures[mid]}"
                self.tracker.failed(mid, code=cond.get("reason") or "Failed", message=message)
                return True
        return False

    def _release(self, mid: str, job: dict[str, Any], keep_going: Callable[[], bool]) -> None:
        """Take our finalizer off an ended Job once the state store holds its end. A Redis
        error leaves it on, for the next event or reconcile; so does a record that is missing
        (a failover lost it: the relist records the Job again, runner.jobs.reconcile)."""
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

    def abort(self, mid: str, code: str, message: str, keep_going: Callable[[], bool] | None = None) -> None:
        """Status 99, then delete the Job (first the 99: its DELETED event must not win the race)."""
        record = self.state.get(mid) or StateRecord()
        self.tracker.exception(mid, code=code, message=message)
        self.forget(mid)
        if record.job_name and record.namespace:
            self.api.delete_job(record.namespace, record.job_name, keep_going=keep_going or self.keep_going)

    # -- notes -------------------------------------------------------------------------
    def forget(self, mid: str) -> None:
        self.pod_notes.pop(mid, None)
        self.pod_failures.pop(mid, None)
        self._running.discard(mid)

    def prune_notes(self, active: set[str]) -> None:
        """Drop the notes of messages no longer active. The pod watch and the Job watch are
        separate streams, so a pod's event (its finalizer taken off, its deletion) often comes
        after its Job's end and notes it again. A note is dropped the second relist in a row
        that finds its message inactive: a pod can be noted before its message joins the
        active set (the create answers before the Job is recorded)."""
        noted = (self.pod_notes, self.pod_failures, self._running)
        inactive = {mid for notes in noted for mid in list(notes) if mid not in active}
        for mid in inactive & self._inactive_notes:
            self.forget(mid)
        self._inactive_notes = inactive - self._inactive_notes
