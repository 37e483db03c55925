"""The real Kubernetes test bed as seen from the tests: one control plane per run,
a fresh namespace per test, clients for the admin and for ServiceAccounts."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from testenv import bed as testbed  # noqa: E402
from testenv import build  # noqa: E402
from tests.support.ports import wait_for  # noqa: E402


class KubeBed:
    """A running test bed: admin clients, and stop/start of kube-apiserver for outage tests."""

    def __init__(self, directory: Path, bed: testbed.Bed) -> None:
        self.dir = directory
        self.bed = bed

    @classmethod
    def start(cls, directory: Path, *, owned: bool = True) -> KubeBed:
        """`owned`: the components die with this process (a bed shared by the run's test
        processes is not: the run's first process stops it at the end)."""
        say = lambda m: print(f"kube-testenv: {m}", file=sys.stderr)  # noqa: E731
        return cls(directory, testbed.up(directory, progress=say, owned=owned))

    @classmethod
    def attach(cls, directory: Path) -> KubeBed:
        """The bed another test process of this run started (pytest-xdist workers share one)."""
        return cls(directory, testbed.Bed.load(directory))

    @property
    def kubeconfig(self) -> str:
        return str(self.bed.kubeconfig)

    @property
    def server(self) -> str:
        return self.bed.server

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.crt")

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=self.kubeconfig)

    def stop_apiserver(self) -> None:
        self.bed.stop("kube-apiserver")

    def start_apiserver(self, timeout: float = 60.0) -> None:
        self.bed.start("kube-apiserver")
        self.bed.wait_ready(timeout=timeout)

    def close(self) -> None:
        testbed.down(self.dir)

    def token_client(self, token: str) -> client.ApiClient:
        """A client that authenticates with a bearer token (a ServiceAccount's)."""
        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = self.ca_file
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)

    def service_account_client(self, namespace: str, name: str) -> client.ApiClient:
        """Create ServiceAccount `name` (if absent) and return a client acting as it."""
        core = client.CoreV1Api(self.api_client())
        try:
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        except client.ApiException as e:
            if e.status != 409:
                raise
        req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
        token = core.create_namespaced_service_account_token(name, namespace, req).status.token
        return self.token_client(token)


def binaries_built() -> bool:
    return build.is_built()


def new_namespace(kube: KubeBed) -> str:
    name = f"ksr-test-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube.api_client())
    core.create_namespace({"metadata": {"name": name, "labels": {"ksr-test": "true"}}})

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except client.ApiException:
            return False

    wait_for(has_default_sa, timeout=30, what=f"ServiceAccount default in {name}")
    return name


def delete_namespace(kube: KubeBed, name: str) -> None:
    """Delete the namespace, first taking the runner's finalizer off the Jobs a stopped
    runner left held (they would keep the namespace Terminating)."""
    from runner.jobs.kube import KubeApi
    from runner.jobs.manifest import FINALIZER
    from runner.signals import Signals

    api = KubeApi(kube.api_client(), timeout=10, max_attempts=3, signals=Signals([]))
    try:
        jobs, _ = api.list_jobs(name)
        for job in jobs:
            api.remove_finalizer(job, FINALIZER)
    except Exception as e:  # a namespace already gone, an apiserver stopped by the test
        print(f"finalizers in {name} left: {e}", file=sys.stderr)
    try:
        client.CoreV1Api(kube.api_client()).delete_namespace(name)
    except client.ApiException as e:
        if e.status != 404:
            raise


def managed_jobs(kube: KubeBed, namespace: str) -> list[Any]:
    """The Jobs the runner made in `namespace` (by its managed-by label)."""
    from runner.jobs.manifest import managed_selector

    return list(
        client.BatchV1Api(kube.api_client()).list_namespaced_job(namespace, label_selector=managed_selector()).items
    )


def job_message_ids(kube: KubeBed, namespace: str) -> list[str]:
    """The message id of every such Job, sorted: one entry per Job, so duplicates show."""
    return sorted(j.metadata.annotations["kube-stream-runner/message-id"] for j in managed_jobs(kube, namespace))
