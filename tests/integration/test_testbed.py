"""Smoke tests proving the test bed is a real control plane: Jobs run (job controller,
scheduler, kwok), kwok's fail stage works, RBAC is enforced, the Lease API does optimistic
concurrency."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.support.ports import wait_for

pytestmark = pytest.mark.kube


def _job(name: str, *, app: str, backoff_limit: int = 0) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:latest", "command": ["true"]}],
                },
            },
        },
    }


def _condition(batch: client.BatchV1Api, name: str, namespace: str, kind: str) -> client.V1JobCondition | None:
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


def test_job_runs_to_complete(kube, namespace):
    batch = client.BatchV1Api(kube.api_client())
    batch.create_namespaced_job(namespace, _job("smoke-ok", app="smoke"))
    wait_for(lambda: _condition(batch, "smoke-ok", namespace, "Complete"), timeout=60, what="Job Complete")
    job = batch.read_namespaced_job_status("smoke-ok", namespace)
    assert job.status.succeeded == 1
    pods = client.CoreV1Api(kube.api_client()).list_namespaced_pod(namespace, label_selector="job-name=smoke-ok")
    assert [p.status.phase for p in pods.items] == ["Succeeded"]
    assert pods.items[0].spec.node_name.startswith("kwok-node-")


def test_failing_pod_fails_job_and_backoff_limit_is_respected(kube, namespace):
    batch = client.BatchV1Api(kube.api_client())
    batch.create_namespaced_job(namespace, _job("smoke-fail", app="ksr-test-fail", backoff_limit=1))
    cond = wait_for(lambda: _condition(batch, "smoke-fail", namespace, "Failed"), timeout=90, what="Job Failed")
    assert cond.reason == "BackoffLimitExceeded"
    job = batch.read_namespaced_job_status("smoke-fail", namespace)
    assert job.status.failed == 2  # the first pod and exactly one retry
    pods = client.CoreV1Api(kube.api_client()).list_namespaced_pod(namespace, label_selector="job-name=smoke-fail")
    assert sorted(p.status.phase for p in pods.items) == ["Failed", "Failed"]
    terminated = pods.items[0].status.container_statuses[0].state.terminated
    assert terminated.exit_code == 1


def test_rbac_forbids_until_bound(kube, namespace):
    sa_api = kube.service_account_client(namespace, "job-maker")
    sa_batch = client.BatchV1Api(sa_api)
    with pytest.raises(client.ApiException) as denied:
        sa_batch.create_namespaced_job(namespace, _job("rbac-job", app="smoke"))
    assert denied.value.status == 403

    rbac = client.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "job-maker"},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "job-maker"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "job-maker"},
            "subjects": [{"kind": "ServiceAccount", "name": "job-maker", "namespace": namespace}],
        },
    )

    def created() -> bool:  # the RBAC authorizer's cache catches up within moments
        try:
            sa_batch.create_namespaced_job(namespace, _job("rbac-job", app="smoke"))
            return True
        except client.ApiException as e:
            if e.status != 403:
                raise
            return False

    wait_for(created, timeout=10, what="Job creation allowed after the RoleBinding")


def test_lease_update_with_stale_resource_version_conflicts(kube, namespace):
    coord = client.CoordinationV1Api(kube.api_client())
    lease = coord.create_namespaced_lease(
        namespace, {"metadata": {"name": "smoke-lease"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    )
    stale = lease.metadata.resource_version
    lease.spec.holder_identity = "b"
    coord.replace_namespaced_lease("smoke-lease", namespace, lease)
    lease.spec.holder_identity = "c"
    lease.metadata.resource_version = stale
    with pytest.raises(client.ApiException) as conflict:
        coord.replace_namespaced_lease("smoke-lease", namespace, lease)
    assert conflict.value.status == 409
    assert coord.read_namespaced_lease("smoke-lease", namespace).spec.holder_identity == "b"
