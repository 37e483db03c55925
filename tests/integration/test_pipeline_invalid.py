"""Malformed and policy-violating messages go to `<stream>:dead` with a reason naming the
field, while the valid messages between them keep flowing (Jobs created, callbacks
delivered). Real Redis, the real control plane with kwok, a real RQ worker and receiver."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.store.deadletter import list_dead
from tests.support.kube import managed_jobs
from tests.support.messages import message
from tests.support.pipeline import base_env, rq_worker, runner_thread, xadd
from tests.support.ports import wait_for

pytestmark = pytest.mark.kube

STREAMS = ("ksr:jobs:critical", "ksr:jobs:default", "ksr:jobs:low")
MAX_BYTES = 2048


def _bad(
    ns: str, mid: str, *, drop: tuple[str, ...] = (), top: dict[str, Any] | None = None, **job: Any
) -> dict[str, Any]:
    """A message `mid` with job fields overridden by `job`, top-level fields by `top`, and
    the dotted paths in `drop` removed."""
    msg = message(mid, ns)
    msg["job"].update(job)
    msg.update(top or {})
    for path in drop:
        parent: Any = msg
        *head, last = path.split(".")
        for part in head:
            parent = parent[part]
        del parent[last]
    return msg


def bad_messages(ns: str) -> list[tuple[str, Any, str, str]]:
    """(label, payload (str, bytes, dict, or {"fields": ...} for an entry without payload),
    the field path the error must name, the reason)."""
    big = "x" * (MAX_BYTES + 1)
    return [
        # not JSON / not a message at all
        ("not-json", "this is not json", "payload", "invalid"),
        ("truncated-json", '{"id": "t1", "service": "s"', "payload", "invalid"),
        ("json-array", "[1, 2, 3]", "payload", "invalid"),
        ("json-nan", '{"id": NaN}', "payload", "invalid"),
        ("not-utf8", b"\xff\xfe{}", "payload", "invalid"),
        ("no-payload-field", {"fields": {"data": "{}"}}, "payload", "invalid"),
        ("oversize", _bad(ns, "big-1", command=["/bin/sh", "-c", big]), "payload", "invalid"),
        # missing required fields
        ("missing-id", _bad(ns, "x", drop=("id",)), "id", "invalid"),
        ("missing-service", _bad(ns, "m-svc", drop=("service",)), "service", "invalid"),
        ("missing-job", _bad(ns, "m-job", drop=("job",)), "job", "invalid"),
        ("missing-prefix", _bad(ns, "m-prefix", drop=("job.prefixName",)), "job.prefixName", "invalid"),
        ("missing-namespace", _bad(ns, "m-ns", drop=("job.namespace",)), "job.namespace", "invalid"),
        ("missing-image", _bad(ns, "m-image", drop=("job.image",)), "job.image", "invalid"),
        # wrong types
        ("id-number", _bad(ns, "x", top={"id": 12345}), "id", "invalid"),
        ("job-string", _bad(ns, "t-job", top={"job": "busybox"}), "job", "invalid"),
        ("command-string", _bad(ns, "t-cmd", command="echo hi"), "job.command", "invalid"),
        ("command-item-number", _bad(ns, "t-cmd-item", command=["/bin/sh", 1]), "job.command[1]", "invalid"),
        ("backoff-string", _bad(ns, "t-backoff", backoffLimit="3"), "job.backoffLimit", "invalid"),
        ("gpu-enable-string", _bad(ns, "t-gpu", gpuEnable="yes"), "job.gpuEnable", "invalid"),
        ("env-no-name", _bad(ns, "t-env", env=[{"value": "v"}]), "job.env[0].name", "invalid"),
        (
            "envref-type",
            _bad(ns, "t-envref", envRef=[{"name": "cm", "type": "volume"}]),
            "job.envRef[0].type",
            "invalid",
        ),
        (
            "cpu-quantity",
            _bad(ns, "t-cpu", resources={"limits": {"cpu": "lots"}}),
            "job.resources.limits.cpu",
            "invalid",
        ),
        (
            "webhook-scheme",
            _bad(ns, "t-hook", top={"webhook": {"url": "ftp://example.com/x"}}),
            "webhook.url",
            "invalid",
        ),
        (
            "toleration-effect",
            _bad(ns, "t-tol", toleration={"key": "k", "effect": "Sometimes"}),
            "job.toleration.effect",
            "invalid",
        ),
        (
            "mount-relative",
            _bad(ns, "t-mount", volume={"mountPath": "work", "pvc": "claim"}),
            "job.volume.mountPath",
            "invalid",
        ),
        # bad names
        ("prefix-uppercase", _bad(ns, "n-prefix", prefixName="Bad_Name"), "job.prefixName", "invalid"),
        ("namespace-bang", _bad(ns, "n-ns", namespace="ns!"), "job.namespace", "invalid"),
        ("service-space", _bad(ns, "n-svc", top={"service": "bad service"}), "service", "invalid"),
        ("id-space", _bad(ns, "x", top={"id": "has space"}), "id", "invalid"),
        # numbers out of range
        ("ttl-30", _bad(ns, "r-ttl", ttlSecondsAfterFinished=30), "job.ttlSecondsAfterFinished", "invalid"),
        ("deadline-59", _bad(ns, "r-dl-low", activeDeadlineSeconds=59), "job.activeDeadlineSeconds", "invalid"),
        ("deadline-86401", _bad(ns, "r-dl-high", activeDeadlineSeconds=86401), "job.activeDeadlineSeconds", "invalid"),
        ("gpu-9", _bad(ns, "r-gpu", gpuEnable=True, gpuNumber=9), "job.gpuNumber: must be 1..4, got 9", "invalid"),
        ("backoff-negative", _bad(ns, "r-backoff", backoffLimit=-1), "job.backoffLimit", "invalid"),
        # policy
        ("namespace-forbidden", _bad(ns, "p-ns", namespace="kube-system"), "job.namespace", "policy"),
        ("image-forbidden", _bad(ns, "p-image", image="evil.example/miner:1"), "job.image", "policy"),
        (
            "envref-forbidden",
            _bad(ns, "p-envref", envRef=[{"name": "prod-secrets", "type": "secret"}]),
            "job.envRef[0].name",
            "policy",
        ),
        ("service-account-forbidden", _bad(ns, "p-sa", serviceAccount="cluster-admin"), "job.serviceAccount", "policy"),
        (
            "ttl-over-state-ttl",
            _bad(ns, "p-ttl", ttlSecondsAfterFinished=3600),
            "job.ttlSecondsAfterFinished",
            "policy",
        ),
        (
            "webhook-metadata",
            _bad(ns, "p-meta", top={"webhook": {"url": "http://169.254.169.254/latest/meta-data"}}),
            "webhook.url",
            "policy",
        ),
        (
            "webhook-private",
            _bad(ns, "p-private", top={"webhook": {"url": "http://10.0.0.1/hook"}}),
            "webhook.url",
            "policy",
        ),
    ]


def _add(redis_client, stream: str, payload: Any) -> str:
    if isinstance(payload, dict) and "fields" in payload:
        return redis_client.xadd(stream, payload["fields"]).decode()
    if isinstance(payload, bytes):
        return redis_client.xadd(stream, {"payload": payload}).decode()
    return xadd(redis_client, stream, payload if isinstance(payload, str) else json.dumps(payload))


def test_malformed_and_refused_messages_are_dead_lettered_while_valid_ones_flow(
    redis_server, redis_client, kube, namespace, receiver
):
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_ALLOWED_IMAGES="busybox",
        KSR_ALLOWED_ENVREFS="app-config",
        KSR_MAX_MESSAGE_BYTES=str(MAX_BYTES),
    )
    cases = bad_messages(namespace)
    assert len(cases) >= 25
    expected: dict[tuple[str, str], tuple[str, str, str]] = {}  # (stream, entry id) -> (label, path, reason)
    valid: list[str] = []
    for n, (label, payload, path, reason) in enumerate(cases):
        stream = STREAMS[n % 3]
        expected[(stream, _add(redis_client, stream, payload))] = (label, path, reason)
        if n % 5 == 4:  # a valid message after every five bad ones
            mid = f"valid-{n:02d}"
            valid.append(mid)
            xadd(redis_client, STREAMS[n % 3], message(mid, namespace, webhook=receiver.url))

    def dead() -> dict[tuple[str, str], Any]:
        return {(d.original_stream, d.original_id): d for s in STREAMS for d in list_dead(redis_client, s, count=500)}

    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        try:
            wait_for(lambda: len(dead()) >= len(cases), timeout=60, what=f"{len(cases)} dead letters")
        except TimeoutError:
            got = dead()
            pytest.fail(f"not dead-lettered: {[v[0] for k, v in expected.items() if k not in got]}")
        receiver.wait_for_callbacks(valid, timeout=120, what="callbacks 0, 1, 2 for every valid message")
    letters = dead()
    assert set(letters) == set(expected), "exactly the bad entries are dead-lettered"
    problems = []
    for key, (label, path, reason) in expected.items():
        d = letters[key]
        if path not in d.error or d.reason != reason:
            problems.append(f"{label}: reason {d.reason!r} (want {reason!r}), error {d.error!r} (want {path!r})")
        assert d.original_stream + ":dead" in {s + ":dead" for s in STREAMS}
        assert d.deliveries == 1
    assert not problems, "\n".join(problems)
    # The oversize one names the limit; the not-JSON one keeps its payload byte for byte.
    by_label = {expected[k][0]: letters[k] for k in expected}
    assert f"larger than {MAX_BYTES} bytes" in by_label["oversize"].error
    assert by_label["not-json"].payload == b"this is not json"
    assert by_label["not-utf8"].payload == b"\xff\xfe{}"
    # The valid messages: one Job each, nothing for the bad ones; nothing left pending.
    jobs = managed_jobs(kube, namespace)
    assert sorted(j.metadata.annotations["kube-stream-runner/message-id"] for j in jobs) == sorted(valid)
    for s in STREAMS:
        assert redis_client.xpending(s, "ksr")["pending"] == 0
        assert redis_client.xlen(s + ":dead") == sum(1 for (st, _) in expected if st == s)
    # A refused message ends `dead` (no Job), which a corrected replay claims afresh.
    for mid in ("p-ns", "r-gpu", "p-meta"):
        assert redis_client.hmget(f"ksr:msg:{mid}", "state", "job_name") == [b"dead", None], mid


def test_apiserver_422_is_dead_lettered_with_its_words(redis_server, redis_client, kube, namespace, receiver):
    """Schema-valid, but the apiserver refuses it (requests above limits): dead letter with
    the apiserver's own message, and the messages around it still run."""
    env = base_env(redis_url=redis_server.url, namespace=namespace, kubeconfig=kube.kubeconfig)
    xadd(redis_client, STREAMS[1], message("before-422", namespace, webhook=receiver.url))
    bad_id = xadd(
        redis_client,
        STREAMS[1],
        message(
            "refused-422", namespace, webhook=receiver.url, resources={"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}
        ),
    )
    xadd(redis_client, STREAMS[1], message("after-422", namespace, webhook=receiver.url))
    with rq_worker(env), runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: list_dead(redis_client, STREAMS[1]), timeout=60, what="the 422 dead letter")
        receiver.wait_for_callbacks(
            ("before-422", "after-422"), timeout=90, what="callbacks of the messages around the refused one"
        )
    (d,) = list_dead(redis_client, STREAMS[1])
    assert d.original_id == bad_id
    assert d.reason == "api_rejected"
    assert "422" in d.error and "requests" in d.error, d.error
    assert "refused-422" not in receiver.statuses()  # no Job, so no callback at all
    # dead, no Job: a corrected replay runs (claim.lua claims a dead record afresh)
    assert redis_client.hmget("ksr:msg:refused-422", "state", "dead_reason", "job_name") == [
        b"dead",
        b"api_rejected",
        None,
    ]
    assert len(managed_jobs(kube, namespace)) == 2


