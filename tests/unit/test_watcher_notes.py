"""The watcher's notes about pods (why one is not running, how its container ended) are kept
for the active messages only: the pod watch and the Job watch are separate streams, so a pod
event (the job controller taking its finalizer off, the garbage collector deleting it) often
comes after its Job's end was handled, and its note would otherwise stay for good."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runner.jobs.manifest import MESSAGE_ID_ANNOTATION
from runner.jobs.tracker import Tracker
from runner.jobs.watcher import KubeWatcher
from runner.settings import Settings
from runner.signals import Signals
from runner.store.record import StateRecord

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})


class State:
    def __init__(self, active: set[str]) -> None:
        self.active = active

    def get(self, message_id: str) -> StateRecord | None:
        return None  # ended long ago: its record expired

    def active_ids(self) -> set[str]:
        return set(self.active)

    def records(self, message_ids: Any) -> dict[str, StateRecord]:
        return {}


class Api:
    def job_pages(self, namespace: str | None, **kw: Any) -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield [], "1"

    def pod_pages(self, namespace: str | None, **kw: Any) -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield [], "1"


def _pod(mid: str, state: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": f"pod-{mid}", "uid": mid, "annotations": {MESSAGE_ID_ANNOTATION: mid}}
    return {"metadata": meta, "status": {"phase": "Pending", "containerStatuses": [{"name": "job", "state": state}]}}


def test_notes_of_messages_no_longer_active_are_dropped_by_the_relist():
    ended = [f"ended-{n}" for n in range(1000)]
    state = State(active={"live"})
    tracker = Tracker(state=state, callbacks=None, settings=SETTINGS, signals=Signals([]))  # type: ignore[arg-type]
    watcher = KubeWatcher(api=Api(), tracker=tracker, state=state, settings=SETTINGS)  # type: ignore[arg-type]
    for mid in [*ended, "live"]:
        watcher.handle_pod(_pod(mid, {"waiting": {"reason": "ContainerCreating"}}))
        watcher.handle_pod(_pod(mid, {"terminated": {"exitCode": 1, "reason": "Error"}}))
    assert len(watcher.transitions.pod_notes) == len(watcher.transitions.pod_failures) == 1001

    watcher.reconcile(lambda: True)  # a note may come before its message joins the active set: kept once
    watcher.reconcile(lambda: True)

    assert list(watcher.transitions.pod_notes) == ["live"]
    assert watcher.transitions.pod_failures == {"live": "container job exited 1 (Error)"}


class StartTracker:
    """Counts the starts the watcher reports; live once `recorded` (the create's record)."""

    def __init__(self) -> None:
        self.calls = 0
        self.recorded = False

    def pod_started(self, message_id: str, **kw: Any) -> bool:
        self.calls += 1
        return self.recorded


def test_a_started_pods_later_events_do_not_ask_the_tracker_again_once_it_had_a_record():
    tracker = StartTracker()
    state = State(active={"m"})
    watcher = KubeWatcher(api=Api(), tracker=tracker, state=state, settings=SETTINGS)  # type: ignore[arg-type]
    running = _pod("m", {"running": {}})
    watcher.handle_pod(running)  # before the Job is recorded (the create answered first): asked again later
    tracker.recorded = True
    for _ in range(4):  # running, ready, succeeded, its finalizer taken off
        watcher.handle_pod(running)
    assert tracker.calls == 2
    watcher.transitions.forget("m")  # its Job ended
    watcher.handle_pod(running)
    assert tracker.calls == 3
