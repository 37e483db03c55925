"""With RBAC on, get/create/update on leases in its own namespace is all a candidate needs."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.support.election_candidate import Candidate, assert_no_overlap, leaders
from tests.support.ports import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
VERBS = ["get", "create", "update"]


def service_account_kubeconfig(kube: Any, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `name` with a bound token."""
    token = kube.service_account_client(namespace, name).configuration.api_key["authorization"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [
                    {"name": "bed", "cluster": {"server": kube.server, "certificate-authority": kube.ca_file}}
                ],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": "bed", "user": name, "namespace": namespace}}],
            }
        )
    )
    return path


def grant_lease_access(kube: Any, namespace: str, account: str) -> None:
    rbac = k8s.RbacAuthorizationV1Api(kube.api_client())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "ksr-leader-election"},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": VERBS}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "ksr-leader-election"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ksr-leader-election"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def can_i(kube: Any, namespace: str, account: str, verb: str, ns: str | None = None) -> bool:
    review = k8s.AuthorizationV1Api(kube.api_client()).create_subject_access_review(
        {
            "spec": {
                "user": f"system:serviceaccount:{namespace}:{account}",
                "resourceAttributes": {
                    "group": "coordination.k8s.io",
                    "resource": "leases",
                    "verb": verb,
                    "namespace": ns or namespace,
                },
            }
        }
    )
    return bool(review.status.allowed)


def test_get_create_update_on_leases_is_enough(kube: Any, namespace: str, tmp_path: Path) -> None:
    grant_lease_access(kube, namespace, "elector")
    kubeconfig = service_account_kubeconfig(kube, namespace, "elector", tmp_path / "sa.kubeconfig")
    # the account really is that narrow
    wait_for(
        lambda: all(can_i(kube, namespace, "elector", v) for v in VERBS), timeout=10, what="the Role to take effect"
    )
    for verb in ("list", "watch", "patch", "delete"):
        assert not can_i(kube, namespace, "elector", verb), verb
    assert not can_i(kube, namespace, "elector", "get", ns="default")

    lock_args = ["--lock", "lease", "--kubeconfig", str(kubeconfig), "--namespace", namespace, "--name", "ksr-leader"]
    cands = [
        Candidate.make(
            f"sa-{i}", tmp_path, lock_args, lease=LEASE, renew=RENEW, retry=RETRY, request_timeout=1.0
        ).start()
        for i in (1, 2)
    ]
    try:
        first = wait_for(
            lambda: (ls := leaders(cands)) and len(ls) == 1 and ls[0],
            timeout=60,
            what="a leader (create) running as the ServiceAccount",
        )
        wait_for(lambda: len(first.lines("sample")) > 40, timeout=10, what="some renewals (update)")
        assert first.leading_now()
        other = next(c for c in cands if c is not first)
        termed = time.monotonic()
        assert first.terminate() == 0  # release: update
        wait_for(lambda: other.started_after(termed), timeout=RETRY + 5, what="takeover (get + update)")
        assert_no_overlap(cands)
        logs = "".join(c.log_text() for c in cands)
        # A refused verb shows as an HTTP status, never in a timestamp's milliseconds.
        refused = re.findall(r"\(403\)|Forbidden", logs)
        assert not refused, logs[-2000:]
        lease = k8s.CoordinationV1Api(kube.api_client()).read_namespaced_lease("ksr-leader", namespace)
        assert lease.spec.holder_identity == other.identity and lease.spec.lease_transitions >= 1
    finally:
        for c in cands:
            c.close()


def test_without_the_role_a_candidate_never_leads_and_says_why(kube: Any, namespace: str, tmp_path: Path) -> None:
    kubeconfig = service_account_kubeconfig(kube, namespace, "nobody", tmp_path / "nobody.kubeconfig")
    c = Candidate.make(
        "nobody",
        tmp_path,
        ["--lock", "lease", "--kubeconfig", str(kubeconfig), "--namespace", namespace],
        lease=LEASE,
        renew=RENEW,
        retry=RETRY,
        request_timeout=1.0,
    ).start()
    try:
        wait_for(lambda: "403" in c.log_text(), timeout=30, what="a 403 in the candidate's log")
        wait_for(lambda: len(c.lines("sample")) > 20, timeout=10, what="samples")
        assert not any(r["leading"] for r in c.lines())
        assert c.alive()  # it keeps trying: permissions may be granted later
        c.signal(signal.SIGTERM)
        assert c.proc is not None and c.proc.wait(timeout=10) == 0
    finally:
        c.close()
