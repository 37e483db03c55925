"""What turns a valid message into a running Job: Kubernetes, or a local subprocess
(`ksr dev` without a cluster). Both create idempotently and report transitions to the
tracker.

The local executor runs a message's command and args as a subprocess on this machine (the
image is not used), with its env applied and activeDeadlineSeconds as the timeout. It
reports the same transitions as a Job would. Each job runs in a session (and process group)
of its own, and everything in that group ends with the job, as a pod's processes end with
its container: a cancel, the deadline, the end of the job's main process and the runner's
stop all signal the whole group (SIGTERM, then SIGKILL after a grace). A process that starts
a session of its own (setsid, a daemon) leaves the group and is not followed."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import IO, Protocol

from election.clock import SYSTEM_CLOCK, Clock
from runner.jobs.kube import JobRef, KubeApi
from runner.jobs.manifest import build_job, job_name
from runner.jobs.tracker import Tracker
from runner.logs import log_context
from runner.message import Message
from runner.settings import Settings

log = logging.getLogger(__name__)


class Executor(Protocol):
    name: str

    def create(
        self,
        message: Message,
        *,
        stream: str,
        entry_id: str,
        keep_going: Callable[[], bool],
        retry_for: float | None = None,
    ) -> JobRef:
        """Create idempotently; a transient error still there after `retry_for` seconds is raised."""
        ...

    def launched(self, ref: JobRef) -> None:
        """Called once the Job is recorded (the local executor starts its process here)."""


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, api: KubeApi, settings: Settings) -> None:
        self.api = api
        self.settings = settings

    def create(
        self,
        message: Message,
        *,
        stream: str,
        entry_id: str,
        keep_going: Callable[[], bool],
        retry_for: float | None = None,
    ) -> JobRef:
        manifest = build_job(message, self.settings, stream=stream, entry_id=entry_id)
        return self.api.create_job(manifest, message_id=message.id, keep_going=keep_going, retry_for=retry_for)

    def launched(self, ref: JobRef) -> None:
        pass  # the Job runs by itself once created


NAMESPACE = "local"
OUTPUT_TAIL = 400  # characters of stderr kept for a failure message
STOP_GRACE = 5.0  # seconds a job's processes get between SIGTERM and SIGKILL (gunicorn's too)


def _tail(output: IO[bytes]) -> str:
    """The last OUTPUT_TAIL characters a job wrote to `output`."""
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - 4 * OUTPUT_TAIL))  # UTF-8: at most 4 bytes a character
    return output.read().decode(errors="replace")[-OUTPUT_TAIL:].strip()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):  # the group has ended
        pass


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        *,
        tracker: Callable[[], Tracker],
        workdir: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self._tracker = tracker
        self.clock = clock
        self.stop_grace = stop_grace
        self._workdir = workdir
        self._pending: dict[str, Message] = {}
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._mutex = threading.Lock()

    def create(
        self,
        message: Message,
        *,
        stream: str,
        entry_id: str,
        keep_going: Callable[[], bool],
        retry_for: float | None = None,
    ) -> JobRef:
        name = job_name(message.job.prefix_name, message.id)
        with self._mutex:
            adopted = name in self._running or name in self._pending
            if not adopted:
                self._pending[name] = message
        return JobRef(name=name, namespace=NAMESPACE, uid=f"local-{name}", adopted=adopted)

    def launched(self, ref: JobRef) -> None:
        """The Job is recorded: start its process now, so its transitions find the record."""
        with self._mutex:
            message = self._pending.pop(ref.name, None)
        if message is not None:
            threading.Thread(target=self._run, args=(ref, message), name=f"local-{ref.name}", daemon=True).start()

    def running(self) -> set[str]:
        with self._mutex:
            return set(self._running) | set(self._pending)

    def kill(self, name: str) -> None:
        """End the process of Job `name` (a cancel); its end is then no news to the tracker."""
        with self._mutex:
            self._pending.pop(name, None)
            proc = self._running.get(name)
        if proc is not None:  # in the background: the caller is the leader's loop
            threading.Thread(target=self._end, args=([proc],), name=f"kill-{name}", daemon=True).start()

    def stop(self) -> None:
        """End every running job's processes (see `_end`), before returning."""
        with self._mutex:
            procs = list(self._running.values())
        self._end(procs)

    def _end(self, procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM to each job's group, at most `stop_grace` seconds for the main processes to
        exit, then SIGKILL to every group (whatever is left of it)."""
        for proc in procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = self.clock.monotonic() + self.stop_grace
        while any(p.poll() is None for p in procs) and self.clock.monotonic() < deadline:
            self.clock.sleep(0.05)
        for proc in procs:
            _signal_group(proc.pid, signal.SIGKILL)

    def _wait(self, name: str, proc: subprocess.Popen[bytes], deadline: float | None) -> tuple[int | None, str]:
        """Until the main process ends, or kill the group at the deadline: (exit code or
        None, the failure reason). Then the rest of its group ends, as in a container (the
        main process's pid stays the group's id while any member of the group lives)."""
        try:
            proc.wait(timeout=deadline)
            return proc.returncode, "Error"
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, "DeadlineExceeded"
        finally:
            with self._mutex:
                self._running.pop(name, None)
            _signal_group(proc.pid, signal.SIGKILL)

    def _run(self, ref: JobRef, message: Message) -> None:
        tracker = self._tracker()
        job = message.job
        argv = [*(job.command or []), *(job.args or [])]
        with log_context(message_id=message.id, job_name=ref.name):
            if not argv:
                tracker.exception(
                    message.id, code="NoCommand", message="the local executor runs job.command/job.args; both are empty"
                )
                return
            env = {**os.environ, **{e.name: e.value for e in job.env}}
            started = self.clock.monotonic()
            # stderr goes to a file, not a pipe: a background child holding a pipe open would
            # keep the job "running" after its main process ended.
            with tempfile.TemporaryFile(prefix="ksr-local-") as stderr:
                try:
                    proc = subprocess.Popen(
                        argv,
                        env=env,
                        cwd=self._workdir,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # its own process group: ended as a whole
                    )
                except OSError as e:
                    tracker.exception(message.id, code="StartError", message=f"cannot run {argv[0]!r}: {e}")
                    return
                with self._mutex:
                    self._running[ref.name] = proc
                log.info(
                    "local job %s started (pid %d): %s (image %s not used locally)",
                    ref.name,
                    proc.pid,
                    " ".join(argv),
                    job.image,
                )
                tracker.pod_started(message.id, pod_name=ref.name, pod_uid=str(proc.pid))
                code, reason = self._wait(ref.name, proc, job.active_deadline_seconds)
                tail = _tail(stderr)
            duration = self.clock.monotonic() - started
            if code == 0:
                tracker.completed(message.id, duration=duration, pod_name=ref.name, pod_uid=str(proc.pid))
                return
            what = (
                f"exceeded activeDeadlineSeconds={job.active_deadline_seconds}" if code is None else f"exit code {code}"
            )
            tracker.failed(
                message.id,
                code=reason,
                message=f"{what}{': ' + tail if tail else ''}",
                pod_name=ref.name,
                pod_uid=str(proc.pid),
                duration=duration,
            )
