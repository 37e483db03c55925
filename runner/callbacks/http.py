"""Callback delivery: the body, Standard Webhooks headers and signatures, one HTTP attempt.

No queueing here (the RQ job function calls `send`; runner.backoff spaces its retries). One attempt:
the URL goes through the SSRF guard, the connection goes to the very address the guard
checked (no second DNS lookup), the Host header / TLS SNI / certificate check use the
original host name, redirects are not followed, the whole attempt ends at a wall-clock
deadline (however slowly the receiver trickles its answer), and the answer is classified:
2xx delivered, 410 gone, 408/429/5xx and transport errors retry, anything else failed.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3.util.connection
from urllib3 import HTTPHeaderDict

from election.clock import SYSTEM_CLOCK
from runner import __version__
from runner.allowlist import Allowlist
from runner.callbacks.netguard import Resolver, Target, check_url
from runner.errors import HostUnresolvable, WebhookRefused, parse_retry_after

__all__ = [
    "Outcome",
    "OutcomeKind",
    "build_headers",
    "callback_body",
    "classify",
    "send",
    "signature",
    "verify",
    "webhook_id",
]

log = logging.getLogger(__name__)

USER_AGENT = f"kube-stream-runner/{__version__}"
RESPONSE_SNIPPET = 512  # bytes of a failing response kept for the log/detail


# -- body and headers -----------------------------------------------------------------------


def callback_body(message_id: str, status: int, detail: Mapping[str, Any]) -> bytes:
    """The exact bytes that are POSTed and signed; serialise once and keep them for retries."""
    return json.dumps(
        {"id": message_id, "status": int(status), "detail": dict(detail)}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def webhook_id(message_id: str, status: int) -> str:
    """`<id>:<status>`: the same on every retry, the receiver's idempotency key."""
    return f"{message_id}:{int(status)}"


def signature(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">` per key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii") for key in keys
    )


def build_headers(
    msg_id: str, body: bytes, *, keys: Sequence[bytes] = (), timestamp: int | None = None
) -> dict[str, str]:
    """Headers of one attempt; the timestamp (seconds) is fresh per attempt unless given."""
    ts = int(SYSTEM_CLOCK.time()) if timestamp is None else int(timestamp)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
    }
    if keys:
        headers["webhook-signature"] = signature(msg_id, ts, body, keys)
    return headers