def test_private_webhook_is_accepted_when_allowed(redis_server, redis_client, kube, namespace):
    """KSR_WEBHOOK_ALLOW=10.0.0.0/8 lets a 10.0.0.1 webhook through (the message dispatches);
    the metadata address stays refused. No RQ worker: the callback's arrival is not the point."""
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_WEBHOOK_ALLOW="127.0.0.1,10.0.0.0/8",
    )
    xadd(redis_client, STREAMS[1], message("private-ok", namespace, webhook="http://10.0.0.1/hook"))
    meta_id = xadd(
        redis_client, STREAMS[1], message("meta-refused", namespace, webhook="http://169.254.169.254/latest/meta-data")
    )
    with runner_thread(env, api_client=kube.api_client()):
        wait_for(lambda: [j for j in managed_jobs(kube, namespace)], timeout=60, what="the Job of private-ok")
        wait_for(lambda: list_dead(redis_client, STREAMS[1]), timeout=30, what="the metadata dead letter")
        record = wait_for(
            lambda: (
                redis_client.hgetall("ksr:msg:private-ok").get(b"cb_0") and redis_client.hgetall("ksr:msg:private-ok")
            ),
            timeout=30,
            what="callback 0 enqueued",
        )
    assert record[b"webhook"] == b"http://10.0.0.1/hook"
    (job,) = managed_jobs(kube, namespace)
    assert job.metadata.annotations["kube-stream-runner/message-id"] == "private-ok"
    (d,) = list_dead(redis_client, STREAMS[1])
    assert d.original_id == meta_id and d.reason == "policy" and "webhook.url" in d.error
