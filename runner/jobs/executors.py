"""What turns a valid message into a running Job: Kubernetes, or a local subprocess
(`ksr dev` without a cluster). Both create idempotently and report transitions to the
tracker.

The local executor runs a message's command and args as a subprocess on this machine (the
image is not used), with its env applied and activeDeadlineSeconds as the timeout. It
reports the same transitions as a Job would."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Protocol

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


class LocalExecutor:
    name = "local"

    def __init__(
        self, *, tracker: Callable[[], Tracker], workdir: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._tracker = tracker
        self.clock = clock
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
        if proc is not None:
            proc.terminate()

    def stop(self) -> None:
        with self._mutex:
            procs = list(self._running.values())
        for proc in procs:
            proc.terminate()

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
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=self._workdir,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
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
            try:
                _, err = proc.communicate(timeout=job.active_deadline_seconds)
                code, reason = proc.returncode, "Error"
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                code, reason = None, "DeadlineExceeded"
            finally:
                with self._mutex:
                    self._running.pop(ref.name, None)
            duration = self.clock.monotonic() - started
            if code == 0:
                tracker.completed(message.id, duration=duration, pod_name=ref.name, pod_uid=str(proc.pid))
                return
            tail = (err or b"").decode(errors="replace")[-OUTPUT_TAIL:].strip()
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
