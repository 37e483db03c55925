"""webhook.send against real HTTP(S) servers on loopback: headers, signatures, outcomes, SSRF."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection

from runner.allowlist import Allowlist
from runner.callbacks.http import (
    OutcomeKind,
    build_headers,
    callback_body,
    send,
    verify,
    webhook_id,
)
from tests.support.ports import free_port, wait_for
from tests.support.tarpit import Tarpit

KEYS = [b"current-key", b"previous-key"]
LOOPBACK = Allowlist.parse(["127.0.0.1"])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base: str
    port: int
    requests: list[Received] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> (status, headers, delay seconds)
    routes: dict[str, tuple[int, dict[str, str], float]] = {
        "/ok": (200, {}, 0.0),
        "/accepted": (202, {}, 0.0),
        "/gone": (410, {}, 0.0),
        "/busy": (503, {"Retry-After": "7"}, 0.0),
        "/limited": (429, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}, 0.0),
        "/redirect": (302, {"Location": "/ok"}, 0.0),
        "/bad": (400, {}, 0.0),
        "/slow": (200, {}, 3.0),
    }

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))  # type: ignore[attr-defined]
        status, headers, delay = self.routes.get(self.path.split("?")[0], (404, {}, 0.0))
        time.sleep(delay)
        payload = b"see other" if 300 <= status < 400 else b"ok" if status < 300 else b"nope"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(server: http.server.ThreadingHTTPServer) -> Iterator[None]:
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    for _ in _serve(server):
        r = Receiver(f"http://127.0.0.1:{port}", port)
        r.requests = server.requests  # type: ignore[attr-defined]
        yield r


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hook.test (and only that name)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=hook.test",
            "-addext",
            "subjectAltName=DNS:hook.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_receiver(certificate: tuple[Path, Path]) -> Iterator[Receiver]:
    cert, key = certificate
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    names: list[str | None] = []

    def record_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record_sni
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.sni_names = names  # type: ignore[attr-defined]
    port = server.server_address[1]
    for _ in _serve(server):
        r = Receiver(f"https://hook.test:{port}", port)
        r.requests = server.requests  # type: ignore[attr-defined]
        r.sni = names  # type: ignore[attr-defined]
        yield r


def only_loopback(host: str, port: int) -> Sequence[str]:
    """DNS for names that exist only in this test: the system resolver must not be asked."""
    return {"hook.test": ["127.0.0.1"]}[host]


def post(url: str, *, allow: Allowlist = LOOPBACK, timeout: float = 5.0, status: int = 2, **kw: Any) -> Any:
    body = callback_body("msg-1", status, {"duration": 1.5})
    headers = build_headers(webhook_id("msg-1", status), body, keys=KEYS)
    return send(url, body, headers, allow=allow, timeout=timeout, **kw), body


def test_delivered_with_verifiable_signature_and_headers(receiver: Receiver) -> None:
    outcome, body = post(receiver.base + "/ok?tenant=a")
    assert outcome.kind is OutcomeKind.DELIVERED and outcome.status == 200 and outcome.address == "127.0.0.1"
    [got] = receiver.requests
    assert got.path == "/ok?tenant=a" and got.body == body
    h = got.headers
    assert h["content-type"] == "application/json"
    assert h["webhook-id"] == "msg-1:2"
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 60
    assert len(h["webhook-signature"].split(" ")) == 2
    assert h["host"] == f"127.0.0.1:{receiver.port}"
    assert verify(got.body, h, [b"previous-key"]) and verify(got.body, h, [b"current-key"])
    assert not verify(got.body, h, [b"some-other-key"])
    assert post(receiver.base + "/accepted")[0].kind is OutcomeKind.DELIVERED


def test_redirect_is_not_followed(receiver: Receiver) -> None:
    outcome, _ = post(receiver.base + "/redirect")
    assert outcome.kind is OutcomeKind.FAILED and outcome.status == 302
    assert "redirect not followed" in outcome.detail
    assert [r.path for r in receiver.requests] == ["/redirect"]


def test_gone_stops(receiver: Receiver) -> None:
    outcome, _ = post(receiver.base + "/gone")
    assert outcome.kind is OutcomeKind.GONE and outcome.status == 410 and outcome.final


def test_503_with_retry_after_is_retried_with_that_value(receiver: Receiver) -> None:
    outcome, _ = post(receiver.base + "/busy")
    assert outcome.kind is OutcomeKind.RETRY and outcome.status == 503 and outcome.retry_after == 7.0
    outcome, _ = post(receiver.base + "/limited")
    assert outcome.kind is OutcomeKind.RETRY and outcome.status == 429 and outcome.retry_after > 1e9


def test_other_4xx_fails_for_good(receiver: Receiver) -> None:
    outcome, _ = post(receiver.base + "/bad")
    assert outcome.kind is OutcomeKind.FAILED and outcome.status == 400 and "nope" in outcome.detail


def test_timeout_and_refused_connection_are_retried(receiver: Receiver) -> None:
    started = time.monotonic()
    outcome, _ = post(receiver.base + "/slow", timeout=0.5)
    assert outcome.kind is OutcomeKind.RETRY and outcome.status is None
    assert time.monotonic() - started < 2.5
    outcome, _ = post(f"http://127.0.0.1:{free_port()}/ok")
    assert outcome.kind is OutcomeKind.RETRY and "connect" in outcome.detail


@pytest.mark.timeout(30)  # today's failure mode is an attempt that never ends
def test_a_trickling_receiver_is_cut_off_at_the_attempt_deadline() -> None:
    """One byte every 2 s never trips a per-read timeout: the attempt must still end at
    its wall-clock deadline, and hang up on the receiver then."""
    tarpit = Tarpit(interval=2.0).start()
    try:
        started = time.monotonic()
        outcome, _ = post(tarpit.url, timeout=3.0)
        took = time.monotonic() - started
        wait_for(lambda: len(tarpit.finished()) == 1, timeout=5, what="the tarpit seeing the hang-up")
    finally:
        tarpit.close()
    assert outcome.kind is OutcomeKind.RETRY and outcome.status is None
    assert "3s" in outcome.detail and "deadline" in outcome.detail
    assert 3.0 <= took < 3.5
    [conn] = tarpit.connections
    assert conn.closed is not None and conn.closed - conn.accepted < 3.5


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records every connection urllib3 opens (and lets it through)."""
    opened: list[Any] = []
    real = urllib3.util.connection.create_connection

    def spy(address: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", spy)
    return opened


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/hook", "private"),
        ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped"),
        ("http://100.64.0.1/hook", "carrier-grade NAT"),
    ],
)
def test_private_targets_are_refused_before_connecting(tripwire: list[Any], url: str, reason: str) -> None:
    outcome, _ = post(url, allow=Allowlist())
    assert outcome.kind is OutcomeKind.FAILED and outcome.status is None
    assert outcome.detail.startswith("refused: ") and reason in outcome.detail
    assert tripwire == []


