"""The watches' view: what it keeps of each object, and when it may be read instead of a list."""

from __future__ import annotations

from typing import Any

from runner.jobs.manifest import FINALIZER, MESSAGE_ID_ANNOTATION
from runner.jobs.view import WatchedView

JOBS, PODS = ("jobs", "ns"), ("pods", "ns")


def obj(mid: str | None, *, finalizers: list[str] | None = None, **status: Any) -> dict[str, Any]:
    annotations = {"kubectl.kubernetes.io/last-applied-configuration": "x" * 1000}
    if mid:
        annotations[MESSAGE_ID_ANNOTATION] = mid
    meta: dict[str, Any] = {"name": f"job-{mid}", "namespace": "ns", "uid": f"uid-{mid}", "annotations": annotations}
    meta["managedFields"] = [{"manager": "kube-controller-manager"}] * 10
    if finalizers:
        meta["finalizers"] = finalizers
    return {"metadata": meta, "spec": {"template": {"spec": {"containers": [{}] * 5}}}, "status": status}


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}]}


def test_a_view_is_current_only_once_every_watch_has_listed_and_until_one_fails() -> None:
    view = WatchedView([JOBS, PODS])
    assert not view.current
    view.replace(JOBS, [])
    assert not view.current
    view.replace(PODS, [])
    assert view.current
    view.stale(PODS)
    assert not view.current
    assert not WatchedView([]).current  # before any watch starts


def test_it_keeps_metadata_and_status_of_followed_objects_and_only_our_annotations() -> None:
    view = WatchedView([JOBS])
    view.apply(JOBS, obj("m1", active=1), deleted=False)
    (kept,), settled = view.objects("jobs")
    assert settled == {}
    assert set(kept) == {"metadata", "status"} and kept["status"] == {"active": 1}
    assert kept["metadata"]["annotations"] == {MESSAGE_ID_ANNOTATION: "m1"}
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["uid"] == "uid-m1"


def test_an_ended_released_job_is_kept_as_its_message_id_and_an_ended_pod_not_at_all() -> None:
    view = WatchedView([JOBS, PODS])
    view.replace(
        JOBS,
        [k for k in (WatchedView.keep("jobs", o) for o in (obj("done", **COMPLETE), obj(None))) if k is not None],
    )
    view.apply(JOBS, obj("held", finalizers=[FINALIZER], **COMPLETE), deleted=False)
    view.apply(PODS, obj("p", phase="Running"), deleted=False)
    view.apply(PODS, obj("p", phase="Succeeded"), deleted=False)
    followed, settled = view.objects("jobs")
    assert settled == {"done": ("ns", "job-done")}  # the Job without our annotation is not ours
    assert [o["metadata"]["name"] for o in followed] == ["job-held"]  # ended, still holding our finalizer
    assert view.objects("pods") == ([], {})


def test_a_deleted_object_leaves_the_view() -> None:
    view = WatchedView([JOBS])
    view.apply(JOBS, obj("m1"), deleted=False)
    view.apply(JOBS, obj("m1"), deleted=True)
    assert view.objects("jobs") == ([], {})
