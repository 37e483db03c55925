"""runner.jobs.rest: the paths it builds, and credentials asked of the configuration once
per AUTH_SECONDS (its refresh hook re-reads the kubeconfig each time), again at once after
a 401; and a watch's events cut anywhere by the chunks they arrive in. Against stand-ins;
the integration tests send every request to a real apiserver."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from election.clock import FakeClock
from runner.jobs.kube import WatchStream
from runner.jobs.rest import AUTH_SECONDS, USER_AGENT, Rest, path_of


@pytest.mark.parametrize(
    ("kind", "namespace", "name", "path"),
    [
        ("jobs", "ns", "job-1", "/apis/batch/v1/namespaces/ns/jobs/job-1"),
        ("jobs", "ns", None, "/apis/batch/v1/namespaces/ns/jobs"),
        ("jobs", None, None, "/apis/batch/v1/jobs"),
        ("pods", "ns", None, "/api/v1/namespaces/ns/pods"),
        ("pods", None, None, "/api/v1/pods"),
        ("jobs", "a/b", "c?d", "/apis/batch/v1/namespaces/a%2Fb/jobs/c%3Fd"),
    ],
)
def test_paths(kind: str, namespace: str | None, name: str | None, path: str) -> None:
    assert path_of(kind, namespace, name) == path


class Answer:
    def __init__(self, status: int) -> None:
        self.status, self.reason, self.data, self.headers = status, "x", b"{}", {}


class Configuration:
    host = "https://127.0.0.1:6443/"

    def __init__(self) -> None:
        self.asked = 0

    def auth_settings(self) -> dict[str, Any]:
        self.asked += 1
        value = f"Bearer token-{self.asked}"
        return {"BearerToken": {"in": "header", "key": "authorization", "value": value}}


class Client:
    """An ApiClient's parts Rest uses: configuration, default headers, the pool."""

    def __init__(self, statuses: list[int]) -> None:
        self.configuration = Configuration()
        self.default_headers = {"User-Agent": "OpenAPI-Generator"}
        self.rest_client = self
        self.pool_manager = self
        self.statuses = statuses
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    def request(self, method: str, url: str, **kw: Any) -> Answer:
        self.sent.append((method, url, kw["headers"]))
        return Answer(self.statuses.pop(0))


def test_credentials_are_reused_for_auth_seconds_and_asked_again_after_a_401() -> None:
    clock = FakeClock(start=100.0)
    client = Client([200, 200, 401, 200, 200])
    rest = Rest(client, clock=clock)  # type: ignore[arg-type]
    rest.request("GET", "/api/v1/pods", timeout=1, query={"limit": 5})
    rest.request("GET", "/api/v1/pods", timeout=1)
    assert client.configuration.asked == 1
    with pytest.raises(ApiException) as refused:
        rest.request("GET", "/api/v1/pods", timeout=1)
    assert refused.value.status == 401
    rest.request("GET", "/api/v1/pods", timeout=1)  # after the 401: asked again
    assert client.configuration.asked == 2
    clock.advance(AUTH_SECONDS)
    rest.request("POST", "/apis/batch/v1/namespaces/ns/jobs", timeout=1, body=b"{}")
    assert client.configuration.asked == 3
    method, url, headers = client.sent[0]
    assert (method, url) == ("GET", "https://127.0.0.1:6443/api/v1/pods?limit=5")
    assert headers["authorization"] == "Bearer token-1" and headers["User-Agent"] == USER_AGENT
    assert "Content-Type" not in headers and client.sent[-1][2]["Content-Type"] == "application/json"
    assert client.sent[-1][2]["authorization"] == "Bearer token-3"


class Streamed:
    """A watch response delivering its bytes in the chunks given."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.released = self.closed = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        return iter(self.chunks)

    def release_conn(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


def test_a_watch_yields_each_event_whatever_the_chunks_cut() -> None:
    events = [{"type": "ADDED", "object": {"n": n, "s": "x" * n}} for n in range(12)]
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events) + b"\n"  # an empty line too
    for size in (1, 7, 64, len(data)):
        response = Streamed([data[i : i + size] for i in range(0, len(data), size)])
        stream = WatchStream(lambda r=response: r, on_open=lambda: None)
        assert list(stream) == events, size
        assert response.released and not response.closed