def test_localhost_refused_unless_allowed(receiver: Receiver, tripwire: list[Any]) -> None:
    url = f"http://localhost:{receiver.port}/ok"
    outcome, _ = post(url, allow=Allowlist())
    assert outcome.kind is OutcomeKind.FAILED and "loopback" in outcome.detail
    assert tripwire == [] and receiver.requests == []
    outcome, _ = post(url, allow=Allowlist.parse(["localhost"]))
    # localhost may resolve to ::1 first, where nothing listens: the next address is tried
    assert outcome.kind is OutcomeKind.DELIVERED and outcome.address == "127.0.0.1"
    assert receiver.requests[-1].headers["host"] == f"localhost:{receiver.port}"


def test_connects_to_the_checked_address_without_a_second_lookup(receiver: Receiver, tripwire: list[Any]) -> None:
    # hook.test exists only in the injected resolver; the connection goes to its checked address
    outcome, _ = post(
        f"http://hook.test:{receiver.port}/ok", allow=Allowlist.parse(["hook.test"]), resolver=only_loopback
    )
    assert outcome.kind is OutcomeKind.DELIVERED
    assert tripwire == [("127.0.0.1", receiver.port)]
    assert receiver.requests[-1].headers["host"] == f"hook.test:{receiver.port}"


def test_https_sends_sni_and_checks_the_certificate_for_the_url_host(
    tls_receiver: Receiver, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    allow = Allowlist.parse(["hook.test", "127.0.0.1"])
    outcome, body = post(tls_receiver.base + "/ok", allow=allow, resolver=only_loopback, ca_certs=str(cert))
    assert outcome.kind is OutcomeKind.DELIVERED, outcome
    assert tls_receiver.sni[-1] == "hook.test"  # type: ignore[attr-defined]
    assert tls_receiver.requests[-1].headers["host"] == f"hook.test:{tls_receiver.port}"
    assert tls_receiver.requests[-1].body == body
    # the same server reached by its IP: the certificate does not name it, so no delivery
    outcome, _ = post(f"https://127.0.0.1:{tls_receiver.port}/ok", allow=allow, ca_certs=str(cert))
    assert outcome.kind is OutcomeKind.RETRY and "SSL" in outcome.detail
    # an untrusted certificate is not accepted either
    outcome, _ = post(tls_receiver.base + "/ok", allow=allow, resolver=only_loopback)
    assert outcome.kind is OutcomeKind.RETRY and "SSL" in outcome.detail
