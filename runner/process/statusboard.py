"""How the runner (the main process of `ksr run`) tells the probes (gunicorn workers) its state.

A small JSON file, `<runtime dir>/status.json`, rewritten atomically (temporary file +
rename, so a reader never sees half a file) by the runner and read by the probes on every
request. Writes are throttled: heartbeats and the active-Job count at most every
`min_interval` seconds; leadership, elector and runner-state changes and errors at once.

Heartbeat ages are judged on CLOCK_MONOTONIC, which every process on the host shares
(`time.monotonic()` is system-wide on Linux), so a wall-clock step cannot make a live runner
look stuck or a stuck one live. Wall times are written too, for people.

The runtime dir is KSR_RUNTIME_DIR; without it `<parent of PROMETHEUS_MULTIPROC_DIR>/ksr-runtime`;
without either `<tmp>/ksr-runtime-<uid>`. PROMETHEUS_MULTIPROC_DIR defaults to
`<runtime dir>/metrics` (both declared in runner/settings/variables.py). The supervisor wipes
both at pod start.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from election.clock import SYSTEM_CLOCK, Clock
from runner.settings.variables import MULTIPROC_DIR, RUNTIME_DIR
from runner.signals import ActiveJobs, Beat, ElectorState, ErrorRecorded, KubeThrottled, Leadership, Signal

__all__ = [
    "THROTTLE_SHOWN",
    "THROTTLE_WINDOW",
    "BoardObserver",
    "ENV_RUNTIME_DIR",
    "RuntimePaths",
    "StatusBoard",
    "read_status",
    "runtime_paths",
]

log = logging.getLogger(__name__)

ENV_RUNTIME_DIR = RUNTIME_DIR.name
STATUS_FILE = "status.json"
MAX_ERRORS = 20
SCHEMA = 1
# Kubernetes API throttling on /status: a reason in `degraded` while the last request held
# back is at most THROTTLE_SHOWN seconds old, counting those of the last THROTTLE_WINDOW.
THROTTLE_WINDOW = 60.0
THROTTLE_SHOWN = 10.0
_PLURAL = {"create": "creates", "get": "gets", "patch": "patches", "delete": "deletes", "list": "lists"}


@dataclass(frozen=True)
class RuntimePaths:
    runtime_dir: Path
    metrics_dir: Path
    status_file: Path


def runtime_paths(env: Mapping[str, str] | None = None) -> RuntimePaths:
    runtime: Path = RUNTIME_DIR.read(env)
    return RuntimePaths(runtime_dir=runtime, metrics_dir=MULTIPROC_DIR.read(env), status_file=runtime / STATUS_FILE)


class StatusBoard:
    """The runner's side. Thread-safe; every method is cheap enough to call from a hot loop.
    The runner writes it through `BoardObserver` (below); the supervisor writes its
    own fields (runner state, children) and clears leadership when the runner is gone.

    Runner states: "starting" -> "running" -> "stopping" -> "stopped", or "failed" (the
    runner raised or returned on its own; liveness fails from then on).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = SYSTEM_CLOCK,
        identity: str = "",
        min_interval: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._min_interval = min_interval
        self._mutex = threading.Lock()
        self._errors: deque[dict[str, Any]] = deque(maxlen=MAX_ERRORS)
        self._loops: dict[str, dict[str, float]] = {}
        self._last_write: float | None = None
        self._write_failed = False
        self._state: dict[str, Any] = {
            "schema": SCHEMA,
            "identity": identity,
            "pid": os.getpid(),
            "started_wall": clock.time(),
            "started_monotonic": clock.monotonic(),
            "runner": {"state": "starting", "reason": None},
            "leading": False,
            "leader": None,
            "term": None,
            "elector": {"running": False, "healthy": True},
            "active_jobs": 0,
            "children": {},
            "kube_throttled": {},
        }

    # -- runner side -------------------------------------------------------------------------

    def beat(self, loop: str) -> None:
        """`loop` is alive. Liveness fails when a loop that beat once stops beating (the
        runner's loop beats whether it leads or follows)."""
        with self._mutex:
            self._loops[loop] = {"monotonic": self._clock.monotonic(), "wall": self._clock.time()}
            self._write_locked(force=False)

    def set_leadership(self, *, leading: bool, leader: str | None, term: int | None) -> None:
        with self._mutex:
            changed = (leading, leader, term) != (self._state["leading"], self._state["leader"], self._state["term"])
            self._state.update(leading=leading, leader=leader, term=term)
            if changed:
                self._write_locked(force=True)

    def set_elector_running(self, running: bool) -> None:
        self._set_field("elector", {**self._state["elector"], "running": running})

    def set_elector(self, *, running: bool, healthy: bool) -> None:
        self._set_field("elector", {"running": running, "healthy": healthy})

    def set_active_jobs(self, n: int) -> None:
        with self._mutex:
            if self._state["active_jobs"] != n:
                self._state["active_jobs"] = n
                self._write_locked(force=False)

    def record_error(self, text: str) -> None:
        """Keep `text` among the last 20 errors shown by /status and the page."""
        with self._mutex:
            self._errors.append({"wall": self._clock.time(), "monotonic": self._clock.monotonic(), "text": text[:2000]})
            self._write_locked(force=True)

    def record_throttled(self, verb: str, source: str, seconds: float) -> None:
        """A Kubernetes request held back (runner.signals.KubeThrottled): kept for
        THROTTLE_WINDOW seconds, shown in /status's `degraded` (`degraded_reasons`)."""
        with self._mutex:
            now = self._clock.monotonic()
            key = f"{source}:{verb}"
            entry = self._state["kube_throttled"].get(key) or {"verb": verb, "source": source, "seconds_counts": []}
            # counts per whole second of the monotonic clock: at most 61 pairs, however many requests
            second = float(int(now))
            counts = [[s, n] for s, n in entry["seconds_counts"] if now - s < THROTTLE_WINDOW + 1]
            fresh = not counts
            if counts and counts[-1][0] == second:
                counts[-1][1] += 1
            else:
                counts.append([second, 1])
            self._state["kube_throttled"] = {
                **self._state["kube_throttled"],
                key: {**entry, "seconds_counts": counts, "last": now, "seconds": seconds},
            }
            self._write_locked(force=fresh)  # the first one at once, the rest with the beats

    def set_runner_state(self, state: str, reason: str | None = None) -> None:
        self._set_field("runner", {"state": state, "reason": reason})

    def set_children(self, children: Mapping[str, Mapping[str, Any]]) -> None:
        """The supervisor's view of its child processes (pid, restarts), for /status."""
        self._set_field("children", {k: dict(v) for k, v in children.items()})

    def flush(self) -> None:
        """Write now whatever changed since the last write."""
        with self._mutex:
            self._write_locked(force=True)

    # -- internals ---------------------------------------------------------------------------

    def _set_field(self, name: str, value: Any) -> None:
        with self._mutex:
            if self._state.get(name) != value:
                self._state[name] = value
                self._write_locked(force=True)

    def _write_locked(self, *, force: bool) -> None:
        now = self._clock.monotonic()
        if not force and self._last_write is not None and now - self._last_write < self._min_interval:
            return  # throttled; the next beat or flush() writes it
        doc = dict(self._state)
        doc["loops"] = dict(self._loops)
        doc["last_errors"] = list(self._errors)
        doc["written_monotonic"] = now
        doc["written_wall"] = self._clock.time()
        try:
            _atomic_write(self.path, json.dumps(doc, separators=(",", ":"), default=str).encode())
        except OSError as e:
            # The probes will call the runner stuck; say why here, once per failure burst.
            if not self._write_failed:
                log.warning("could not write the status board %s: %s", self.path, e)
            self._write_failed = True
            return
        self._write_failed = False
        self._last_write = now


