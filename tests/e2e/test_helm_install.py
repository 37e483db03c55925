"""`helm install --wait` into the bed for real (kwok runs the Deployment's pods as fake
nodes do), `helm upgrade` with changed values rolls the pods, and `helm uninstall` leaves
nothing behind in the namespace or the cluster. One more install switches on the chart's
extension hooks: a sidecar, an init container, settings from a Secret and a ConfigMap of the
user's, an extra volume, a NetworkPolicy and a minAvailable PodDisruptionBudget."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.chart import CHART, container_env, helm, values_file
from tests.support.ports import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RELEASE = "ksr"
# What a namespace holds before anything is installed in it.
NAMESPACE_DEFAULTS = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}


def kubectl(kube: Any, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={kube.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def everything_in(kube: Any, namespace: str) -> set[tuple[str, str]]:
    """(kind, name) of every listable namespaced object, events aside."""
    kinds = kubectl(kube, "api-resources", "--namespaced", "--verbs=list", "-o", "name").split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    listed = json.loads(kubectl(kube, "get", ",".join(kinds), "-n", namespace, "-o", "json"))
    return {(o["kind"], o["metadata"]["name"]) for o in listed["items"]}


def release_pods(kube: Any, namespace: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    return list(client.CoreV1Api(kube.api_client()).list_namespaced_pod(namespace, label_selector=selector).items)


def install(kube: Any, home: Path, command: str, namespace: str, values: dict[str, Any]) -> None:
    helm(
        home,
        command,
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "-f",
        str(values_file(home, values)),
        "--wait",
        "--timeout=120s",
        kubeconfig=kube.kubeconfig,
        timeout=180,
    )


def test_install_upgrade_uninstall(kube, namespace, tmp_path):
    apps = client.AppsV1Api(kube.api_client())
    before = everything_in(kube, namespace)
    assert before == NAMESPACE_DEFAULTS
    values: dict[str, Any] = {"redis": {"url": "redis://127.0.0.1:6379/0"}}

    install(kube, tmp_path, "install", namespace, values)
    (deployment,) = apps.list_namespaced_deployment(namespace).items
    assert deployment.status.ready_replicas == deployment.spec.replicas == 3
    pods = release_pods(kube, namespace)
    assert len(pods) == 3 and all(p.status.phase == "Running" for p in pods)
    assert {p.spec.node_name for p in pods} <= {"kwok-node-0", "kwok-node-1"}
    assert {p.spec.service_account_name for p in pods} == {deployment.spec.template.spec.service_account_name}
    installed = everything_in(kube, namespace) - before
    kinds = {kind for kind, _ in installed}
    assert {"Deployment", "ReplicaSet", "Pod", "ConfigMap", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert {"Service", "PodDisruptionBudget"} <= kinds
    first_checksum = deployment.spec.template.metadata.annotations["checksum/config"]

    # Changed values: fewer replicas, another log level; the config checksum rolls every pod.
    install(kube, tmp_path, "upgrade", namespace, {**values, "replicaCount": 2, "config": {"logLevel": "DEBUG"}})
    deployment = apps.read_namespaced_deployment(deployment.metadata.name, namespace)
    assert deployment.status.ready_replicas == deployment.spec.replicas == 2
    assert deployment.status.updated_replicas == 2
    checksum = deployment.spec.template.metadata.annotations["checksum/config"]
    assert checksum != first_checksum
    config = client.CoreV1Api(kube.api_client()).read_namespaced_config_map(deployment.metadata.name, namespace)
    assert config.data["KSR_LOG_LEVEL"] == "DEBUG"

    def rolled() -> bool:
        pods = release_pods(kube, namespace)
        return len(pods) == 2 and all(p.metadata.annotations["checksum/config"] == checksum for p in pods)

    wait_for(rolled, timeout=60, what="the old pods gone, two new ones")

    helm(tmp_path, "uninstall", RELEASE, "--namespace", namespace, "--wait", kubeconfig=kube.kubeconfig)
    # The garbage collector removes the ReplicaSets and pods after the Deployment.
    wait_for(lambda: everything_in(kube, namespace) == before, timeout=60, what="nothing left in the namespace")
    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    cluster_wide = [r.metadata.name for r in rbac.list_cluster_role().items + rbac.list_cluster_role_binding().items]
    assert not [n for n in cluster_wide if n.startswith(f"{RELEASE}-")]


RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def hooked_values() -> dict[str, Any]:
    return {
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "replicaCount": 2,
        "commonLabels": {"team": "platform"},
        "extraEnvVars": [
            {"name": "KSR_MAX_ACTIVE_JOBS", "valueFrom": {"secretKeyRef": {"name": "team-limits", "key": "max-jobs"}}}
        ],
        "extraEnvVarsCM": "team-config",
        "extraEnvVarsSecret": "team-secrets",
        "extraVolumes": [{"name": "shared", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}],
        "extraVolumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        "initContainers": [
            {"name": "prepare", "image": "registry.example/tools:1", "command": ["true"], "securityContext": RESTRICTED}
        ],
        "sidecars": [
            {
                "name": "proxy",
                "image": "registry.example/proxy:1",
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                "securityContext": RESTRICTED,
            }
        ],
        "podDisruptionBudget": {"minAvailable": 1},
        "networkPolicy": {"enabled": True, "allowExternal": False, "allowExternalEgress": False},
    }


def test_install_with_a_sidecar_and_settings_from_a_secret(kube, namespace, tmp_path):
    core = client.CoreV1Api(kube.api_client())
    secret = {"max-jobs": base64.b64encode(b"7").decode()}
    core.create_namespaced_secret(namespace, {"metadata": {"name": "team-limits"}, "data": secret})
    webhook = {"KSR_WEBHOOK_SECRET": base64.b64encode(b"whsec-team").decode()}
    core.create_namespaced_secret(namespace, {"metadata": {"name": "team-secrets"}, "data": webhook})
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "team-config"}, "data": {"KSR_LOG_LEVEL": "WARNING"}}
    )

    install(kube, tmp_path, "install", namespace, hooked_values())

    pods = release_pods(kube, namespace)
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)
    for pod in pods:
        assert [c.name for c in pod.spec.containers] == ["runner", "proxy"]
        assert {s.name: s.ready for s in pod.status.container_statuses} == {"runner": True, "proxy": True}
        assert [c.name for c in pod.spec.init_containers] == ["prepare"]
        assert pod.metadata.labels["team"] == "platform"
        (from_secret,) = [e for e in pod.spec.containers[0].env if e.name == "KSR_MAX_ACTIVE_JOBS"]
        assert (from_secret.value_from.secret_key_ref.name, from_secret.value_from.secret_key_ref.key) == (
            "team-limits",
            "max-jobs",
        )
        assert {m.mount_path for c in pod.spec.containers for m in c.volume_mounts if m.name == "shared"} == {"/shared"}

    # The runner's own settings, from the environment this pod's runner container gets.
    pod = pods[0]
    env = container_env(core, namespace, pod, "runner")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ksr"), "config", "--json"],
        env={"PATH": os.environ["PATH"], **env, "KUBERNETES_SERVICE_HOST": "10.96.0.1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["KSR_MAX_ACTIVE_JOBS"] == 7  # extraEnvVars' secretKeyRef, over the ConfigMap's 500
    assert effective["KSR_LOG_LEVEL"] == "WARNING"  # extraEnvVarsCM, after the chart's ConfigMap
    assert effective["KSR_WEBHOOK_SECRET"] == "***"  # extraEnvVarsSecret: set, and masked
    assert env["KSR_WEBHOOK_SECRET"] == "whsec-team"
    protected = set(effective["KSR_PROTECTED_NAMES"].split(","))
    assert {"team-limits", "team-config", "team-secrets"} <= protected

    policy = client.PolicyV1Api(kube.api_client()).list_namespaced_pod_disruption_budget(namespace).items
    assert [(p.spec.min_available, p.spec.max_unavailable) for p in policy] == [(1, None)]
    (network,) = client.NetworkingV1Api(kube.api_client()).list_namespaced_network_policy(namespace).items
    assert network.spec.policy_types == ["Ingress", "Egress"]
