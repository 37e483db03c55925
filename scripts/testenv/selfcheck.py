"""The bed's start-up check: one tiny Job through the Job controller, the scheduler and kwok.

A control plane can answer /readyz and show Ready nodes while no Job can finish (kwok
not managing the nodes, pods deleted as soon as they are bound). The check creates one
Job, follows its pod through each step and names the first step that did not happen.
Standard library only (see bed.py).
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testenv.bed import Bed

NAMESPACE = "default"
JOB = "ksr-testenv-check"


class CheckFailed(RuntimeError):
    """The bed cannot run a Job; the message says which step did not happen."""


def job_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": JOB, "labels": {"app": JOB}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": JOB}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:latest", "command": ["true"]}],
                },
            },
        },
    }


@dataclass
class _Seen:
    """What the check observed of its Job's pods, for the failure message."""

    pods: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> last pod seen
    gone: list[str] = field(default_factory=list)  # names of pods deleted before the Job completed

    def furthest(self) -> str:
        """The first step that did not happen."""
        if not self.pods:
            return "no pod was created: the Job controller (kube-controller-manager) did not act"
        pod = list(self.pods.values())[-1]
        name, node = pod["metadata"]["name"], pod["spec"].get("nodeName")
        phase = pod.get("status", {}).get("phase", "?")
        if not node:
            return f"pod {name} was not bound to a node (phase {phase}): kube-scheduler did not schedule it"
        if phase == "Pending":
            return f"pod {name} was bound to {node} but never started: kwok did not run it"
        if phase == "Running":
            return f"pod {name} runs on {node} but never finished: kwok did not complete it"
        return f"pod {name} ended {phase} on {node} but the Job was not marked Complete by the Job controller"


def _get(bed: Bed, path: str) -> dict[str, Any]:
    status, body = bed.request("GET", path)
    if status != 200:
        raise CheckFailed(f"start-up check: GET {path} answered {status}: {str(body)[:200]}")
    return body


def _complete(job: dict[str, Any]) -> bool:
    conditions = job.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def run(bed: Bed, *, timeout: float = 60.0) -> float:
    """Run the check Job to completion and delete it; return the seconds it took.

    Raises CheckFailed naming what did not happen: no pod created, pod not bound, pod
    not started or finished by kwok, pod deleted before the end, Job not complete."""
    started = time.monotonic()
    jobs = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    status, body = bed.request("POST", jobs, job_manifest())
    if status != 201:
        raise CheckFailed(f"start-up check: creating Job {NAMESPACE}/{JOB} answered {status}: {str(body)[:300]}")
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods?" + urllib.parse.urlencode({"labelSelector": f"job-name={JOB}"})
    seen = _Seen()
    try:
        while time.monotonic() - started < timeout:
            if _complete(_get(bed, f"{jobs}/{JOB}")):
                return time.monotonic() - started
            current = {p["metadata"]["uid"]: p for p in _get(bed, pods).get("items", [])}
            seen.gone += [p["metadata"]["name"] for p in current.values() if p["metadata"].get("deletionTimestamp")]
            seen.gone += [p["metadata"]["name"] for uid, p in seen.pods.items() if uid not in current]
            seen.pods.update(current)
            if seen.gone:  # a Job's pod is never deleted before the Job completes on a sound bed
                raise CheckFailed(
                    f"start-up check: pod {', '.join(sorted(set(seen.gone)))} of Job {NAMESPACE}/{JOB} was deleted"
                    " before the Job completed (stale objects from an earlier start?)" + _hint(bed)
                )
            time.sleep(0.2)
        raise CheckFailed(
            f"start-up check: Job {NAMESPACE}/{JOB} not complete after {timeout:.0f}s: {seen.furthest()}" + _hint(bed)
        )
    finally:
        bed.request("DELETE", f"{jobs}/{JOB}", {"kind": "DeleteOptions", "propagationPolicy": "Background"})


def _hint(bed: Bed) -> str:
    stopped = [name for name, up in bed.running().items() if not up]
    down = f"; not running: {', '.join(stopped)}" if stopped else ""
    return f"{down}; logs in {bed.dir}/<component>.log"