class BoardObserver:
    """How the runner writes the board: runner.signals in, board fields out."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def __repr__(self) -> str:
        return f"BoardObserver({self.board.path})"

    def __call__(self, signal: Signal) -> None:
        match signal:
            case Beat(loop=loop):
                self.board.beat(loop)
            case Leadership(leading=leading, leader=leader, term=term):
                self.board.set_leadership(leading=leading, leader=leader, term=term)
            case ElectorState(running=running, healthy=healthy):
                self.board.set_elector(running=running, healthy=healthy)
            case ActiveJobs(count=count):
                self.board.set_active_jobs(count)
            case ErrorRecorded(text=text):
                self.board.record_error(text)
            case KubeThrottled(verb=verb, source=source, seconds=seconds):
                self.board.record_throttled(verb, source, seconds)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic on one filesystem: readers see the old or the new file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_status(path: str | os.PathLike[str], *, monotonic: float | None = None) -> dict[str, Any]:
    """The board as the probes see it, with ages (seconds) computed now.

    Raises FileNotFoundError when the runner has not written it yet, ValueError when it is
    not a status board.
    """
    raw = Path(path).read_bytes()
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a status board of schema {SCHEMA}")
    now = SYSTEM_CLOCK.monotonic() if monotonic is None else monotonic
    doc["age"] = max(0.0, now - float(doc["written_monotonic"]))
    doc["uptime"] = max(0.0, now - float(doc["started_monotonic"]))
    for beat in doc.get("loops", {}).values():
        beat["age"] = max(0.0, now - float(beat["monotonic"]))
    for error in doc.get("last_errors", []):
        error["age"] = max(0.0, now - float(error["monotonic"]))
    doc["degraded"] = degraded_reasons(doc, now)
    return doc


def degraded_reasons(doc: Mapping[str, Any], now: float) -> list[str]:
    """Why the runner works, but slower than it could: the Kubernetes API holding its
    requests back, each reason gone THROTTLE_SHOWN seconds after the last such request."""
    reasons = []
    for entry in (doc.get("kube_throttled") or {}).values():
        last = entry.get("last")
        if last is None or now - float(last) > THROTTLE_SHOWN:
            continue
        recent = sum(int(n) for s, n in entry.get("seconds_counts", []) if now - float(s) < THROTTLE_WINDOW)
        verb, source = str(entry.get("verb")), entry.get("source")
        what = _PLURAL.get(verb, f"{verb} requests")
        count = str(max(1, recent))
        seconds = float(entry.get("seconds") or 0.0)
        if source == "server":
            reasons.append(
                f"kubernetes API throttling {what}: {count} 429s in the last {THROTTLE_WINDOW:g} s, "
                f"Retry-After {seconds:g} s"
            )
        else:
            reasons.append(
                f"KSR_KUBE_QPS/KSR_KUBE_BURST pacing {what}: {count} waited for a token in the last "
                f"{THROTTLE_WINDOW:g} s, the last {seconds:.2f} s"
            )
    return sorted(reasons)
