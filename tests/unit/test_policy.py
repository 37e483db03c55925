"""Policy on top of a valid message: namespaces, images, envRefs, service accounts, webhooks."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

import pytest

from runner.errors import InvalidMessage, PolicyRefused
from runner.message import parse_message
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from tests.support.messages import VALID, variant

DNS = {
    "callback.example": ["93.184.216.34"],
    "internal.example": ["10.1.2.3"],
    "rebind.example": ["93.184.216.34", "127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
}


def resolver(host: str, port: int) -> Sequence[str]:
    if host == "flaky.example":
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return DNS[host]


def settings(**env: str) -> Settings:
    return Settings.from_env({"POD_NAME": "r0", "POD_NAMESPACE": "default", **env})


def check(doc: dict[str, Any], s: Settings | None = None) -> None:
    check_policy(parse_message(json.dumps(doc)), s or settings(), resolver=resolver)


def test_design_example_is_allowed_by_default() -> None:
    check(VALID)


@pytest.mark.parametrize(
    "env, path, value",
    [
        ({"KSR_ALLOWED_NAMESPACES": "default,batch"}, "job.namespace", "batch"),
        ({"KSR_ALLOWED_NAMESPACES": "*"}, "job.namespace", "anything"),
        ({"KSR_ALLOWED_IMAGES": "registry.example/,busybox:"}, "job.image", "registry.example/team/app:1"),
        ({"KSR_ALLOWED_ENVREFS": "cm,creds"}, "job.envRef", [{"name": "creds", "type": "secret"}]),
        ({"KSR_ALLOWED_SERVICE_ACCOUNTS": "builder"}, "job.serviceAccount", "builder"),
        ({"KSR_ALLOWED_SERVICE_ACCOUNTS": "*"}, "job.serviceAccount", "anyone"),
        ({"KSR_WEBHOOK_ALLOW": "10.0.0.0/8"}, "webhook", {"url": "http://internal.example/h"}),
        ({"KSR_WEBHOOK_ALLOW": "internal.example"}, "webhook", {"url": "http://internal.example/h"}),
        ({"KSR_WEBHOOK_ALLOW": "127.0.0.1"}, "webhook", {"url": "http://127.0.0.1:8000/h"}),
        ({"KSR_WEBHOOK_ALLOW": "::1"}, "webhook", {"url": "http://[::1]:8000/h"}),
        ({}, "webhook", {"url": "https://callback.example/hook?x=1"}),
        ({}, "webhook", {"url": "http://flaky.example/h"}),  # resolver down: checked again at send time
        ({}, "job.ttlSecondsAfterFinished", 604799),
    ],
)
def test_allowed(env: dict[str, str], path: str, value: Any) -> None:
    check(variant(path, value), settings(**env))


@pytest.mark.parametrize(
    "env, path, value, field, fragment",
    [
        ({}, "job.namespace", "kube-system", "job.namespace", "'kube-system' is not allowed (allowed: default)"),
        ({"KSR_ALLOWED_IMAGES": "registry.example/"}, "job.image", "busybox:latest", "job.image", "allowed prefix"),
        (
            {"KSR_ALLOWED_IMAGES": "registry.example/"},
            "job.image",
            "registry.example.evil/x",
            "job.image",
            "allowed prefix",
        ),
        (
            {"KSR_ALLOWED_ENVREFS": "cm"},
            "job.envRef",
            [{"name": "cm", "type": "configmap"}, {"name": "db", "type": "secret"}],
            "job.envRef[1].name",
            "secret 'db' is not allowed",
        ),
        (
            {},
            "job.serviceAccount",
            "cluster-admin",
            "job.serviceAccount",
            "'cluster-admin' is not allowed (allowed: default)",
        ),
        (
            {"KSR_STATE_TTL": "3600"},
            "job.ttlSecondsAfterFinished",
            3600,
            "job.ttlSecondsAfterFinished",
            "less than KSR_STATE_TTL",
        ),
        ({}, "webhook", {"url": "http://169.254.169.254/latest/meta-data"}, "webhook.url", "metadata"),
        ({}, "webhook", {"url": "http://10.0.0.1/h"}, "webhook.url", "private"),
        ({}, "webhook", {"url": "http://127.0.0.1:8000/h"}, "webhook.url", "loopback"),
        ({}, "webhook", {"url": "http://[::1]/h"}, "webhook.url", "loopback"),
        ({}, "webhook", {"url": "http://[::ffff:10.0.0.1]/h"}, "webhook.url", "IPv4-mapped"),
        ({}, "webhook", {"url": "http://[fd12::1]/h"}, "webhook.url", "unique local"),
        ({}, "webhook", {"url": "http://100.64.0.5/h"}, "webhook.url", "carrier-grade NAT"),
        ({}, "webhook", {"url": "http://0.0.0.0/h"}, "webhook.url", "unspecified"),
        ({}, "webhook", {"url": "http://internal.example/h"}, "webhook.url", "'internal.example' resolves to 10.1.2.3"),
        ({}, "webhook", {"url": "http://rebind.example/h"}, "webhook.url", "127.0.0.1, a loopback address"),
        ({}, "webhook", {"url": "http://metadata.example/h"}, "webhook.url", "metadata"),
        ({}, "webhook", {"url": "http://nowhere.example/h"}, "webhook.url", "does not resolve"),
        ({}, "webhook", {"url": "http://user:pw@callback.example/h"}, "webhook.url", "credentials"),
        ({"KSR_WEBHOOK_ALLOW": "10.9.0.0/16"}, "webhook", {"url": "http://10.0.0.1/h"}, "webhook.url", "private"),
    ],
)
def test_refused(env: dict[str, str], path: str, value: Any, field: str, fragment: str) -> None:
    with pytest.raises(PolicyRefused) as caught:
        check(variant(path, value), settings(**env))
    problems = dict(caught.value.problems)
    assert field in problems and fragment in problems[field], caught.value
    assert isinstance(caught.value, InvalidMessage)  # dead-lettered the same way


def test_every_refusal_is_reported() -> None:
    doc = variant("job.namespace", "other")
    doc["job"]["image"] = "evil/img"
    doc["webhook"] = {"url": "http://10.0.0.1/"}
    with pytest.raises(PolicyRefused) as caught:
        check(doc, settings(KSR_ALLOWED_IMAGES="good/"))
    assert [f for f, _ in caught.value.problems] == ["job.namespace", "job.image", "webhook.url"]


# -- the runner's own ConfigMaps and Secrets (issue 10 §7) -------------------------------------

OWN = {
    "POD_NAMESPACE": "ksr",
    "KSR_ALLOWED_NAMESPACES": "ksr,jobs",
    "KSR_PROTECTED_NAMES": "ksr-runner,jobs/shared-creds",
}


def in_namespace(namespace: str, **job: Any) -> dict[str, Any]:
    doc = variant("job.namespace", namespace)
    doc["job"].update(job)
    return doc


@pytest.mark.parametrize("allowed", ["", "ksr-runner", "*"])
@pytest.mark.parametrize("kind", ["secret", "configmap"])
def test_envref_naming_the_runners_own_config_is_refused_whatever_the_allow_list(allowed: str, kind: str) -> None:
    env = {**OWN, "KSR_ALLOWED_ENVREFS": allowed}
    doc = in_namespace("ksr", envRef=[{"name": "ksr-runner", "type": kind}])
    with pytest.raises(PolicyRefused) as caught:
        check(doc, settings(**env))
    assert dict(caught.value.problems)["job.envRef[0].name"] == (
        f"{kind} 'ksr-runner' in namespace 'ksr' belongs to the runner itself (KSR_PROTECTED_NAMES)"
    )


def test_a_volume_claim_naming_a_protected_name_is_refused() -> None:
    doc = in_namespace("jobs", envRef=[], volume={"mountPath": "/data", "pvc": "shared-creds"})
    with pytest.raises(PolicyRefused) as caught:
        check(doc, settings(**OWN))
    assert "KSR_PROTECTED_NAMES" in dict(caught.value.problems)["job.volume.pvc"]


def test_a_qualified_protected_name_holds_in_its_namespace_only() -> None:
    # "ksr-runner" is protected in every namespace, "jobs/shared-creds" in "jobs" only.
    with pytest.raises(PolicyRefused):
        check(in_namespace("jobs", envRef=[{"name": "ksr-runner", "type": "secret"}]), settings(**OWN))
    check(in_namespace("ksr", envRef=[], volume={"mountPath": "/d", "pvc": "shared-creds"}), settings(**OWN))


def test_strict_namespaces_need_envrefs_listed_even_when_the_list_is_empty() -> None:
    strict = settings(**OWN, KSR_STRICT_ENVREF_NAMESPACES="ksr")
    with pytest.raises(PolicyRefused) as caught:
        check(in_namespace("ksr", envRef=[{"name": "cm", "type": "configmap"}]), strict)
    assert dict(caught.value.problems)["job.envRef[0].name"] == (
        "configmap 'cm' is not allowed in namespace 'ksr' (KSR_STRICT_ENVREF_NAMESPACES; listed in "
        "KSR_ALLOWED_ENVREFS: none)"
    )
    check(in_namespace("jobs", envRef=[{"name": "cm", "type": "configmap"}]), strict)  # not strict there
    listed = settings(**OWN, KSR_STRICT_ENVREF_NAMESPACES="ksr", KSR_ALLOWED_ENVREFS="cm")
    check(in_namespace("ksr", envRef=[{"name": "cm", "type": "configmap"}]), listed)


def test_an_allowed_host_resolving_to_the_metadata_address_is_refused() -> None:
    s = settings(KSR_WEBHOOK_ALLOW="metadata.example,*.example")
    with pytest.raises(PolicyRefused) as caught:
        check(variant("webhook", {"url": "http://metadata.example/h"}), s)
    assert "169.254.169.254, the cloud metadata address" in dict(caught.value.problems)["webhook.url"]
    check(variant("webhook", {"url": "http://metadata.example/h"}), settings(KSR_WEBHOOK_ALLOW="169.254.169.254"))
