"""The built image run with podman as the kubelet would run the chart's container: the
rendered env, args, securityContext and emptyDirs, the ServiceAccount token and CA at the
in-cluster path, KUBERNETES_SERVICE_HOST/PORT pointing at the bed. Host network, so every
container binds 127.0.0.1 on a port of its own (the chart's httpPort, rendered per pod)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.kube import ROOT, KubeBed

CONTAINERS_CONF = ROOT / "scripts" / "podman" / "containers.conf"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()}")
    return done


def unavailable(why: str) -> None:
    """Skip where podman cannot run a container; under CI that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"podman cannot run a container: {why}", pytrace=False)
    pytest.skip(f"podman cannot run a container here: {why}")


def build_image(*options: str) -> str:
    """scripts/build-image with podman (cached by content): the image reference."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), "--engine", "podman", *options],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise AssertionError(f"scripts/build-image exited {done.returncode}:\n{done.stderr[-6000:]}")
    return done.stdout.strip().splitlines()[-1]


def quantity_bytes(text: str) -> int:
    found = QUANTITY.match(str(text))
    assert found, f"unsupported quantity {text!r}"
    return int(found.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[found.group(2)]


def service_account_files(kube: KubeBed, directory: Path, *, namespace: str, name: str) -> Path:
    """What the kubelet projects for `name`: a token, the cluster CA, the namespace."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api_client())
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    token = core.create_namespaced_service_account_token(
        name, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    directory.mkdir(mode=0o755, parents=True)
    (directory / "token").write_text(token.status.token)
    (directory / "ca.crt").write_bytes(Path(kube.ca_file).read_bytes())
    (directory / "namespace").write_text(namespace)
    for f in directory.iterdir():
        f.chmod(0o644)
    directory.chmod(0o755)
    return directory


class Container:
    """One pod of the chart's Deployment, run with podman."""

    def __init__(
        self,
        *,
        image: str,
        name: str,
        docs: list[dict[str, Any]],
        secret: dict[str, str],
        service_account: Path,
        kube: KubeBed,
        directory: Path,
    ) -> None:
        from tests.support.chart import config_map, one

        self.name = name
        self.deployment = one(docs, "Deployment")
        pod = self.deployment["spec"]["template"]["spec"]
        (self.spec,) = pod["containers"]
        self.grace = int(pod["terminationGracePeriodSeconds"])
        self.port = next(p["containerPort"] for p in self.spec["ports"] if p["name"] == "http")
        self.env = self._env(config_map(docs)["data"], secret, namespace=self.deployment["metadata"]["namespace"])
        directory.mkdir(parents=True, exist_ok=True)
        env_file = directory / f"{name}.env"  # values stay out of `ps`, as a Secret's do
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        env_file.chmod(0o600)
        api = kube.server.removeprefix("https://")
        host, port = api.rsplit(":", 1)
        argv = [
            "run",
            "--detach",
            f"--name={name}",
            "--network=host",
            f"--env-file={env_file}",
            f"--env=KUBERNETES_SERVICE_HOST={host}",
            f"--env=KUBERNETES_SERVICE_PORT={port}",
            f"--volume={service_account}:{SERVICE_ACCOUNT_DIR}:ro",
            *self._security(pod.get("securityContext", {}), self.spec.get("securityContext", {})),
            *self._volumes(pod.get("volumes", [])),
        ]
        limits = self.spec.get("resources", {}).get("limits", {})
        if "memory" in limits:
            argv.append(f"--memory={quantity_bytes(limits['memory'])}")
        if self.spec.get("command"):
            argv.append(f"--entrypoint={json.dumps(self.spec['command'])}")
        argv += [image, *self.spec.get("args", [])]
        podman("rm", "--force", "--ignore", name)
        self.started = time.monotonic()
        podman(*argv)

    # -- what the kubelet derives from the spec ------------------------------------------------
    def _env(self, config: dict[str, str], secret: dict[str, str], *, namespace: str) -> dict[str, str]:
        """envFrom first, then env (which wins), with the downward API and secretKeyRefs resolved."""
        assert [list(s) for s in self.spec.get("envFrom", [])] == [["configMapRef"]], self.spec.get("envFrom")
        env = dict(config)
        fields = {"metadata.name": self.name, "metadata.namespace": namespace}
        for var in self.spec.get("env", []):
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = str(var.get("value", ""))
            elif "fieldRef" in source:
                env[var["name"]] = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                if ref["key"] in secret:
                    env[var["name"]] = secret[ref["key"]]
                else:
                    assert ref.get("optional"), f"Secret key {ref['key']} missing and not optional"
            else:
                raise AssertionError(f"env source not handled by the rehearsal: {var}")
        return env

    @staticmethod
    def _security(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
        ctx = {**pod, **container}
        out = [f"--user={ctx['runAsUser']}:{ctx.get('runAsGroup', ctx['runAsUser'])}"]
        if "fsGroup" in pod:
            out.append(f"--group-add={pod['fsGroup']}")
        if ctx.get("readOnlyRootFilesystem"):
            # podman would add writable tmpfs on /run, /tmp, /var/tmp; the chart mounts its own.
            out += ["--read-only", "--read-only-tmpfs=false"]
        if ctx.get("allowPrivilegeEscalation") is False:
            out.append("--security-opt=no-new-privileges")
        for cap in ctx.get("capabilities", {}).get("drop", []):
            out.append(f"--cap-drop={cap}")
        for cap in ctx.get("capabilities", {}).get("add", []):
            out.append(f"--cap-add={cap}")
        assert ctx.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault"  # podman's default
        assert not ctx.get("privileged")
        return out

    def _volumes(self, volumes: list[dict[str, Any]]) -> list[str]:
        """The chart's emptyDirs as empty tmpfs (medium: Memory) owned by the pod's user, as
        the kubelet's fsGroup makes them. (U=true: runc gives a tmpfs over an existing image
        directory that directory's mode but root as owner; the kubelet's bind mount does not.)"""
        by_name = {v["name"]: v for v in volumes}
        out = []
        for mount in self.spec.get("volumeMounts", []):
            volume = by_name[mount["name"]]
            assert set(volume) == {"name", "emptyDir"}, f"volume kind not handled by the rehearsal: {volume}"
            size = volume["emptyDir"].get("sizeLimit")
            options = f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=0777,U=true"
            out.append(f"--mount={options}" + (f",tmpfs-size={quantity_bytes(size)}" if size else ""))
        return out

    # -- observing it ------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def probe(self, kind: str) -> int:
        """The chart's probe `kind` (startupProbe...) as the kubelet runs it: its path, its port, its timeout."""
        probe = self.spec[kind]
        port = probe["httpGet"]["port"]
        assert port in ("http", self.port), port
        try:
            return self.get(probe["httpGet"]["path"], timeout=probe.get("timeoutSeconds", 1))[0]
        except OSError:
            return 0

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = self.get("/status")
            return dict(json.loads(body)) if code == 200 else None
        except (OSError, ValueError):
            return None

    def leading(self) -> bool:
        return bool((self.status() or {}).get("leading"))

    def inspect(self) -> dict[str, Any]:
        return dict(json.loads(podman("inspect", self.name).stdout)[0])

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def main_pid(self) -> int:
        return int(self.inspect()["State"]["Pid"])

    def stop(self) -> tuple[int, float]:
        """`podman stop` with the pod's grace period: (exit code, seconds it took)."""
        started = time.monotonic()
        podman("stop", f"--time={self.grace}", self.name, timeout=self.grace + 30)
        took = time.monotonic() - started
        return int(self.inspect()["State"]["ExitCode"]), took

    def logs(self, n: int = 6000) -> str:
        done = podman("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-n:]

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", "--ignore", self.name, check=False)
