#!/usr/bin/env python3
"""The watched view's memory (runner/jobs/view.py) with N finished, released Jobs kept until
their TTL and an active set of A followed Jobs and Pods: what the leader holds between
relists, measured with tracemalloc in this process (no servers).

    scripts/bench_view.py                   # 16,000 finished Jobs, 500 active
    scripts/bench_view.py --finished 100000 --active 500

The objects are the runner's own manifests (`build_job`) as the apiserver returns them:
metadata with a uid, resourceVersion and managedFields, status with conditions; pods alike.
It prints the view's bytes in all and per finished Job, against the JSON the same Jobs
take as the apiserver sends them (what a relist of them decodes).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMESPACE = "bench"


def as_served(manifest: dict[str, Any], *, ended: bool) -> dict[str, Any]:
    """A Job as the apiserver answers for it: the manifest plus server-set fields."""
    job = json.loads(json.dumps(manifest))
    meta = job["metadata"]
    meta.update(
        uid=str(uuid.uuid4()),
        resourceVersion=str(uuid.uuid4().int % 10**9),
        creationTimestamp="2026-12-07T20:00:00Z",
        generation=1,
        managedFields=[
            {"manager": "kube-stream-runner", "operation": "Update", "apiVersion": "batch/v1", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:annotations": {}, "f:labels": {}}, "f:spec": {"f:template": {}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "batch/v1",
             "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}}}},
        ],
    )  # fmt: skip
    if ended:
        meta["finalizers"] = []
        job["status"] = {
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-12-07T20:00:02Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2026-12-07T20:00:02Z"},
            ],
            "startTime": "2026-12-07T20:00:00Z",
            "completionTime": "2026-12-07T20:00:02Z",
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
        }
    else:
        job["status"] = {"active": 1, "ready": 1, "startTime": "2026-12-07T20:00:00Z", "terminating": 0}
    return job


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    pod = {"metadata": dict(job["spec"]["template"]["metadata"]), "spec": job["spec"]["template"]["spec"]}
    pod["metadata"].update(name=job["metadata"]["name"] + "-x7k2p", namespace=NAMESPACE, uid=str(uuid.uuid4()))
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized", "Ready")],
        "containerStatuses": [
            {"name": "job", "ready": True, "state": {"running": {"startedAt": "2026-12-07T20:00:01Z"}}}
        ],
    }
    return pod


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=16_000)
    parser.add_argument("--active", type=int, default=500)
    args = parser.parse_args()

    from runner.jobs.manifest import build_job
    from runner.jobs.view import WatchedView
    from runner.message import parse_entry
    from runner.settings import Settings
    from tests.support.messages import message

    settings = Settings.from_env({"POD_NAME": "bench", "KSR_ALLOWED_NAMESPACES": NAMESPACE})

    def served(n: int, *, ended: bool) -> dict[str, Any]:
        msg = parse_entry({b"payload": json.dumps(message(f"m-{uuid.uuid4().hex}", NAMESPACE)).encode()})
        return as_served(build_job(msg, settings, stream="ksr:jobs:default", entry_id=f"{n}-0"), ended=ended)

    # As the watch gets them: bytes, decoded one by one and dropped once applied, so what
    # the view holds (the strings of the ids and names too) is all it allocated.
    finished = [orjson.dumps(served(n, ended=True)) for n in range(args.finished)]
    active_jobs = [served(n, ended=False) for n in range(args.active)]
    active = [orjson.dumps(j) for j in active_jobs]
    pods = [orjson.dumps(pod_of(j)) for j in active_jobs]
    json_bytes = sum(len(j) for j in finished)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    view = WatchedView([("jobs", NAMESPACE), ("pods", NAMESPACE)])
    for job in finished + active:
        view.apply(("jobs", NAMESPACE), orjson.loads(job), deleted=False)
    for pod in pods:
        view.apply(("pods", NAMESPACE), orjson.loads(pod), deleted=False)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    followed, settled = view.objects("jobs")
    assert len(settled) == args.finished and len(followed) == args.active, (len(settled), len(followed))
    print(
        f"view: {args.finished} finished Jobs + {args.active} active Jobs and Pods: {held / 1e6:.2f} MB held "
        f"({held / (args.finished + 2 * args.active):.0f} B an object); the finished Jobs as served: "
        f"{json_bytes / 1e6:.1f} MB of JSON ({json_bytes / args.finished:.0f} B each)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
