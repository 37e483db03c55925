"""The Helm chart as the deployment tests use it: the bed's helm, `helm template` into
documents, and the Deployment's pod spec taken from the rendering."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.support.kube import ROOT, build

CHART = ROOT / "charts" / "kube-stream-runner"


def helm_env(home: Path) -> dict[str, str]:
    """helm keeps caches, repositories and plugins under `home`, never in $HOME."""
    keys = ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")
    return {**os.environ, **{k: str(home / k.lower()) for k in keys}}


def helm(home: Path, *args: str, kubeconfig: str | None = None, timeout: float = 300) -> str:
    env = helm_env(home)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    done = subprocess.run(
        [str(build.bin_dir() / "helm"), *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def values_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(home: Path, *, namespace: str, values: dict[str, Any], release: str = "ksr") -> list[dict[str, Any]]:
    text = helm(home, "template", release, str(CHART), "--namespace", namespace, "-f", str(values_file(home, values)))
    return [d for d in yaml.safe_load_all(text) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def config_map(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings ConfigMap (not the dashboard's)."""
    (doc,) = [d for d in docs if d["kind"] == "ConfigMap" and not d["metadata"]["name"].endswith("-dashboard")]
    return doc


def container_env(core: Any, namespace: str, pod: Any, container: str) -> dict[str, str]:
    """The environment the kubelet gives `container` of `pod` (a V1Pod read from the API):
    envFrom in order (ConfigMaps and Secrets read from the API server), then env, which wins;
    fieldRef, secretKeyRef and configMapKeyRef resolved. kwok runs no container, so the tests
    use this to start the runner's own settings parser with what a real pod would get."""
    import base64

    (spec,) = [c for c in pod.spec.containers if c.name == container]
    env: dict[str, str] = {}

    def config_map(name: str) -> dict[str, str]:
        return dict(core.read_namespaced_config_map(name, namespace).data or {})

    def secret(name: str) -> dict[str, str]:
        data = core.read_namespaced_secret(name, namespace).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    for source in spec.env_from or []:
        if source.config_map_ref is not None:
            env.update(config_map(source.config_map_ref.name))
        elif source.secret_ref is not None:
            env.update(secret(source.secret_ref.name))
    fields = {"metadata.name": pod.metadata.name, "metadata.namespace": namespace, "spec.nodeName": pod.spec.node_name}
    for var in spec.env or []:
        source = var.value_from
        if source is None:
            env[var.name] = var.value or ""
        elif source.field_ref is not None:
            env[var.name] = fields[source.field_ref.field_path]
        elif source.secret_key_ref is not None:
            values = secret(source.secret_key_ref.name)
            if source.secret_key_ref.key in values:
                env[var.name] = values[source.secret_key_ref.key]
            else:
                assert source.secret_key_ref.optional, (
                    f"{var.name}: key {source.secret_key_ref.key} missing, not optional"
                )
        elif source.config_map_key_ref is not None:
            env[var.name] = config_map(source.config_map_key_ref.name)[source.config_map_key_ref.key]
        else:
            raise AssertionError(f"env source not resolved by the tests: {var}")
    return env
