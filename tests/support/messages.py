"""One message factory for every tier: the design's example message and variants of it."""

from __future__ import annotations

import copy
from typing import Any

VALID: dict[str, Any] = {
    "id": "31a89a91-7f3c-4c1e-9a55-0c8f1d2e3b4a",
    "service": "example",
    "job": {
        "prefixName": "my-job",
        "namespace": "default",
        "image": "busybox:latest",
        "command": ["/bin/sh", "-c", "echo hi"],
        "args": [],
        "serviceAccount": "default",
        "ttlSecondsAfterFinished": 60,
        "backoffLimit": 0,
        "activeDeadlineSeconds": 600,
        "gpuEnable": False,
        "gpuNumber": 1,
        "env": [{"name": "A", "value": "b"}],
        "envRef": [{"name": "cm", "type": "configmap"}],
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {}},
        "nodeSelector": {"matchKey": "kubernetes.io/hostname", "matchValue": "n1"},
        "toleration": {"key": "k", "value": "v"},
        "volume": {"mountPath": "/workdir", "pvc": "claim"},
    },
    "webhook": {"url": "http://callback.example/hook"},
}

DELETE = object()


def variant(path: str, value: Any) -> dict[str, Any]:
    """VALID with the value at dotted `path` replaced (or deleted with DELETE)."""
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def message(
    mid: str, namespace: str, *, service: str = "example", webhook: str | None = None, **job: Any
) -> dict[str, Any]:
    spec = {
        "prefixName": "job",
        "namespace": namespace,
        "image": "busybox:latest",
        "command": ["/bin/sh", "-c", "echo hi"],
        "ttlSecondsAfterFinished": 600,
        "backoffLimit": 0,
    }
    spec.update(job)
    msg: dict[str, Any] = {"id": mid, "service": service, "job": spec}
    if webhook:
        msg["webhook"] = {"url": webhook}
    return msg
