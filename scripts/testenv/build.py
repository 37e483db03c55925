"""Build the test bed's binaries from the Go module proxy and cache them.

Nothing comes from release buckets: etcd, the Kubernetes control plane, kwok
and helm are compiled with the local Go toolchain (``GOTOOLCHAIN=local``).
The output lands in ``<cache>/bin/<key>/`` where ``key`` hashes the pinned
versions and the Go version, so a second build finds it and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.json"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
STAMP = ".complete"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("KSR_CACHE_DIR", Path(base) / "kube-stream-runner"))


def versions() -> dict[str, str]:
    return json.loads(VERSIONS_FILE.read_text())


def go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def bin_dir() -> Path:
    key = json.dumps({"versions": versions(), "go": go_version()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_root() / "bin" / digest


def is_built(target: Path | None = None) -> bool:
    target = target or bin_dir()
    return (target / STAMP).exists() and all((target / b).exists() for b in BINARIES)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-trimpath")
    return env


def _log(msg: str, started: float) -> None:
    print(f"[kube-testenv build +{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, started: float, label: str, **extra_env: str) -> None:
    """Run a go command, reporting compiled packages every so often."""
    proc = subprocess.Popen(
        ["go", *args],
        cwd=cwd,
        env={**_go_env(), **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    count = 0
    last_report = time.monotonic()
    for line in proc.stdout:
        count += 1
        tail = (tail + [line.rstrip()])[-40:]
        if time.monotonic() - last_report > 30:
            _log(f"{label}: {count} packages so far ({line.strip()[:70]})", started)
            last_report = time.monotonic()
    if proc.wait() != 0:
        raise SystemExit(f"go {' '.join(args[:2])} failed for {label}:\n" + "\n".join(tail))


def _module(workdir: Path, name: str, requires: dict[str, str], replaces: dict[str, str], main: str | None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"module ksr-testenv/{name}", "", f"go {go_version().removeprefix('go').rsplit('.', 1)[0]}", ""]
    lines += [f"require {mod} {ver}" for mod, ver in requires.items()]
    if replaces:
        lines += ["", "replace ("] + [f"\t{mod} => {mod} {ver}" for mod, ver in sorted(replaces.items())] + [")"]
    (workdir / "go.mod").write_text("\n".join(lines) + "\n")
    if main:
        (workdir / "main.go").write_text(main)


def staging_modules(k8s_version: str, started: float) -> dict[str, str]:
    """The staging modules of k8s.io/kubernetes, read from that version's own go.mod."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version}"],
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    )
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    names = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.M)
    if not names:
        raise SystemExit(f"no staging replaces found in k8s.io/kubernetes@{k8s_version} go.mod")
    staging = "v0." + k8s_version.removeprefix("v1.")
    _log(f"{len(names)} staging modules pinned at {staging}", started)
    return {n: staging for n in names}


def build_kubernetes(work: Path, out: Path, ver: str, started: float) -> None:
    minor = ver.removeprefix("v").split(".")[1]
    pkg = "k8s.io/component-base/version"
    ldflags = (
        f"-s -w -X {pkg}.gitVersion={ver} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    )
    mod = work / "kubernetes"
    _module(mod, "kubernetes", {"k8s.io/kubernetes": ver}, staging_modules(ver, started), None)
    cmds = [f"k8s.io/kubernetes/cmd/{c}" for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
    _log(f"building kube-apiserver, kube-controller-manager, kube-scheduler {ver} (the long part)", started)
    _go(["build", "-mod=mod", "-v", "-ldflags", ldflags, "-o", str(out) + "/", *cmds], mod, started, "kubernetes")


def build_etcd(work: Path, out: Path, ver: str, started: float) -> None:
    mod = work / "etcd"
    main = 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n'
    _module(mod, "etcd", {"go.etcd.io/etcd/server/v3": ver}, {}, main)
    _log(f"building etcd {ver}", started)
    _go(["build", "-mod=mod", "-v", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."], mod, started, "etcd")


def install_tool(pkg: str, ver: str, out: Path, started: float) -> None:
    _log(f"building {pkg}@{ver}", started)
    _go(
        ["install", "-v", "-ldflags", "-s -w", f"{pkg}@{ver}"],
        Path("/"),
        started,
        pkg.rsplit("/", 1)[-1],
        GOBIN=str(out),
    )


def build(force: bool = False) -> Path:
    out = bin_dir()
    if is_built(out) and not force:
        print(f"kube-testenv: binaries already built in {out}", file=sys.stderr)
        return out
    if shutil.which("go") is None:
        raise SystemExit("kube-testenv: the Go toolchain (go) is not on PATH")
    started = time.monotonic()
    v = versions()
    out.mkdir(parents=True, exist_ok=True)
    work = cache_root() / "src"
    if not (out / "etcd").exists():
        build_etcd(work, out, v["etcd"], started)
    if not all((out / b).exists() for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")):
        build_kubernetes(work, out, v["kubernetes"], started)
    if not (out / "kwok").exists():
        install_tool("sigs.k8s.io/kwok/cmd/kwok", v["kwok"], out, started)
    if not (out / "helm").exists():
        install_tool("helm.sh/helm/v3/cmd/helm", v["helm"], out, started)
    (out / STAMP).write_text(json.dumps(v) + "\n")
    _log(f"done: {', '.join(BINARIES)} in {out}", started)
    return out