def verify(
    body: bytes, headers: Mapping[str, str], keys: Sequence[bytes], *, tolerance: float = 300, now: float | None = None
) -> bool:
    """What a receiver does: some v1 signature matches one of its keys and the timestamp is
    within `tolerance` seconds (replay protection). Header names are matched case-insensitively."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        ts = int(lower["webhook-timestamp"])
        offered = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    current = SYSTEM_CLOCK.time() if now is None else now
    if abs(current - ts) > tolerance:
        return False
    expected = {signature(msg_id, ts, body, [key]) for key in keys}
    return any(hmac.compare_digest(sig, exp) for sig in offered for exp in expected)


# -- outcome --------------------------------------------------------------------------------


class OutcomeKind(enum.StrEnum):
    DELIVERED = "delivered"  # 2xx: done
    RETRY = "retry"  # 408/429/5xx, timeouts, connection and DNS errors: try again later
    GONE = "gone"  # 410: the receiver asks us to stop for this URL
    FAILED = "failed"  # refused by the guard, a redirect, any other 4xx: retrying will not help


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    status: int | None = None  # HTTP status, None when no answer came back
    retry_after: float | None = None  # seconds, from Retry-After
    detail: str = ""  # why, for logs and metrics
    address: str | None = None  # the address connected to
    timed_out: bool = False  # the attempt ran into its deadline (a slow or silent receiver)

    @property
    def final(self) -> bool:
        return self.kind is not OutcomeKind.RETRY


def classify(status: int, headers: Mapping[str, str] | None = None) -> Outcome:
    """Map an HTTP answer to an outcome (pure)."""
    headers = headers or {}
    get = getattr(headers, "get", None)
    retry_after = parse_retry_after(get("Retry-After") if get else None)
    if 200 <= status < 300:
        return Outcome(OutcomeKind.DELIVERED, status)
    if status == 410:
        return Outcome(OutcomeKind.GONE, status, detail="410 Gone: receiver asked to stop")
    if status in (408, 429) or 500 <= status < 600:
        return Outcome(OutcomeKind.RETRY, status, retry_after, detail=f"HTTP {status}")
    if 300 <= status < 400:
        location = get("Location") if get else None
        return Outcome(OutcomeKind.FAILED, status, detail=f"redirect not followed (HTTP {status} to {location})")
    return Outcome(OutcomeKind.FAILED, status, detail=f"HTTP {status}")


# -- sending --------------------------------------------------------------------------------


class _Deadline:
    """The wall-clock limit of one attempt. Socket timeouts bound each read, not the
    attempt: a receiver trickling a byte every few seconds never trips them. At the deadline
    this shuts the socket down from a timer thread, so whatever call is blocked on it
    returns at once. Real time (SYSTEM_CLOCK), never an injected one: the timer thread and
    the socket timeouts it sets run on it."""

    def __init__(self, at: float) -> None:
        self.at = at  # monotonic
        self.sock: socket.socket | None = None
        self.fired = False
        self._mutex = threading.Lock()
        self._timer = threading.Timer(max(0.0, at - SYSTEM_CLOCK.monotonic()), self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return max(0.001, self.at - SYSTEM_CLOCK.monotonic())

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._mutex:
            self.sock = sock
            if self.fired:
                _hang_up(sock)
        sock.settimeout(self.remaining())
        return sock

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._mutex:
            self.fired = True
            if self.sock is not None:
                _hang_up(self.sock)


def _hang_up(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown even for an SSLSocket: the TLS object may be in use
        # by the blocked thread; the file descriptor is what must wake up.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _exchange(
    sock: socket.socket,
    deadline: _Deadline,
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    ca_certs: str | None,
) -> tuple[int, HTTPHeaderDict, bytes]:
    """POST on a connected socket: (status, headers, the first bytes of the body)."""
    if target.scheme == "https":
        # Connected to the checked address, but present and verify the name from the URL.
        context = ssl.create_default_context(cafile=ca_certs)
        sock = deadline.watch(context.wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False))
        sock.do_handshake()  # type: ignore[attr-defined]
    conn = http.client.HTTPConnection(target.host, target.port, timeout=deadline.remaining())
    conn.sock = sock  # http.client sends on a socket it is given, it does not connect
    try:
        conn.request("POST", target.request_target, body=body, headers=dict(headers))
        response = conn.getresponse()
        try:
            snippet = response.read(RESPONSE_SNIPPET)
        except (OSError, http.client.HTTPException):
            snippet = b""  # the status is what counts; the body is only for the log
        return response.status, HTTPHeaderDict(response.headers.items()), snippet  # case-insensitive
    finally:
        conn.close()


def send(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow: Allowlist,
    timeout: float,
    resolver: Resolver | None = None,
    ca_certs: str | None = None,
) -> Outcome:
    """One delivery attempt (POST), over within `timeout` seconds of wall-clock time
    (connect, TLS, request and answer together). Never raises for network or HTTP trouble:
    see Outcome."""
    try:
        target = check_url(url, allow, resolver=resolver)
    except HostUnresolvable as e:
        return Outcome(OutcomeKind.RETRY, detail=e.problem)
    except WebhookRefused as e:
        return Outcome(OutcomeKind.FAILED, detail=f"refused: {e.problem}")

    request_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
    request_headers["Host"] = target.host_header
    timed_out = Outcome(OutcomeKind.RETRY, detail=f"no answer within the {timeout:g}s deadline", timed_out=True)
    last = Outcome(OutcomeKind.RETRY, detail="no address answered")
    with _Deadline(SYSTEM_CLOCK.monotonic() + timeout) as deadline:
        for address in target.addresses:
            if deadline.fired or SYSTEM_CLOCK.monotonic() >= deadline.at:
                return timed_out
            try:
                sock = deadline.watch(
                    urllib3.util.connection.create_connection((str(address), target.port), timeout=deadline.remaining())
                )
            except OSError as e:
                # Nothing was sent; the next address of the same host may answer.
                log.debug("webhook %s: %s unreachable: %s", target.host, address, e)
                last = Outcome(
                    OutcomeKind.RETRY, detail=f"connect to {address} failed: {_short(e)}", address=str(address)
                )
                continue
            try:
                status, response_headers, snippet = _exchange(sock, deadline, target, body, request_headers, ca_certs)
            except (OSError, http.client.HTTPException) as e:  # resets, TLS errors, the deadline
                if deadline.fired:
                    return Outcome(OutcomeKind.RETRY, detail=timed_out.detail, address=str(address), timed_out=True)
                return Outcome(OutcomeKind.RETRY, detail=f"{type(e).__name__}: {_short(e)}", address=str(address))
            finally:
                sock.close()
            outcome = classify(status, response_headers)
            detail = outcome.detail
            if outcome.kind is not OutcomeKind.DELIVERED and snippet:
                detail = f"{detail}: {snippet.decode('utf-8', 'replace').strip()[:200]}"
            outcome = Outcome(outcome.kind, outcome.status, outcome.retry_after, detail, str(address))
            log.debug("webhook %s via %s: %s", target.host, address, outcome)
            return outcome
        if deadline.fired or SYSTEM_CLOCK.monotonic() >= deadline.at:
            return Outcome(OutcomeKind.RETRY, detail=f"{timed_out.detail} ({last.detail})", timed_out=True)
    return last


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) <= 300 else text[:300] + "..."
