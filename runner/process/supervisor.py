"""The process model of `ksr run`.

One pod, one container, these processes:

- the main process: the runner (`runner_main`: elector, reader, watcher) in a thread of its
  own, while the main thread supervises and handles signals;
- gunicorn serving `probes.app` (its master and workers), a child;
- an RQ worker sending the webhook callbacks, a child.

Children run in sessions of their own, so the supervisor alone decides when they stop, and a
dead child's leftovers (gunicorn workers orphaned by a killed master) are killed with its
process group. They die with the supervisor even when it is SIGKILLed (lifeline.py). The
supervisor holds the runtime directory's lock for its lifetime (runtime_lock.py): a second
`ksr run` on the same directory is refused before it wipes anything. A child that dies is restarted after an exponential backoff (capped; reset
once it has run for a while).

The runner dying must not be hidden: the supervisor marks it failed on the status board,
the runner's loops stop beating, and /healthz answers 503 with the reason, so the kubelet
restarts the container. SIGTERM/SIGINT: set the stop event, wait for `runner_main` to return
(at most the shutdown grace), then SIGTERM the children, wait, SIGKILL what is left.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from election.clock import SYSTEM_CLOCK, Clock
from runner import backoff, metrics
from runner.process.lifeline import ENV_PARENT_PID
from runner.process.runtime_lock import DirectoryLock
from runner.process.statusboard import (
    ENV_RUNTIME_DIR,
    RuntimePaths,
    StatusBoard,
    runtime_paths,
)
from runner.settings import Settings

__all__ = [
    "Backoff",
    "ChildSpec",
    "Supervisor",
]

log = logging.getLogger(__name__)

CHILD_GRACE = 5.0  # seconds for the children after SIGTERM (gunicorn's graceful_timeout is 5)

RunnerMain = Callable[[threading.Event], None]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)  # added to the supervisor's environment


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n+1 after n quick failures: base * 2**n, at most cap.
    A child that ran `reset_after` seconds counts as healthy again."""

    base: float = 0.5
    cap: float = 30.0
    reset_after: float = 30.0

    def delay(self, failures: int) -> float:
        return backoff.delay(failures + 1, base=self.base, cap=self.cap)


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.failures = 0  # consecutive quick deaths, for the backoff
        self.next_start: float | None = 0.0  # monotonic time of the next start; None: running
        self.last_exit: int | None = None


