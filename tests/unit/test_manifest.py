"""The Job manifest: deterministic names, labels, security defaults, and every message field."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from runner.jobs.manifest import (
    HASH_LABEL,
    MESSAGE_ID_ANNOTATION,
    build_job,
    job_name,
    message_hash,
    message_selector,
)
from runner.message import parse_message
from runner.settings import Settings
from tests.support.messages import DELETE, VALID, variant

SETTINGS = Settings.from_env({"POD_NAME": "r0"})
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def build(doc: dict[str, Any], settings: Settings = SETTINGS, **kw: str) -> dict[str, Any]:
    return build_job(parse_message(json.dumps(doc)), settings, **kw)


def test_golden_design_example() -> None:
    h = message_hash(VALID["id"])
    assert build(VALID, stream="ksr:jobs:default", entry_id="1700000000000-0") == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"my-job-{h}",
            "namespace": "default",
            "labels": {
                "app.kubernetes.io/managed-by": "kube-stream-runner",
                "app": "example",
                "kube-stream-runner/message-hash": h,
            },
            "annotations": {
                "kube-stream-runner/message-id": VALID["id"],
                "kube-stream-runner/stream": "ksr:jobs:default",
                "kube-stream-runner/stream-entry-id": "1700000000000-0",
            },
            "finalizers": ["kube-stream-runner/outcome"],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/managed-by": "kube-stream-runner",
                        "app": "example",
                        "kube-stream-runner/message-hash": h,
                    },
                    "annotations": {"kube-stream-runner/message-id": VALID["id"]},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "nodeSelector": {"kubernetes.io/hostname": "n1"},
                    "tolerations": [{"key": "k", "operator": "Equal", "value": "v"}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "claim"}}],
                    "containers": [
                        {
                            "name": "job",
                            "image": "busybox:latest",
                            "command": ["/bin/sh", "-c", "echo hi"],
                            "env": [{"name": "A", "value": "b"}],
                            "envFrom": [{"configMapRef": {"name": "cm"}}],
                            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                            "volumeMounts": [{"name": "data", "mountPath": "/workdir"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                        }
                    ],
                },
            },
        },
    }


def test_minimal_message_gets_kubernetes_defaults() -> None:
    job = build({"id": "m1", "service": "svc", "job": {"prefixName": "p", "namespace": "ns", "image": "img"}})
    spec = job["spec"]
    assert set(spec) == {"template"}
    pod = spec["template"]["spec"]
    assert set(pod) == {"restartPolicy", "automountServiceAccountToken", "securityContext", "containers"}
    assert pod["containers"][0] == {
        "name": "job",
        "image": "img",
        "securityContext": pod["containers"][0]["securityContext"],
    }
    assert "generateName" not in job["metadata"]


@pytest.mark.parametrize(
    "prefix, message_id",
    [
        ("my-job", "31a89a91"),
        ("a", "x"),
        ("a" * 63, "id-1"),
        ("a" * 45 + "-" + "b" * 17, "id-2"),  # the cut lands right after a '-'
        ("x" * 46 + "-tail", "id-3"),
    ],
)
def test_job_name_is_a_short_dns_label(prefix: str, message_id: str) -> None:
    name = job_name(prefix, message_id)
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.endswith("-" + message_hash(message_id))
    assert name == job_name(prefix, message_id)  # deterministic
    assert name.startswith(prefix[:10])


def test_job_names_differ_by_id_and_match_label() -> None:
    assert job_name("p", "a") != job_name("p", "b")
    job = build(VALID)
    assert job["metadata"]["name"].endswith(job["metadata"]["labels"][HASH_LABEL])
    assert message_selector(VALID["id"]) == (
        f"app.kubernetes.io/managed-by=kube-stream-runner,{HASH_LABEL}={message_hash(VALID['id'])}"
    )


def pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container(job: dict[str, Any]) -> dict[str, Any]:
    return pod(job)["containers"][0]


def test_gpu() -> None:
    doc = variant("job.gpuEnable", True)
    doc["job"]["gpuNumber"] = 2
    assert container(build(doc))["resources"]["limits"] == {"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": "2"}
    doc = variant("job.gpuEnable", True)
    del doc["job"]["gpuNumber"]
    del doc["job"]["resources"]
    assert container(build(doc))["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert "nvidia.com/gpu" not in container(build(variant("job.gpuNumber", 3)))["resources"]["limits"]


def test_resources_requests_only() -> None:
    doc = variant("job.resources", {"requests": {"cpu": "250m"}})
    assert container(build(doc))["resources"] == {"requests": {"cpu": "250m"}}


@pytest.mark.parametrize(
    "env, account, expected_name, mounted",
    [
        ({}, None, None, False),
        ({}, "default", None, False),
        ({"KSR_ALLOWED_SERVICE_ACCOUNTS": "builder"}, "builder", "builder", True),
        ({"KSR_ALLOWED_SERVICE_ACCOUNTS": "default"}, "default", None, True),
        ({"KSR_ALLOWED_SERVICE_ACCOUNTS": "*"}, "anyone", "anyone", True),
    ],
)
def test_service_account_and_token(
    env: dict[str, str], account: str | None, expected_name: str | None, mounted: bool
) -> None:
    doc = variant("job.serviceAccount", account if account else DELETE)
    spec = pod(build(doc, Settings.from_env({"POD_NAME": "r0", **env})))
    assert spec.get("serviceAccountName") == expected_name
    assert spec["automountServiceAccountToken"] is mounted


@pytest.mark.parametrize(
    "toleration, expected",
    [
        ({"key": "gpu"}, {"key": "gpu", "operator": "Exists"}),
        ({"key": "gpu", "effect": "NoSchedule"}, {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}),
        (
            {"key": "k", "value": "v", "effect": "NoExecute"},
            {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"},
        ),
    ],
)
def test_tolerations(toleration: dict[str, str], expected: dict[str, str]) -> None:
    assert pod(build(variant("job.toleration", toleration)))["tolerations"] == [expected]


def test_env_from_secret_and_configmap() -> None:
    doc = variant("job.envRef", [{"name": "cm", "type": "configmap"}, {"name": "creds", "type": "secret"}])
    assert container(build(doc))["envFrom"] == [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "creds"}}]


def test_pod_template_carries_the_job_labels_and_id() -> None:
    job = build(VALID)
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    assert job["spec"]["template"]["metadata"]["annotations"][MESSAGE_ID_ANNOTATION] == VALID["id"]
    assert job["spec"]["template"]["metadata"]["labels"] is not job["metadata"]["labels"]
