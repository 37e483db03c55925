"""`ksr run` process trees as pods: start one, ask whether it leads, kill it as the kubelet
kills a container (every process in it, found by a marker in their environment: its
children run in sessions of their own and outlive a parent that exits hard)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.pipeline import ksr_run
from tests.support.ports import free_port, wait_for
from tests.support.procs import carrying

MARK = "KSR_TEST_POD_MARK"


@contextmanager
def replica_pods(env: dict[str, str], tmp_path: Path, count: int = 3) -> Iterator[list[Pod]]:
    """`count` pods of one deployment (replica-0, ...); every container killed at the end."""
    pods = [Pod(env, tmp_path, f"replica-{i}") for i in range(count)]
    try:
        yield pods
    finally:
        for pod in pods:
            pod.kill_container()


def leader_of(pods: list[Pod], timeout: float) -> Pod:
    """The pod that leads, once one does."""
    return wait_for(lambda: next((p for p in pods if p.leading()), None), timeout=timeout, what="a leader")


def _marked(mark: str) -> list[int]:
    """Pids of the processes carrying MARK=mark in their environment."""
    return carrying(MARK, mark)


class Pod:
    """One `ksr run` process tree, as a pod's container."""

    def __init__(self, env: dict[str, str], tmp_path: Path, name: str, generation: int = 0) -> None:
        self.name = name
        self.port = free_port()
        self.mark = uuid.uuid4().hex
        self.log = tmp_path / f"{name}.{generation}.log"
        self.env = {
            **env,
            "POD_NAME": name,
            "HTTP_SERVER_PORT": str(self.port),
            MARK: self.mark,
            "KSR_RUNTIME_DIR": str(tmp_path / f"{name}.{generation}"),
            "KSR_HTTP_HOST": "127.0.0.1",
        }
        self.proc = ksr_run(self.env, log_path=self.log)

    def status(self) -> dict[str, Any] | None:
        """/status, or None while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=2) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None

    def leading(self) -> bool:
        return bool((self.status() or {}).get("leading"))

    def kill_container(self) -> None:
        """What the kubelet does when the container's main process is gone: kill the rest."""
        for _ in range(5):  # bounded: a dying gunicorn master may fork once more
            pids = _marked(self.mark)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_for(lambda: not set(pids) & set(_marked(self.mark)), timeout=10, what=f"{self.name} killed")
        assert not _marked(self.mark), f"processes of {self.name} survive SIGKILL"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.kill_container()
        if self.proc.poll() is None:
            self.proc.wait(10)

    def tail(self, n: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""
