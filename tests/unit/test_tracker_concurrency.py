"""The tracker and the watcher's relist under load: different messages' transitions do not
wait for each other, and the relist reads the state store only for Jobs still ours to follow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from election.clock import FakeClock
from runner.jobs.manifest import FINALIZER, MESSAGE_ID_ANNOTATION
from runner.jobs.reconcile import UNRECORDED_GRACE
from runner.jobs.tracker import Tracker
from runner.jobs.watcher import KubeWatcher
from runner.settings import Settings
from runner.signals import Signals
from runner.store.record import StateRecord
from runner.store.state import Marked

SETTINGS = Settings.from_env({"POD_NAME": "r0", "KSR_ALLOWED_NAMESPACES": "ns"})


class State:
    """The state store's reads, counted; `slow` blocks until released. The ids in `ended`
    have a record of their Job's end; every other id has no record."""

    def __init__(self, slow: str = "", ended: frozenset[str] = frozenset()) -> None:
        self.slow = slow
        self.ended = ended
        self.inside = threading.Event()
        self.release = threading.Event()
        self.gets: list[str] = []

    def get(self, message_id: str) -> StateRecord | None:
        self.gets.append(message_id)
        if message_id == self.slow:
            self.inside.set()
            self.release.wait(10)
        if message_id in self.ended:
            return StateRecord({"state": "completed", "job_name": f"job-{message_id}"})
        return None  # nothing recorded (or a failover lost the record)

    def mark_callback(self, *args: Any, **kwargs: Any) -> Marked:
        return Marked(first=False)

    def active_ids(self) -> set[str]:
        return set()

    def records(self, message_ids: Any) -> dict[str, StateRecord]:
        return {}


def tracker(state: State) -> Tracker:
    return Tracker(state=state, callbacks=None, settings=SETTINGS, signals=Signals([]))  # type: ignore[arg-type]


def test_a_slow_transition_of_one_message_does_not_hold_up_another():
    state = State(slow="slow")
    t = tracker(state)
    slow = threading.Thread(target=t.created, args=("slow",), kwargs={"job_name": "j1", "job_uid": "u1"})
    slow.start()
    try:
        assert state.inside.wait(5)
        fast = threading.Thread(target=t.created, args=("fast",), kwargs={"job_name": "j2", "job_uid": "u2"})
        fast.start()
        fast.join(2)
        assert not fast.is_alive(), "message fast waited for message slow's transition"
    finally:
        state.release.set()
        slow.join(5)


def _finished(mid: str, kind: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    meta = {"name": f"{kind}-{mid}", "uid": mid, "annotations": {MESSAGE_ID_ANNOTATION: mid}}
    if finalizers:
        meta["finalizers"] = finalizers
    if kind == "job":
        return {"metadata": meta, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    return {"metadata": meta, "status": {"phase": "Succeeded"}}


class Api:
    def __init__(self, jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.jobs, self.pods = jobs, pods
        self.finalizers_removed: list[str] = []

    def list_jobs(self, namespace: str | None, **kw: Any) -> tuple[list[dict[str, Any]], str]:
        return self.jobs, "1"

    def list_pods(self, namespace: str | None, **kw: Any) -> tuple[list[dict[str, Any]], str]:
        return self.pods, "1"

    def job_pages(self, namespace: str | None, **kw: Any) -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield self.jobs, "1"

    def pod_pages(self, namespace: str | None, **kw: Any) -> Iterator[tuple[list[dict[str, Any]], str]]:
        yield self.pods, "1"

    def remove_finalizer(self, job: dict[str, Any], finalizer: str, **kw: Any) -> None:
        self.finalizers_removed.append(job["metadata"]["uid"])


def test_the_relist_reads_nothing_for_finished_jobs_that_are_no_longer_ours():
    ids = [f"m{n}" for n in range(200)]
    api = Api([_finished(m, "job") for m in ids], [_finished(m, "pod") for m in ids])
    state = State()
    watcher = KubeWatcher(api=api, tracker=tracker(state), state=state, settings=SETTINGS)  # type: ignore[arg-type]
    watcher.reconcile(lambda: True)
    assert state.gets == []


def test_the_relist_still_releases_a_finished_job_holding_our_finalizer():
    api = Api([_finished("held", "job", [FINALIZER]), _finished("done", "job")], [])
    state = State(ended=frozenset({"held"}))  # its end recorded, the finalizer not yet off
    watcher = KubeWatcher(api=api, tracker=tracker(state), state=state, settings=SETTINGS)  # type: ignore[arg-type]
    watcher.reconcile(lambda: True)
    assert api.finalizers_removed == ["held"]


class Recorder:
    """The tracker, as far as the watcher's recovery of a lost record goes."""

    def __init__(self) -> None:
        self.again: list[dict[str, Any]] = []

    def recorded_again(self, message_id: str, **job: Any) -> bool:
        self.again.append({"id": message_id, **job})
        return True

    def completed(self, message_id: str, **kw: Any) -> None:
        pass


def test_a_job_holding_our_finalizer_without_a_record_is_kept_then_recorded_again_after_the_grace():
    job = _finished("lost", "job", [FINALIZER])
    job["metadata"].update(namespace="ns", labels={"app": "example"})
    api = Api([job], [])
    state, recorder, clock = State(), Recorder(), FakeClock()
    watcher = KubeWatcher(api=api, tracker=recorder, state=state, settings=SETTINGS, clock=clock)  # type: ignore[arg-type]
    watcher.reconcile(lambda: True)
    clock.advance(UNRECORDED_GRACE - 1)  # a create whose record is still on its way
    watcher.reconcile(lambda: True)
    assert (api.finalizers_removed, recorder.again) == ([], [])  # kept: its end is nowhere else
    clock.advance(1)
    watcher.reconcile(lambda: True)
    assert recorder.again == [
        {
            "id": "lost",
            "job_name": "job-lost",
            "namespace": "ns",
            "job_uid": "lost",
            "webhook": None,
            "service": "example",
        }
    ]
    assert api.finalizers_removed == []  # released once the end is recorded, at a later pass


class Started:
    """The tracker, as far as pod starts and deleted Jobs go."""

    def __init__(self) -> None:
        self.exceptions: list[str] = []

    def pod_started(self, message_id: str, **pod: Any) -> bool:
        return True

    def exception(self, message_id: str, **kw: Any) -> None:
        self.exceptions.append(message_id)


class Active(State):
    """Three active messages; the records they are asked for are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[set[str]] = []

    def active_ids(self) -> set[str]:
        return {"running", "pending", "deleted"}

    def records(self, message_ids: Any) -> dict[str, StateRecord]:
        self.asked.append(set(message_ids))
        return {}


def test_the_resync_reads_records_only_of_jobs_not_seen_or_not_started():
    def job(mid: str) -> dict[str, Any]:
        return {"metadata": {"name": f"job-{mid}", "uid": mid, "annotations": {MESSAGE_ID_ANNOTATION: mid}}}

    def pod(mid: str, phase: str) -> dict[str, Any]:
        return {**job(mid), "status": {"phase": phase}}

    api = Api([job("running"), job("pending")], [pod("running", "Running"), pod("pending", "Pending")])
    state = Active()
    watcher = KubeWatcher(api=api, tracker=Started(), state=state, settings=SETTINGS)  # type: ignore[arg-type]
    watcher.reconcile(lambda: True)
    # "running" is seen and started: nothing to settle; "pending" may be late to start, and
    # "deleted" may be gone: their records are read (before, all three every tick).
    assert state.asked == [{"pending", "deleted"}]
