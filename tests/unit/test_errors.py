"""runner.errors: the one vocabulary, translation of library errors, Retry-After parsing."""

from __future__ import annotations

import email.utils
import json
from typing import Any

import pytest
import redis
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from runner.errors import (
    ConfigError,
    HostUnresolvable,
    InvalidMessage,
    KsrError,
    KubeApiError,
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeTransientError,
    PolicyRefused,
    RedisUnavailable,
    WebhookRefused,
    kube_error_from,
    parse_retry_after,
    redis_error_from,
)

NOW = 1_700_000_000.0


# -- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", None),  # negative: ignored
        ("nan", None),
        ("soon", None),
        ("Mon, 32 Foo 2024 99:00:00 GMT", None),
    ],
)
def test_parse_retry_after_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date_is_relative_to_now() -> None:
    in_ten = email.utils.formatdate(NOW + 10, usegmt=True)
    assert parse_retry_after(in_ten, now=NOW) == pytest.approx(10.0)
    past = email.utils.formatdate(NOW - 100, usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0  # a date in the past: retry now, never negative


# -- kube_error_from ------------------------------------------------------------------------


def api_exception(
    status: int, body: dict[str, Any] | str | None = None, headers: Any = None, reason: str = "Phrase"
) -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps(body) if isinstance(body, dict) else body
    e.headers = headers
    return e


@pytest.mark.parametrize(
    "status, cls, retryable",
    [
        (409, KubeConflict, False),
        (422, KubeInvalid, False),
        (403, KubeForbidden, False),
        (404, KubeNotFound, False),
        (400, KubeApiError, False),
        (401, KubeApiError, False),
        (408, KubeTransientError, True),
        (429, KubeTransientError, True),
        (500, KubeTransientError, True),
        (503, KubeTransientError, True),
        (504, KubeTransientError, True),
    ],
)
def test_status_codes_map_to_classes(status: int, cls: type[KubeApiError], retryable: bool) -> None:
    error = kube_error_from(api_exception(status))
    assert type(error) is cls
    assert error.status == status and error.retryable is retryable
    assert isinstance(error, KsrError) and error.exit_code == 4


def test_status_body_gives_reason_message_and_details() -> None:
    body = {
        "kind": "Status",
        "reason": "AlreadyExists",
        "message": 'jobs.batch "x" already exists',
        "details": {"name": "x", "kind": "jobs"},
    }
    error = kube_error_from(api_exception(409, body))
    assert error.reason == "AlreadyExists"
    assert error.message == 'jobs.batch "x" already exists'
    assert error.details == {"name": "x", "kind": "jobs"}
    assert str(error) == 'Kubernetes API 409 AlreadyExists: jobs.batch "x" already exists'


def test_invalid_keeps_the_apiservers_words() -> None:
    words = 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
    error = kube_error_from(api_exception(422, {"reason": "Invalid", "message": words}))
    assert isinstance(error, KubeInvalid) and error.message == words


@pytest.mark.parametrize("body", [None, "", "not json", "[1, 2]", b'{"reason": "Conflict"'])
def test_a_body_that_is_not_a_status_falls_back_to_the_http_reason(body: Any) -> None:
    e = api_exception(409, reason="Conflict")
    e.body = body
    error = kube_error_from(e)
    assert isinstance(error, KubeConflict)
    assert error.reason == "Conflict" and error.message == "Conflict" and error.details == {}


def test_bytes_body_is_decoded() -> None:
    e = api_exception(404)
    e.body = json.dumps({"reason": "NotFound", "message": "gone"}).encode()  # type: ignore[assignment]
    error = kube_error_from(e)
    assert isinstance(error, KubeNotFound) and error.reason == "NotFound" and error.message == "gone"


@pytest.mark.parametrize("headers", [{"Retry-After": "3"}, {"retry-after": "3"}])
def test_retry_after_header_is_read_case_insensitively(headers: dict[str, str]) -> None:
    error = kube_error_from(api_exception(429, {"reason": "TooManyRequests"}, headers))
    assert isinstance(error, KubeTransientError) and error.retry_after == 3.0


def test_urllib3_header_dict_and_missing_header() -> None:
    from urllib3 import HTTPHeaderDict

    assert kube_error_from(api_exception(503, headers=HTTPHeaderDict({"RETRY-AFTER": "2"}))).retry_after == 2.0
    assert kube_error_from(api_exception(503, headers={"X-Other": "1"})).retry_after is None
    assert kube_error_from(api_exception(503)).retry_after is None


def test_status_zero_means_no_answer() -> None:
    e = ApiException(status=0, reason="connection reset")
    error = kube_error_from(e)
    assert isinstance(error, KubeTransientError) and error.status is None
    assert str(error).startswith("Kubernetes API no response ")


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.ReadTimeoutError(None, "/apis", "read timed out"),  # type: ignore[arg-type]
        urllib3.exceptions.ProtocolError("connection aborted"),
        urllib3.exceptions.MaxRetryError(None, "/apis"),  # type: ignore[arg-type]
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_transport_errors_are_transient(exc: BaseException) -> None:
    error = kube_error_from(exc)
    assert isinstance(error, KubeTransientError) and error.retryable and error.status is None
    assert error.reason == type(exc).__name__


def test_unknown_errors_are_wrapped_not_retried_and_ours_pass_through() -> None:
    error = kube_error_from(ValueError("odd"))
    assert type(error) is KubeApiError and not error.retryable and error.message == "odd"
    ours = KubeConflict(409, "Conflict", "x")
    assert kube_error_from(ours) is ours


# -- the rest of the vocabulary ---------------------------------------------------------------


def test_config_error_names_the_variable_and_exits_2() -> None:
    error = ConfigError("KSR_GROUP", "must not be empty")
    assert str(error) == "KSR_GROUP: must not be empty"
    assert (error.variable, error.problem, error.exit_code) == ("KSR_GROUP", "must not be empty", 2)


def test_redis_errors_are_wrapped_with_their_cause_type() -> None:
    error = redis_error_from(redis.ConnectionError("Connection refused"))
    assert isinstance(error, RedisUnavailable) and error.exit_code == 3
    assert str(error) == "Redis unavailable: ConnectionError: Connection refused"


def test_invalid_message_renders_every_problem_and_keeps_the_first() -> None:
    error = InvalidMessage.from_problems([("job.gpuNumber", "must be 1..4, got 9"), ("id", "required")])
    assert str(error) == "job.gpuNumber: must be 1..4, got 9; id: required"
    assert (error.field, error.reason) == ("job.gpuNumber", "must be 1..4, got 9")
    assert len(error.problems) == 2 and error.exit_code == 1


def test_policy_refusal_is_an_invalid_message() -> None:
    error = PolicyRefused("job.namespace", "namespace 'kube-system' is not allowed")
    assert isinstance(error, InvalidMessage) and str(error) == "job.namespace: namespace 'kube-system' is not allowed"


def test_webhook_refusals() -> None:
    refused = WebhookRefused("http://10.0.0.1/", "a private address")
    assert str(refused) == "webhook http://10.0.0.1/: a private address" and refused.url == "http://10.0.0.1/"
    unresolvable = HostUnresolvable("http://nope.invalid/", "does not resolve", temporary=False)
    assert isinstance(unresolvable, WebhookRefused) and unresolvable.temporary is False
    assert unresolvable.problem == "does not resolve"
