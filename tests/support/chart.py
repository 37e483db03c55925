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