class Supervisor:
    """Construct it first thing in `ksr run`, before anything creates metrics: it wipes the
    runtime dir of the previous container. Then build the runner inside `runner_main`, using
    `supervisor.board`."""

    def __init__(
        self,
        settings: Settings,
        *,
        children: list[ChildSpec],
        paths: RuntimePaths | None = None,
        grace: float | None = None,
        child_grace: float = CHILD_GRACE,
        backoff: Backoff = Backoff(),
        clock: Clock = SYSTEM_CLOCK,
        poll_interval: float = 0.2,
    ) -> None:
        self.settings = settings
        self.paths = paths or runtime_paths()
        self.grace = settings.server.shutdown_grace if grace is None else grace
        self.child_grace = child_grace
        self.backoff = backoff
        self.clock = clock
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        self._children = [_Child(spec) for spec in children]
        self._prepare_runtime()
        self.board = StatusBoard(self.paths.status_file, clock=clock, identity=settings.identity.pod_name)
        self.board.flush()  # the probes find a board ("starting") from their first request
        self._runner_error: str | None = None

    def _prepare_runtime(self) -> None:
        # Before the wipe: a second live user of these directories is refused, not wiped.
        self._locks = [DirectoryLock(self.paths.runtime_dir, variable=ENV_RUNTIME_DIR)]
        if not self.paths.metrics_dir.resolve().is_relative_to(self.paths.runtime_dir.resolve()):
            self._locks.append(DirectoryLock(self.paths.metrics_dir, variable=metrics.ENV_MULTIPROC_DIR))
        metrics.setup_multiprocess(self.paths.metrics_dir, wipe=True)
        os.environ[ENV_RUNTIME_DIR] = str(self.paths.runtime_dir)  # the children find the board here
        self.paths.status_file.unlink(missing_ok=True)

    # -- the contract --------------------------------------------------------------------------

    def run(self, runner_main: RunnerMain) -> int:
        """Run until SIGTERM/SIGINT (or `stop_event`). Returns the exit code: 0 after a clean
        shutdown; 1 when the runner failed, or did not return within the grace period."""
        restore = self._install_signal_handlers()
        thread = threading.Thread(target=self._run_runner, args=(runner_main,), name="ksr-runner", daemon=True)
        try:
            for child in self._children:
                self._start(child)
            self.board.set_runner_state("running")
            thread.start()
            died = False
            while not self.clock.wait(self.stop_event, self.poll_interval):
                self._tend_children()
                if not died and not thread.is_alive():
                    died = True
                    self._runner_died()
            return self._shutdown(thread, died_before_stop=died)
        finally:
            restore()
            for lock in self._locks:
                lock.release()

    def stop(self) -> None:
        self.stop_event.set()

    # -- runner ---------------------------------------------------------------------------------

    def _run_runner(self, runner_main: RunnerMain) -> None:
        try:
            runner_main(self.stop_event)
        except BaseException as e:  # the supervisor reports it; the thread just ends
            self._runner_error = f"runner raised {type(e).__name__}: {e}"
            log.error("the runner failed", exc_info=True)
            self.board.record_error(self._runner_error + "\n" + "".join(traceback.format_exception(e))[-1500:])

    def _runner_died(self) -> None:
        reason = self._runner_error or "runner_main returned before shutdown"
        if self._runner_error is None:
            self.board.record_error(reason)
        log.error("%s; the probes fail from now on, so that the container is restarted", reason)
        self.board.set_runner_state("failed", reason)
        self.board.set_leadership(leading=False, leader=None, term=None)
        self.board.set_elector_running(False)

    def _shutdown(self, thread: threading.Thread, *, died_before_stop: bool) -> int:
        failed = died_before_stop
        log.info("shutting down: waiting up to %gs for the runner", self.grace)
        if not failed:
            self.board.set_runner_state("stopping", "signal")
        thread.join(self.grace)
        overran = thread.is_alive()
        if overran:
            log.error("the runner did not stop within %gs; stopping the children anyway", self.grace)
            self.board.record_error(f"runner did not stop within {self.grace:g}s of the shutdown signal")
        elif not failed:
            failed = self._runner_error is not None  # it raised while stopping
        if not failed and not overran:
            self.board.set_runner_state("stopped", "shutdown")
        self._stop_children()
        self.board.set_leadership(leading=False, leader=None, term=None)
        self.board.flush()
        return 1 if failed or overran else 0

    # -- children -------------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env, ENV_PARENT_PID: str(os.getpid())}  # see lifeline.py
        try:
            child.proc = subprocess.Popen(
                list(child.spec.argv), env=env, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as e:
            log.error("could not start %s: %s", child.spec.name, e)
            self._schedule_restart(child, ran_for=0.0)
            return
        child.started_at = self.clock.monotonic()
        child.next_start = None
        log.info("started %s (pid %d)", child.spec.name, child.proc.pid)
        self._publish_children()

    def _tend_children(self) -> None:
        now = self.clock.monotonic()
        for child in self._children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                log.warning("%s (pid %d) exited with %s", child.spec.name, child.proc.pid, _describe_exit(code))
                self.board.record_error(f"{child.spec.name} (pid {child.proc.pid}) exited with {_describe_exit(code)}")
                _kill_group(child.proc.pid, signal.SIGKILL)  # leftovers such as orphaned workers
                metrics.cleanup_dead_processes(self.paths.metrics_dir)
                child.last_exit = code
                child.proc = None
                self._schedule_restart(child, ran_for=now - child.started_at)
            elif child.proc is None and child.next_start is not None and now >= child.next_start:
                child.restarts += 1
                self._start(child)

    def _schedule_restart(self, child: _Child, *, ran_for: float) -> None:
        if ran_for >= self.backoff.reset_after:
            child.failures = 0
        delay = self.backoff.delay(child.failures)
        child.failures += 1
        child.next_start = self.clock.monotonic() + delay
        log.info("restarting %s in %.1fs", child.spec.name, delay)
        self._publish_children()

    def _publish_children(self) -> None:
        self.board.set_children(
            {
                c.spec.name: {"pid": c.proc.pid if c.proc else None, "restarts": c.restarts, "last_exit": c.last_exit}
                for c in self._children
            }
        )

    def _stop_children(self) -> None:
        running = [c for c in self._children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            assert child.proc is not None
            log.info("stopping %s (pid %d)", child.spec.name, child.proc.pid)
            _kill_group(child.proc.pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + self.child_grace
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - self.clock.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %gs; killing it", child.spec.name, self.child_grace)
            _kill_group(child.proc.pid, signal.SIGKILL)  # whatever is left of its group
            child.proc.wait()
        metrics.cleanup_dead_processes(self.paths.metrics_dir)

    # -- signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # embedded (tests): stop through stop()

        def handle(signum: int, frame: FrameType | None) -> None:
            if self.stop_event.is_set():
                log.warning("%s again; already stopping", signal.Signals(signum).name)
                return
            log.info("%s received: stopping", signal.Signals(signum).name)
            self.stop_event.set()

        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
