"""The lock on a `coordination.k8s.io/v1` Lease, through `CoordinationV1Api`.

Needs only `get`, `create` and `update` on `leases` in its namespace. Optimistic concurrency is
the apiserver's: a replace carries the `resourceVersion` we read, and a 409 means someone else
wrote first. Every request has a short `_request_timeout`, so a renew cannot hang past the
renew deadline; build the `ApiClient` with `configuration.retries = False` (see
`api_client_from_kubeconfig`) so urllib3 does not multiply that timeout by retrying.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from election.errors import ConflictError, LockError, LockUnavailable
from election.record import LeaderRecord, from_lease_spec, to_lease_spec

__all__ = ["LeaseLock", "api_client_from_kubeconfig"]

_TRANSIENT_STATUS = {0, 429, 500, 502, 503, 504}


class LeaseLock:
    def __init__(self, api_client: k8s.ApiClient, *, namespace: str, name: str, request_timeout: float = 5.0) -> None:
        self._api = k8s.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.request_timeout = request_timeout
        self._metadata: dict[str, Any] = {}  # labels/annotations of the last Lease seen, kept on replace

    def describe(self) -> str:
        return f"lease {self.namespace}/{self.name}"

    def get(self) -> LeaderRecord | None:
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.request_timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._translate("read", e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise LockUnavailable(f"read {self.describe()}: {e}") from e
        return self._record(lease)

    def create(self, record: LeaderRecord) -> LeaderRecord:
        body = self._body(record, resource_version=None)
        try:
            lease = self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self.request_timeout)
        except ApiException as e:
            raise self._translate("create", e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise LockUnavailable(f"create {self.describe()}: {e}") from e
        return self._record(lease)

    def update(self, record: LeaderRecord) -> LeaderRecord:
        if not record.version:
            raise ConflictError(f"update {self.describe()}: no resourceVersion to compare with")
        body = self._body(record, resource_version=record.version)
        try:
            lease = self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as e:
            if e.status == 404:  # a namespace being deleted, say: our version is gone
                raise ConflictError(f"update {self.describe()}: it no longer exists") from e
            raise self._translate("update", e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise LockUnavailable(f"update {self.describe()}: {e}") from e
        return self._record(lease)

    # -- conversions at the boundary ---------------------------------------------------------

    def _record(self, lease: Any) -> LeaderRecord:
        meta = lease.metadata
        self._metadata = {
            k: v
            for k, v in (("labels", getattr(meta, "labels", None)), ("annotations", getattr(meta, "annotations", None)))
            if v
        }
        return from_lease_spec(lease.spec, version=getattr(meta, "resource_version", None))

    def _body(self, record: LeaderRecord, *, resource_version: str | None) -> k8s.V1Lease:
        # The client serialises datetimes with isoformat(), which omits the fraction when it
        # is zero; the apiserver's MicroTime then refuses the value. Timestamps in the record
        # are informational, so a microsecond's nudge is harmless.
        spec = to_lease_spec(record)
        for key, t in (("acquireTime", record.acquire_time), ("renewTime", record.renew_time)):
            if t is not None:
                spec[key] = _with_fraction(t)
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace, **self._metadata}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = k8s.V1Lease.from_dict(
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        )
        if body is None:  # from_dict only returns None for None
            raise LockError(f"could not build the body for {self.describe()}")
        return body

    def _translate(self, what: str, e: ApiException) -> LockError:
        status = e.status or 0
        message = f"{what} {self.describe()}: {status} {e.reason or ''}".rstrip()
        if status == 409:
            return ConflictError(message)
        if status in _TRANSIENT_STATUS:
            return LockUnavailable(message)
        return LockError(message)


def _with_fraction(t: _dt.datetime) -> _dt.datetime:
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t if t.microsecond else t.replace(microsecond=1)


def api_client_from_kubeconfig(kubeconfig: str | None = None, *, context: str | None = None) -> k8s.ApiClient:
    """An ApiClient for election: in-cluster config when `kubeconfig` is None and we run in a
    pod, else the kubeconfig file; urllib3 retries off, so request timeouts mean what they say."""
    from kubernetes import config as k8s_config

    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(context=context, client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    configuration.retries = False
    return k8s.ApiClient(configuration)
