"""Message parsing and validation, table-driven: each bad row names the field it must blame."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.errors import InvalidMessage
from runner.message import (
    EnvRef,
    EnvVar,
    NodeSelector,
    Toleration,
    Volume,
    parse_entry,
    parse_message,
)
from tests.support.messages import DELETE, VALID, variant


def test_the_design_example_parses() -> None:
    m = parse_message(json.dumps(VALID).encode())
    assert m.id == VALID["id"] and m.service == "example" and m.webhook_url == "http://callback.example/hook"
    j = m.job
    assert (j.prefix_name, j.namespace, j.image) == ("my-job", "default", "busybox:latest")
    assert j.command == ("/bin/sh", "-c", "echo hi") and j.args == ()
    assert (j.ttl_seconds_after_finished, j.backoff_limit, j.active_deadline_seconds) == (60, 0, 600)
    assert j.service_account == "default" and not j.gpu_enable and j.gpu_number == 1
    assert j.env == (EnvVar("A", "b"),) and j.env_ref == (EnvRef("cm", "configmap"),)
    assert dict(j.limits) == {"cpu": "1", "memory": "512Mi"} and dict(j.requests) == {}
    assert j.node_selector == NodeSelector("kubernetes.io/hostname", "n1")
    assert j.toleration == Toleration("k", "v", None)
    assert j.volume == Volume("/workdir", "claim")
    assert m.raw["job"]["prefixName"] == "my-job"


def test_minimal_message() -> None:
    m = parse_message('{"id":"a1","service":"s","job":{"prefixName":"p","namespace":"n","image":"i"}}')
    assert m.webhook_url is None and m.job.command == () and m.job.ttl_seconds_after_finished is None
    assert m.job.backoff_limit is None and m.job.volume is None and m.job.gpu_number == 1


@pytest.mark.parametrize(
    "path, value",
    [
        ("job.ttlSecondsAfterFinished", 31),
        ("job.activeDeadlineSeconds", 60),
        ("job.activeDeadlineSeconds", 86400),
        ("job.gpuNumber", 4),
        ("job.backoffLimit", 6),
        ("job.activeDeadlineSeconds", 600.0),  # JSON from some producers: an integral float
        (
            "job.resources",
            {"limits": {"cpu": 2, "nvidia.com/gpu": "1"}, "requests": {"memory": "1.5Gi", "cpu": "250m"}},
        ),
        ("job.toleration", {"key": "gpu", "effect": "NoSchedule"}),
        ("job.toleration", {"key": "gpu", "value": "", "effect": "NoExecute"}),
        ("job.envRef", [{"name": "creds", "type": "Secret"}]),
        ("job.unknownField", "ignored"),
        ("webhook", None),
        ("job.serviceAccount", "team.builder"),
        ("job.nodeSelector", {"matchKey": "pool", "matchValue": ""}),
        ("id", "job:2024-01-01T00:00:00Z@example"),
        ("job.env", [{"name": "EMPTY"}]),
    ],
)
def test_good_variants(path: str, value: Any) -> None:
    parse_message(json.dumps(variant(path, value)))


@pytest.mark.parametrize(
    "path, value, field, fragment",
    [
        # required fields
        ("id", DELETE, "id", "required"),
        ("service", DELETE, "service", "required"),
        ("job", DELETE, "job", "required"),
        ("job.prefixName", DELETE, "job.prefixName", "required"),
        ("job.namespace", DELETE, "job.namespace", "required"),
        ("job.image", DELETE, "job.image", "required"),
        ("job.image", None, "job.image", "required"),
        ("id", "", "id", "must not be empty"),
        # types
        ("id", 42, "id", "must be a string, got number"),
        ("service", ["a"], "service", "must be a string, got array"),
        ("job", "run it", "job", "must be an object, got string"),
        ("job.command", "echo hi", "job.command", "must be an array of strings"),
        ("job.command", ["echo", 1], "job.command[1]", "must be a string, got number"),
        ("job.args", {"a": 1}, "job.args", "must be an array of strings"),
        ("job.env", {"A": "b"}, "job.env", "must be an array"),
        ("job.env", ["A=b"], "job.env[0]", "must be an object"),
        ("job.env", [{"name": "A", "value": 1}], "job.env[0].value", "must be a string"),
        ("job.env", [{"value": "x"}], "job.env[0].name", "required"),
        ("job.env", [{"name": "1A=", "value": "x"}], "job.env[0].name", "environment variable name"),
        ("job.envRef", [{"name": "cm", "type": "volume"}], "job.envRef[0].type", "configmap or secret"),
        ("job.envRef", [{"name": "Bad_Name", "type": "secret"}], "job.envRef[0].name", "DNS-1123"),
        ("job.envRef", [{"name": "cm"}], "job.envRef[0].type", "required"),
        ("job.gpuEnable", "yes", "job.gpuEnable", "must be true or false"),
        ("job.backoffLimit", "0", "job.backoffLimit", "must be an integer, got string '0'"),
        ("job.backoffLimit", True, "job.backoffLimit", "must be an integer, got boolean"),
        ("job.activeDeadlineSeconds", 600.5, "job.activeDeadlineSeconds", "must be an integer"),
        ("job.resources", [], "job.resources", "must be an object"),
        ("job.resources", {"limits": {"cpu": 0.5}}, "job.resources.limits.cpu", "quantity string"),
        ("job.resources", {"limits": {"memory": "lots"}}, "job.resources.limits.memory", "quantity"),
        ("job.resources", {"requests": {"cpu": "-1"}}, "job.resources.requests.cpu", "quantity"),
        ("job.resources", {"limits": {"bad name": "1"}}, "job.resources.limits.bad name", "resource name"),
        ("job.nodeSelector", {"matchValue": "n1"}, "job.nodeSelector.matchKey", "required"),
        (
            "job.nodeSelector",
            {"matchKey": "k", "matchValue": "has space"},
            "job.nodeSelector.matchValue",
            "label value",
        ),
        ("job.toleration", {"value": "v"}, "job.toleration.key", "required"),
        ("job.toleration", {"key": "k", "effect": "Sometimes"}, "job.toleration.effect", "NoSchedule"),
        ("job.volume", {"mountPath": "relative", "pvc": "claim"}, "job.volume.mountPath", "absolute path"),
        ("job.volume", {"mountPath": "/a/../etc", "pvc": "claim"}, "job.volume.mountPath", "'..'"),
        ("job.volume", {"mountPath": "/data"}, "job.volume.pvc", "required"),
        ("webhook", "http://x", "webhook", "must be an object"),
        ("webhook", {"url": "ftp://x/y"}, "webhook.url", "http:// or https://"),
        ("webhook", {"url": "http:///nohost"}, "webhook.url", "with a host"),
        ("webhook", {"url": 5}, "webhook.url", "must be a string"),
        # ranges
        ("job.ttlSecondsAfterFinished", 30, "job.ttlSecondsAfterFinished", "must be > 30, got 30"),
        ("job.activeDeadlineSeconds", 59, "job.activeDeadlineSeconds", "must be 60..86400, got 59"),
        ("job.activeDeadlineSeconds", 86401, "job.activeDeadlineSeconds", "must be 60..86400, got 86401"),
        ("job.gpuNumber", 9, "job.gpuNumber", "must be 1..4, got 9"),
        ("job.gpuNumber", 0, "job.gpuNumber", "must be 1..4, got 0"),
        ("job.backoffLimit", -1, "job.backoffLimit", "must be >= 0, got -1"),
        # names
        ("job.prefixName", "My_Job", "job.prefixName", "DNS-1123 label"),
        ("job.prefixName", "-job", "job.prefixName", "DNS-1123 label"),
        ("job.prefixName", "a" * 64, "job.prefixName", "at most 63"),
        ("job.namespace", "kube.system", "job.namespace", "DNS-1123 label"),
        ("job.serviceAccount", "Admin", "job.serviceAccount", "DNS-1123 subdomain"),
        ("job.image", "busybox latest", "job.image", "without spaces"),
        ("id", "has space", "id", "letters, digits"),
        ("id", "../../etc", "id", "letters, digits"),
        ("id", "a\nb", "id", "letters, digits"),
        ("id", "x" * 254, "id", "at most 253"),
        ("service", "-svc", "service", "label value"),
        ("service", "s" * 64, "service", "at most 63"),
    ],
)
def test_bad_messages_name_the_field(path: str, value: Any, field: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(variant(path, value)))
    problems = dict(caught.value.problems)
    assert field in problems, caught.value
    assert fragment in problems[field], caught.value
    assert f"{field}: " in str(caught.value)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"not json", "payload: not valid JSON ("),
        (b"", "payload: not valid JSON ("),
        (b'{"id": "a",', "payload: not valid JSON ("),
        (b'{"id": NaN}', "payload: not valid JSON ("),
        (b"\xff\xfe{}", "payload: not valid UTF-8"),
        (b"[1, 2]", "payload: must be a JSON object, got array"),
        (b'"text"', "payload: must be a JSON object, got string"),
        (b"null", "payload: must be a JSON object, got null"),
    ],
)
def test_bad_payloads(payload: bytes, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(payload)
    assert str(caught.value).startswith(fragment)
    assert caught.value.field == "payload"


def test_size_cap() -> None:
    big = variant("job.args", ["x" * 70000])
    with pytest.raises(InvalidMessage, match=r"^payload: larger than 65536 bytes"):
        parse_message(json.dumps(big))
    parse_message(json.dumps(big), max_bytes=1 << 20)


def test_all_problems_are_reported_first_in_field() -> None:
    doc = variant("job.gpuNumber", 9)
    doc["job"]["image"] = ""
    with pytest.raises(InvalidMessage) as caught:
        parse_message(json.dumps(doc))
    err = caught.value
    assert str(err) == "job.image: must not be empty; job.gpuNumber: must be 1..4, got 9"
    assert (err.field, err.reason) == ("job.image", "must not be empty")


def test_entry_fields() -> None:
    assert parse_entry({b"payload": json.dumps(VALID).encode()}).id == VALID["id"]
    assert parse_entry({"payload": json.dumps(VALID)}).service == "example"
    with pytest.raises(InvalidMessage, match=r"^payload: missing \(the entry has data, x\)"):
        parse_entry({b"x": b"1", b"data": b"2"})


@pytest.mark.parametrize(
    "path, value",
    [
        # Python's `$` also matches before a final newline: a pattern must hold to the end.
        ("id", "a1\n"),
        ("service", "example\n"),
        ("job.prefixName", "my-job\n"),
        ("job.namespace", "default\n"),
        ("job.serviceAccount", "default\n"),
        ("job.env", [{"name": "A\n", "value": "b"}]),
        ("job.envRef", [{"name": "cm\n", "type": "configmap"}]),
        ("job.nodeSelector", {"matchKey": "kubernetes.io/hostname\n", "matchValue": "n1"}),
        ("job.volume", {"mountPath": "/workdir", "pvc": "claim\n"}),
        ("job.resources", {"limits": {"cpu\n": "1"}}),
        ("job.resources", {"limits": {"cpu": "1\n"}}),
        # Python's `\d` is any Unicode digit; Kubernetes quantities and dates are ASCII.
        ("job.resources", {"limits": {"cpu": "\u0663"}}),
        ("runAt", "\u0662026-12-01T10:00:00Z"),
    ],
)
def test_a_pattern_holds_to_the_last_character_and_only_ascii_digits(path: str, value: Any) -> None:
    with pytest.raises(InvalidMessage) as e:
        parse_message(json.dumps(variant(path, value)))
    assert e.value.field.startswith(path), e.value.problems
