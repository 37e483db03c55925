"""(r) What one Job costs, over its whole life, on a bed whose apiserver keeps an audit log:
the creator's CPU, every bed process's CPU, the apiserver requests by component and verb
(from the audit log: who sent it, which object), the writes among them, the bytes the Job
takes in etcd, and the Redis commands. `bench_dispatch.py --parts r`.

A phase creates N Jobs (the baseline's creates, or N messages to the runner) and ends when
the whole cluster is done with them: every Job complete, for ours also recorded and
released (no Job still holding the outcome finalizer), and no request about the
namespace's objects for `QUIET` seconds. Only requests about objects of the phase's
namespace are counted, Leases aside (the runner renews its Lease every retry period, not
per Job), and none of this script's own (its observer's watch, its polls), which go out under their own user
agent.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

OBSERVER_AGENT = "ksr-bench-observer"  # this script's own requests (kubernetes client), not counted
QUIET = 3.0  # seconds without a request about the namespace: the cluster is done with the phase
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
FINALIZER = "kube-stream-runner/outcome"


def component_of(agent: str) -> str:
    """`kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/abc/job-controller` ->
    `kube-controller-manager/job-controller`; `kube-stream-runner/0.1.0` -> `kube-stream-runner`."""
    head, _, rest = agent.partition(" ")
    product = head.split("/", 1)[0] or "unknown"
    tail = rest.rsplit("/", 1)[-1] if "/" in rest else ""
    return f"{product}/{tail}" if tail and tail[0].isalpha() and not tail.startswith("amd64") else product


def requests_in(log: Path, offset: int, namespace: str) -> tuple[Counter[tuple[str, str, str]], int]:
    """(component, resource, verb) -> count of answered requests about `namespace`'s objects
    since byte `offset` of the audit log; and the log's size read to."""
    counts: Counter[tuple[str, str, str]] = Counter()
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = offset + data.rfind(b"\n") + 1
    for line in data[: end - offset].splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        agent = event.get("userAgent") or ""
        if ref.get("namespace") != namespace or agent.startswith(OBSERVER_AGENT) or ref.get("resource") == "leases":
            continue  # the Lease is renewed every retry period, whatever the Jobs do
        resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[(component_of(agent), resource, event.get("verb", "?"))] += 1
    return counts, end


def quiet_since(log: Path, offset: int, namespace: str, *, quiet: float, timeout: float) -> int:
    """Waits until no request about `namespace` has come for `quiet` seconds (bounded by
    `timeout`); the log's size then."""
    deadline = time.monotonic() + timeout
    last_change, size = time.monotonic(), offset
    seen = 0
    while time.monotonic() < deadline:
        counts, size = requests_in(log, offset, namespace)
        total = sum(counts.values())
        if total != seen:
            seen, last_change = total, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return size
        time.sleep(0.5)
    raise TimeoutError(f"requests about {namespace} kept coming for {timeout:.0f} s")


def stored_bytes(etcd_url: str, namespace: str, name: str) -> int:
    """The size of the Job's value in etcd (the apiserver stores protobuf), through etcd's
    JSON gateway."""
    key = base64.b64encode(f"/registry/jobs/{namespace}/{name}".encode()).decode()
    request = urllib.request.Request(f"{etcd_url}/v3/kv/range", data=json.dumps({"key": key}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        kvs = json.loads(r.read()).get("kvs") or []
    return len(base64.b64decode(kvs[0]["value"])) if kvs else 0


def redis_calls(client: Any) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def report(
    kind: str,
    n: int,
    requests: Counter[tuple[str, str, str]],
    cpu: dict[str, float],
    redis: Counter[str],
    job_bytes: list[int],
) -> list[str]:
    lines = []
    lines.append("    CPU ms per Job: " + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in cpu.items()))
    by_component: dict[str, Counter[str]] = {}
    for (component, resource, verb), count in sorted(requests.items()):
        by_component.setdefault(component, Counter())[f"{verb} {resource}"] += count
    writes = Counter[str]()
    for component, verbs in by_component.items():
        cells = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(verbs.items()))
        lines.append(f"    requests per Job, {component}: {cells}")
        writes[component] = sum(v for k, v in verbs.items() if k.split()[0] in WRITES and "events" not in k)
    runner_writes = sum(v for k, v in writes.items() if k.startswith("kube-stream-runner"))
    lines.append(
        f"    writes per Job (events aside): runner {runner_writes / n:.2f}, whole cluster {sum(writes.values()) / n:.2f}"
    )
    if job_bytes:
        lines.append(
            f"    Job object in etcd: {sorted(job_bytes)[len(job_bytes) // 2]} bytes (median of {len(job_bytes)})"
        )
    per_job = {k: v / n for k, v in redis.items() if v > 0}
    total = sum(per_job.values())
    lines.append(
        f"    Redis commands per Job: {total:.2f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_job.items(), key=lambda kv: -kv[1]))
        + ")"
    )
    return lines
