"""Requests to the Kubernetes API as bytes in and a raw response out, through the kubernetes
client's own connection pool, host and credentials.

The generated client's methods validate every argument (pydantic), serialise the parameters
and copy the body into a sanitised dict before the request leaves; a py-spy profile of the
leader at 100 creates/s put those layers at 40 % of the create path's CPU, more than the
request itself (docs/benchmarks.md, "Cost per Job"). The runner only ever sends JSON it
built and reads JSON back, so it needs none of them: a path, a query, the body's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from election.clock import SYSTEM_CLOCK, Clock
from runner import __version__

__all__ = ["USER_AGENT", "Rest", "path_of"]

USER_AGENT = f"kube-stream-runner/{__version__}"
JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
# Seconds the credentials' headers are reused. The client's refresh hook, when asked, loads
# the kubeconfig's authentication again and sets the host (which scans the environment for
# proxies): 17 % of a create request's CPU in the profile. A rotated token is picked up
# within this time (an old one stays valid far longer); a 401 asks again at once.
AUTH_SECONDS = 10.0

_GROUPS = {"jobs": "/apis/batch/v1", "pods": "/api/v1"}


def path_of(kind: str, namespace: str | None, name: str | None = None) -> str:
    """`/apis/batch/v1/namespaces/ns/jobs/name`, or a kind's collection (across namespaces
    when `namespace` is None)."""
    base = _GROUPS[kind]
    where = f"{base}/namespaces/{quote(namespace, safe='')}/{kind}" if namespace is not None else f"{base}/{kind}"
    return where if name is None else f"{where}/{quote(name, safe='')}"


class Rest:
    def __init__(self, api_client: k8s.ApiClient, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._api_client = api_client
        self._clock = clock
        self._auth_headers: dict[str, str] = {}
        self._auth_until = float("-inf")

    def request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | tuple[float, float],
        query: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = JSON,
    ) -> Any:
        """The urllib3 response (not read yet) of a 2xx answer; any other status is raised as
        the client's ApiException (its body read), for `kube_error_from` to translate."""
        headers = {**self._api_client.default_headers, "Accept": JSON, "User-Agent": USER_AGENT, **self._auth()}
        if body is not None:
            headers["Content-Type"] = content_type
        url = str(self._api_client.configuration.host).rstrip("/") + path + ("?" + urlencode(query) if query else "")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        response = self._api_client.rest_client.pool_manager.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=connect, read=read),
            preload_content=False,
        )
        if not 200 <= response.status <= 299:
            _ = response.data  # read to its end: the connection goes back to the pool
            if response.status == 401:
                self._auth_until = float("-inf")
            raise ApiException(http_resp=response)
        return response

    def _auth(self) -> dict[str, str]:
        """The credentials' headers, asked of the configuration every AUTH_SECONDS (its
        refresh hook re-reads a rotating token). Client certificates are the pool's."""
        now = self._clock.monotonic()
        if now >= self._auth_until:
            headers: dict[str, str] = {}
            for setting in self._api_client.configuration.auth_settings().values():
                if setting.get("in") == "header" and setting.get("value"):
                    headers[setting["key"]] = setting["value"]
            self._auth_headers, self._auth_until = headers, now + AUTH_SECONDS
        return self._auth_headers
