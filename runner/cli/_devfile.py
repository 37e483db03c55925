"""The runtime file of a running `ksr dev`: how the other `ksr` commands find it.

`ksr dev` writes `dev.json` (its pid, REDIS_URL, status page, dev receiver) into its runtime
directory and into one well-known place per user, and removes both when it stops:

    $XDG_RUNTIME_DIR/kube-stream-runner/dev.json     when XDG_RUNTIME_DIR is set
    ~/.cache/kube-stream-runner/dev.json             otherwise

A command run with neither `--redis-url` nor `REDIS_URL` reads the well-known file and uses
that Redis (and its HTTP port for `ksr health`), saying so on stderr. A file whose process
is gone (a `ksr dev` killed hard) is ignored. With several `ksr dev`s, the file names the
one started last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["DEV_FILE", "DevRuntime", "discover", "well_known_path"]

DEV_FILE = "dev.json"


@dataclass(frozen=True)
class DevRuntime:
    pid: int
    redis_url: str
    http_port: int
    status_url: str
    receiver_url: str

    def write(self, *paths: Path) -> None:
        """Written whole (a reader never sees half a file), readable by this user only:
        REDIS_URL may hold a password."""
        body = json.dumps(asdict(self), indent=2) + "\n"
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{self.pid}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            tmp.replace(path)

    def remove(self, *paths: Path) -> None:
        """Remove each file that still names this process (a later `ksr dev` may own it now)."""
        for path in paths:
            found = _read(path)
            if found is not None and found.pid == self.pid:
                path.unlink(missing_ok=True)


def well_known_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    xdg = env.get("XDG_RUNTIME_DIR")
    base = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".cache"
    return base / "kube-stream-runner" / DEV_FILE


def discover(env: Mapping[str, str] | None = None) -> tuple[DevRuntime, Path] | None:
    """The running `ksr dev` of the well-known file, and the file; None without a live one."""
    path = well_known_path(env)
    found = _read(path)
    if found is None or not _alive(found.pid):
        return None
    return found, path


def _read(path: Path) -> DevRuntime | None:
    try:
        doc = json.loads(path.read_text())
        return DevRuntime(
            pid=int(doc["pid"]),
            redis_url=str(doc["redis_url"]),
            http_port=int(doc["http_port"]),
            status_url=str(doc["status_url"]),
            receiver_url=str(doc["receiver_url"]),
        )
    except (OSError, ValueError, KeyError, TypeError):  # absent, or not ours to read
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reuses the pid: not our ksr dev
        return False
    return True
