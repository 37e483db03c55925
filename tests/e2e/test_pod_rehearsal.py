"""The pod rehearsal: two containers of the built image, run with exactly the container spec
`helm template` renders (env, args, probes, securityContext, read-only root, uid 10001,
tmpfs emptyDirs), the chart's ServiceAccount token and CA at the in-cluster path and
KUBERNETES_SERVICE_HOST/PORT pointing at the bed. They elect on the Lease, dispatch real
Jobs with callbacks, answer the chart's probes, and `podman stop` hands over within the
grace period with exit code 0."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.chart import config_map, one, render
from tests.support.containers import Container, podman, service_account_files
from tests.support.kube import job_message_ids
from tests.support.messages import message
from tests.support.pipeline import xadd
from tests.support.ports import free_port, wait_for
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kube, pytest.mark.slow]

SECRET = "ksr-secrets"


def chart_values(image: str, namespace: str, port: int) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag},
        "secrets": {"existingSecret": SECRET},
        "config": {
            "allowedNamespaces": [namespace],
            "webhookAllow": ["127.0.0.1"],
            # Host network: each "pod" binds loopback on a port of its own.
            "extraEnv": {"KSR_HTTP_HOST": "127.0.0.1"},
        },
        "httpPort": port,
    }


def apply_service_account_and_rbac(kube: Any, docs: list[dict[str, Any]]) -> str:
    """The chart's ServiceAccount, Roles and RoleBindings, created as `helm install` would."""
    api = kube.api_client()
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            client.CoreV1Api(api).create_namespaced_service_account(doc["metadata"]["namespace"], doc)
        elif doc["kind"] == "Role":
            client.RbacAuthorizationV1Api(api).create_namespaced_role(doc["metadata"]["namespace"], doc)
        elif doc["kind"] == "RoleBinding":
            client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(doc["metadata"]["namespace"], doc)
    return str(one(docs, "ServiceAccount")["metadata"]["name"])


@pytest.fixture
def pods(image, kube, namespace, redis_server, redis_client, tmp_path):
    """Two containers of the chart's Deployment, each rendered with its own httpPort."""
    ports = [free_port(), free_port()]
    renderings = [render(tmp_path, namespace=namespace, values=chart_values(image, namespace, p)) for p in ports]
    account = apply_service_account_and_rbac(kube, renderings[0])
    tokens = service_account_files(kube, tmp_path / "serviceaccount", namespace=namespace, name=account)
    suffix = uuid.uuid4().hex[:5]
    started: list[Container] = []
    try:
        for i, docs in enumerate(renderings):
            started.append(
                Container(
                    image=image,
                    name=f"ksr-{suffix}-{i}",
                    docs=docs,
                    secret={"REDIS_URL": redis_server.url},
                    service_account=tokens,
                    kube=kube,
                    directory=tmp_path,
                )
            )
        yield started, renderings[0]
    finally:
        for c in started:
            c.remove()


def _uid_gid(pid: int) -> tuple[str, str]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return status["Uid"].split()[0], status["Gid"].split()[0]


def test_two_containers_of_the_chart_elect_dispatch_and_hand_over(pods, kube, namespace, redis_client):
    containers, docs = pods
    receiver = Receiver().start()
    try:
        _rehearse(containers, docs, kube, namespace, redis_client, receiver)
    except BaseException:
        for c in containers:
            print(f"--- {c.name}\n{c.logs()}")
        raise
    finally:
        receiver.close()


def _rehearse(containers, docs, kube, namespace, redis_client, receiver):
    # Probes: the startup probe passes within its budget; readiness and liveness then answer 200.
    for c in containers:
        startup = c.spec["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        answered = wait_for(
            lambda c=c: c.probe("startupProbe") == 200 or not c.running(), timeout=budget, what=f"{c.name} started"
        )
        assert answered and c.running(), f"{c.name} exited during start-up"
        wait_for(lambda c=c: c.probe("readinessProbe") == 200, timeout=60, interval=0.1, what=f"{c.name} ready")
        print(f"{c.name}: container start to /readyz 200 in {time.monotonic() - c.started:.1f}s")
        assert c.probe("livenessProbe") == 200

    # The security context holds: uid/gid 10001, read-only root, writable emptyDirs only.
    for c in containers:
        assert _uid_gid(c.main_pid()) == ("10001", "10001")
        host = c.inspect()["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] and "CAP_NET_RAW" in host["CapDrop"]
    probe = podman(
        "exec", containers[0].name, "sh", "-c", "touch /opt/ksr/x 2>&1; touch /run/ksr/x /tmp/x && echo ok", check=False
    )
    assert "Read-only file system" in probe.stdout and probe.stdout.strip().endswith("ok"), probe.stdout

    # Election on the Lease the chart names, held by one container.
    lease_name = config_map(docs)["data"]["LEADER_ELECTION_LOCK_NAME"]
    leader = wait_for(lambda: next((c for c in containers if c.leading()), None), timeout=60, what="a leader")
    assert sum(c.leading() for c in containers) == 1
    coordination = client.CoordinationV1Api(kube.api_client())
    assert coordination.read_namespaced_lease(lease_name, namespace).spec.holder_identity == leader.name

    # Real Jobs with callbacks, dispatched by the leader.
    stream = config_map(docs)["data"]["KSR_STREAMS"].split(",")[0]
    first = [f"rehearsal-{i}" for i in range(4)]
    for mid in first:
        xadd(redis_client, stream, message(mid, namespace, webhook=receiver.url))
    wait_for(
        lambda: all(receiver.statuses().get(m) == [0, 1, 2] for m in first),
        timeout=120,
        what="callbacks 0, 1, 2 for the first messages",
    )
    assert job_message_ids(kube, namespace) == first

    # SIGTERM: the leader releases the Lease, exits 0 within the grace period; the other takes over.
    follower = next(c for c in containers if c is not leader)
    stopped_at = time.monotonic()
    code, took = leader.stop()
    assert code == 0
    assert took < leader.grace, f"stop took {took:.1f}s, grace is {leader.grace}s"
    wait_for(follower.leading, timeout=max(0.0, leader.grace - (time.monotonic() - stopped_at)), what="handover")
    print(f"podman stop took {took:.1f}s; handover {time.monotonic() - stopped_at:.1f}s after SIGTERM")
    assert coordination.read_namespaced_lease(lease_name, namespace).spec.holder_identity == follower.name

    later = [f"rehearsal-after-{i}" for i in range(2)]
    for mid in later:
        xadd(redis_client, stream, message(mid, namespace, webhook=receiver.url))
    wait_for(
        lambda: all(receiver.statuses().get(m) == [0, 1, 2] for m in later),
        timeout=120,
        what="callbacks for the messages after the handover",
    )
    assert job_message_ids(kube, namespace) == sorted(first + later)
    assert follower.probe("readinessProbe") == 200
