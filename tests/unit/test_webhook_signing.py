"""Callback bodies, Standard Webhooks headers and signatures, outcome classification, backoff."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from runner.backoff import delay as backoff_delay
from runner.callbacks.http import (
    OutcomeKind,
    build_headers,
    callback_body,
    classify,
    signature,
    verify,
    webhook_id,
)
from runner.lifecycle import CallbackStatus
from runner.settings import Settings

# The test vector published with the Standard Webhooks specification.
SPEC_KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_standard_webhooks_test_vector() -> None:
    assert (
        signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}', [SPEC_KEY])
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_whsec_secret_from_settings_signs_like_the_spec() -> None:
    keys = Settings.from_env(
        {"POD_NAME": "r", "KSR_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    ).callbacks.signing_keys
    assert keys == (SPEC_KEY,)


def test_body_and_id() -> None:
    body = callback_body("m-1", CallbackStatus.CREATED, {"jobId": "uid", "jobName": "p-abc"})
    assert json.loads(body) == {"id": "m-1", "status": 0, "detail": {"jobId": "uid", "jobName": "p-abc"}}
    assert body == b'{"id":"m-1","status":0,"detail":{"jobId":"uid","jobName":"p-abc"}}'
    assert webhook_id("m-1", CallbackStatus.EXCEPTION) == "m-1:99"
    assert json.loads(callback_body("m", 2, {"duration": 12.5}))["detail"] == {"duration": 12.5}


def test_headers_unsigned_and_signed() -> None:
    body = callback_body("m-1", 1, {"podId": "u", "podName": "p"})
    plain = build_headers("m-1:1", body, timestamp=1700000000)
    assert plain == {
        "content-type": "application/json",
        "user-agent": plain["user-agent"],
        "webhook-id": "m-1:1",
        "webhook-timestamp": "1700000000",
    }
    signed = build_headers("m-1:1", body, keys=[b"new", b"old"], timestamp=1700000000)
    sigs = signed["webhook-signature"].split(" ")
    assert len(sigs) == 2 and all(s.startswith("v1,") for s in sigs)
    assert sigs[0] == signature("m-1:1", 1700000000, body, [b"new"])


def test_retries_keep_the_id_and_renew_the_timestamp() -> None:
    body = callback_body("m", 2, {"duration": 1})
    a = build_headers(webhook_id("m", 2), body, keys=[b"k"], timestamp=100)
    b = build_headers(webhook_id("m", 2), body, keys=[b"k"], timestamp=160)
    assert a["webhook-id"] == b["webhook-id"] == "m:2"
    assert a["webhook-timestamp"] != b["webhook-timestamp"] and a["webhook-signature"] != b["webhook-signature"]


def test_verify_as_a_receiver() -> None:
    body = callback_body("m", 3, {"error": {"errorCode": 1, "message": "boom"}})
    headers = build_headers("m:3", body, keys=[b"new", b"old"], timestamp=1000)
    assert verify(body, headers, [b"old"], now=1000)  # a receiver that has not rotated yet
    assert verify(body, headers, [b"new"], now=1100)
    upper = {k.title(): v for k, v in headers.items()}
    assert verify(body, upper, [b"new"], now=1000)
    assert not verify(body + b" ", headers, [b"new"], now=1000)  # tampered body
    assert not verify(body, headers, [b"other"], now=1000)
    assert not verify(body, headers, [b"new"], now=1000 + 301)  # too old: replay
    assert not verify(body, {**headers, "webhook-id": "m:2"}, [b"new"], now=1000)
    assert not verify(body, {"webhook-id": "m:3"}, [b"new"], now=1000)


@pytest.mark.parametrize(
    "status, headers, kind, retry_after",
    [
        (200, {}, OutcomeKind.DELIVERED, None),
        (204, {}, OutcomeKind.DELIVERED, None),
        (410, {}, OutcomeKind.GONE, None),
        (429, {"Retry-After": "7"}, OutcomeKind.RETRY, 7.0),
        (503, {"Retry-After": "2.5"}, OutcomeKind.RETRY, 2.5),
        (500, {}, OutcomeKind.RETRY, None),
        (502, {"Retry-After": "soon"}, OutcomeKind.RETRY, None),
        (408, {}, OutcomeKind.RETRY, None),
        (301, {"Location": "http://10.0.0.1/"}, OutcomeKind.FAILED, None),
        (307, {}, OutcomeKind.FAILED, None),
        (400, {}, OutcomeKind.FAILED, None),
        (401, {}, OutcomeKind.FAILED, None),
        (404, {}, OutcomeKind.FAILED, None),
        (422, {}, OutcomeKind.FAILED, None),
    ],
)
def test_classify(status: int, headers: dict[str, str], kind: OutcomeKind, retry_after: float | None) -> None:
    outcome = classify(status, headers)
    assert (outcome.kind, outcome.status, outcome.retry_after) == (kind, status, retry_after)
    assert outcome.final is (kind is not OutcomeKind.RETRY)


def test_classify_retry_after_http_date() -> None:
    outcome = classify(503, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert outcome.retry_after is not None and outcome.retry_after > 1e9
    assert "redirect not followed" in classify(302, {"Location": "/x"}).detail


class Top:
    """A random source that always picks the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def next_delay(attempt: int, *, base: float, cap: float, rng: Any, retry_after: float | None = None) -> float:
    """The callbacks' policy (runner.callbacks.courier): full jitter, Retry-After a floor."""
    return backoff_delay(attempt, base=base, cap=cap, jitter="full", rng=rng, floor=retry_after)


def test_next_delay_exponential_with_cap() -> None:
    delays = [next_delay(n, base=1.0, cap=60.0, rng=Top()) for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert next_delay(10_000, base=1.0, cap=60.0, rng=Top()) == 60


def test_next_delay_full_jitter_and_retry_after_floor() -> None:
    rng = random.Random(7)
    samples = [next_delay(5, base=1.0, cap=60.0, rng=rng) for _ in range(200)]
    assert all(0 <= s <= 16 for s in samples) and min(samples) < 4 and max(samples) > 12
    assert next_delay(1, base=1.0, cap=60.0, rng=rng, retry_after=30) == 30
    assert next_delay(1, base=1.0, cap=60.0, rng=rng, retry_after=300) == 300  # not capped
    assert next_delay(6, base=1.0, cap=60.0, rng=Top(), retry_after=5) == 32
