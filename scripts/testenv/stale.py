"""What an earlier start left in a bed's directory, and clearing it away.

An interrupted run (a timed-out script, a killed test) leaves the directory with
`state.json` naming processes that are gone or still running, and with etcd data:
node objects and node Leases of the old kwok, old Pods and Jobs. A control plane
started on that data reports Ready (the old node status says so) while kwok waits
out the old Leases, and old objects meet new controllers. So `up` starts from an
empty directory every time, and says what it found there.

Only this directory's leftovers are touched: a process counts as one when its
binary is a bed component and one of its arguments names a path inside the
directory. Standard library only (see bed.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Everything `up` generates, removed before a fresh start; logs are kept as <name>.log.previous.
GENERATED = (
    "etcd",
    "apiserver-certs",
    "state.json",
    "state.tmp",
    "admin.kubeconfig",
    "tokens.csv",
    "san.ext",
    "ca.crt",
    "ca.key",
    "ca.srl",
    "server.crt",
    "server.csr",
    "server.key",
    "sa.key",
    "sa.pub",
)


@dataclass
class Leftovers:
    """What a directory holds from an earlier start: findings to log, processes to end, files to remove."""

    notes: list[str] = field(default_factory=list)
    processes: dict[int, str] = field(default_factory=dict)  # pid -> component
    files: list[Path] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.notes or self.processes or self.files)


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _names_dir(arg: str, directory: Path) -> bool:
    """Every path `up` hands a component is a file or folder directly inside its directory."""
    value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
    return value.startswith("/") and Path(value).parent == directory


def processes_of(directory: Path) -> dict[int, str]:
    """Running bed components (of this user) whose command line names a path inside `directory`."""
    directory = directory.resolve()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        argv = _argv(int(entry.name))
        if argv and Path(argv[0]).name in COMPONENTS and any(_names_dir(a, directory) for a in argv[1:]):
            found[int(entry.name)] = Path(argv[0]).name
    return found


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, or a pid reused by another program, has no bed argv)."""
    argv = _argv(pid)
    return bool(argv) and Path(argv[0]).name in COMPONENTS


def _recorded(directory: Path) -> dict:
    try:
        return json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def survey(directory: Path) -> Leftovers:
    """Look at `directory` without changing it."""
    left = Leftovers()
    running = processes_of(directory)
    state = _recorded(directory)
    if (directory / "state.json").exists() and not state:
        left.notes.append("state.json is unreadable")
    if state and not state.get("ready", True):
        left.notes.append("the last `up` never finished (interrupted or failed start)")
    owner = state.get("owner")
    if owner and not _pid_exists(owner):
        left.notes.append(f"its owner (pid {owner}) is gone")
    for name, info in (state.get("procs") or {}).items():
        pid = info.get("pid")
        if pid and pid not in running:
            left.notes.append(f"{name} pid {pid} recorded but gone")
    ports = state.get("ports") or {}
    for pid, name in sorted(running.items()):
        held = ", ".join(f"{k} {v}" for k, v in ports.items() if _port_of(name, k))
        left.processes[pid] = name
        left.notes.append(f"{name} pid {pid} still running{f' (ports {held})' if held else ''}")
    for name in GENERATED:
        path = directory / name
        if path.exists():
            left.files.append(path)
    if (directory / "etcd").exists():
        left.notes.append(f"etcd data of an earlier start ({_size(directory / 'etcd')})")
    return left


def in_use(directory: Path, left: Leftovers) -> bool:
    """True when the recorded bed finished its start, every component still runs and its owner
    (if it has one) lives: someone's bed in use, not leftovers."""
    state = _recorded(directory)
    procs = state.get("procs") or {}
    if not state.get("ready", True) or set(procs) != set(COMPONENTS):
        return False
    owner = state.get("owner")
    if owner and not _pid_exists(owner):
        return False
    pids = {info.get("pid") for info in procs.values()}
    return pids == set(left.processes)


def clear(directory: Path, left: Leftovers, *, timeout: float = 10.0) -> None:
    """End the leftover processes (SIGKILL: their data is about to go), then remove generated state."""
    for pid in left.processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in left.processes) and time.monotonic() < deadline:
        _reap_any(left.processes)
        time.sleep(0.05)
    still = [p for p in left.processes if alive(p)]
    if still:
        raise RuntimeError(f"kube-testenv: leftover processes {still} of {directory} did not die")
    for path in left.files:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    for name in COMPONENTS:
        log = directory / f"{name}.log"
        if log.exists():
            log.replace(directory / f"{name}.log.previous")


def _reap_any(pids: dict[int, str]) -> None:
    """Reap those that are our own children (a bed started earlier by this very process)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_of(component: str, key: str) -> bool:
    owners = {
        "etcd": ("etcd", "etcd_peer"),
        "kube-apiserver": ("apiserver",),
        "kube-controller-manager": ("controller_manager",),
        "kube-scheduler": ("scheduler",),
        "kwok": ("kwok",),
    }
    return key in owners.get(component, ())


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{total / 1e6:.1f} MB"
