"""What turns a valid message into a running Job: Kubernetes, or a local subprocess
(`ksr dev` without a cluster). Both create idempotently and report transitions to the
tracker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from runner.kube import JobRef, KubeApi
from runner.manifest import build_job
from runner.message import Message
from runner.settings import Settings


class Executor(Protocol):
    name: str

    def create(self, message: Message, *, stream: str, entry_id: str,
               keep_going: Callable[[], bool]) -> JobRef: ...

    def launched(self, ref: JobRef) -> None:
        """Called once the Job is recorded (the local executor starts its process here)."""


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, api: KubeApi, settings: Settings) -> None:
        self.api = api
        self.settings = settings

    def create(self, message: Message, *, stream: str, entry_id: str,
               keep_going: Callable[[], bool]) -> JobRef:
        manifest = build_job(message, self.settings, stream=stream, entry_id=entry_id)
        return self.api.create_job(manifest, message_id=message.id, keep_going=keep_going)

    def launched(self, ref: JobRef) -> None:
        pass  # the Job runs by itself once created
