"""`ksr run`'s process model with a stand-in runner, for the probe and supervisor tests.

`python -m tests.support.probe_stack` runs the real Supervisor with the real children
(gunicorn serving probes.app, an RQ worker); only `runner_main` is a stand-in, steered by
files in KSR_TEST_CONTROL_DIR:

- `leader`: "<identity> <term>" -> the leadership it reports (absent: no leader seen);
- `error`: text recorded once with record_error, then the file is removed;
- `raise`: runner_main raises (the runner "dies");
- `ignore-stop`: runner_main does not return when told to stop.

On a clean stop it writes `released` (where the real runner releases the Lease).
`ProbeStack` starts and stops that process from a test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.procs import carrying

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    from runner.cli.run import default_children
    from runner.logs import setup_logging
    from runner.metrics import MetricsObserver
    from runner.pipeline.leadership import LeadershipView
    from runner.process.statusboard import BoardObserver
    from runner.process.supervisor import Supervisor
    from runner.settings import Settings
    from runner.signals import ActiveJobs, Beat, Dispatched, ErrorRecorded, KubeRequest, MessageHandled, Signals

    setup_logging(os.environ.get("KSR_LOG_FORMAT") or "auto", "INFO")
    settings = Settings.from_env()
    supervisor = Supervisor(settings, children=default_children(settings))  # first: it wipes the runtime dir
    control = Path(os.environ["KSR_TEST_CONTROL_DIR"])
    me = settings.identity.pod_name

    def runner_main(stop: threading.Event) -> None:
        # The same seam as the real runner: signals, and the observers of `ksr run`.
        board = supervisor.board
        signals = Signals([MetricsObserver(), BoardObserver(board)])
        view = LeadershipView()
        board.set_elector_running(True)
        jobs = 0
        for _ in range(10_000_000):  # bounded; one turn per 0.1 s
            if stop.is_set():
                break
            if (control / "raise").exists():
                raise RuntimeError("stand-in runner told to fail")
            leader, term = None, None
            if (control / "leader").exists():
                name, _, number = (control / "leader").read_text().strip().partition(" ")
                leader, term = name, int(number or 0)
            leadership = view.observe(leading=leader == me, leader=leader, term=term)
            if leadership is not None:
                signals.emit(leadership)
            if (control / "error").exists():
                signals.emit(ErrorRecorded((control / "error").read_text().strip()))
                (control / "error").unlink()
            # some metric activity, so /metrics has every kind of series
            signals.emit(MessageHandled("dispatched"))
            signals.emit(Dispatched(latency=0.05))
            signals.emit(KubeRequest("create", 201, 0.01))
            jobs = (jobs + 1) % 7
            signals.emit(ActiveJobs(jobs))
            signals.emit(Beat("reader", time.time()))
            signals.emit(Beat("watcher", time.time()))
            stop.wait(0.1)
        if (control / "ignore-stop").exists():
            threading.Event().wait(3600)
        board.set_elector_running(False)
        (control / "released").write_text(me)

    return supervisor.run(runner_main)


class ProbeStack:
    """One `probe_stack` process on a free port, its environment under `base`."""

    def __init__(self, base: Path, *, redis_url: str, port: int, extra_env: dict[str, str] | None = None) -> None:
        self.base = base
        self.port = port
        self.control = base / "control"
        self.control.mkdir(parents=True, exist_ok=True)
        self.runtime = base / "runtime"
        self.log_path = base / "stack.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KSR_", "PROMETHEUS_", "RQ_"))}
        self.env.update(
            {
                "PYTHONPATH": str(REPO),
                "REDIS_URL": redis_url,
                "HTTP_SERVER_PORT": str(port),
                "KSR_HTTP_HOST": "127.0.0.1",
                "KSR_RUNTIME_DIR": str(self.runtime),
                "KSR_TEST_CONTROL_DIR": str(self.control),
                "KSR_STUCK_THRESHOLD": "3",
                "KSR_BLOCK_MS": "500",
                "POLLING_INTERVAL": "1",
                "KSR_EXECUTOR": "local",
                "KSR_LOCK": "redis",
                "KSR_STREAMS": "t:jobs:high,t:jobs:low",
                "POD_NAME": "probe-test-0",
                "POD_NAMESPACE": "default",
                "KSR_SHUTDOWN_GRACE": "5",
                "KSR_LOG_FORMAT": "json",
            }
        )
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ProbeStack:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.probe_stack"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "")

    def json(self, path: str) -> tuple[int, Any]:
        status, body, _ = self.get(path)
        return status, json.loads(body)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_leftovers()
        return self.proc.returncode

    def _kill_leftovers(self) -> None:
        """Children run in sessions of their own: never leak them if the supervisor was killed.
        Found by the runtime directory in their environment, not by the pids status.json
        remembers: those were reaped long ago, and after a pid wrap killpg of one killed the
        shared bed's kube-apiserver (a session leader of its own) mid-run."""
        for pid in set(carrying("KSR_RUNTIME_DIR", str(self.runtime))) - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


if __name__ == "__main__":
    sys.exit(main())
