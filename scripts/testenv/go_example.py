"""The Go producer example (clients/go-example), built once outside the tests and cached.

The binary is ``<cache>/bin/ksr-go-example-<key>``, ``key`` a hash of the example's sources
(go.mod, go.sum, *.go) and the Go version, so an edit builds a new one and the tests never
build: they ask `binary()` and fail, naming `make go-example`, when it is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from testenv.build import _go_env, cache_root

SOURCE = Path(__file__).resolve().parents[2] / "clients" / "go-example"


def go() -> str:
    """`go` from PATH, else the usual install place."""
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/local/go/bin"]:
        candidate = Path(d) / "go"
        if d and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit("go not found on PATH nor in /usr/local/go/bin (scripts/install-system-deps golang)")


def source_key(go_version: str | None = None) -> str:
    digest = hashlib.sha256()
    digest.update((go_version or _go_version()).encode())
    for path in sorted(p for p in SOURCE.iterdir() if p.name in ("go.mod", "go.sum") or p.suffix == ".go"):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _go_version() -> str:
    out = subprocess.run([go(), "env", "GOVERSION"], check=True, capture_output=True, text=True, env=_go_env())
    return out.stdout.strip()


def binary() -> Path:
    return cache_root() / "bin" / f"ksr-go-example-{source_key()}"


def build() -> Path:
    """Build the binary unless the cache has it; returns its path."""
    target = binary()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    print(f"building {target.name} from {SOURCE} (Go module proxy)", file=sys.stderr, flush=True)
    subprocess.run([go(), "build", "-o", str(partial), "."], cwd=SOURCE, env=_go_env(), check=True)
    partial.replace(target)  # atomic: a concurrent reader sees all of it or nothing
    return target
