"""Run the real pipeline in tests: the Runner in a thread of the test process (or `ksr run`
processes), a real RQ worker subprocess, and messages XADDed as producers do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from runner.callbacks.worker import worker_command, worker_env
from runner.process.children import stop_child
from runner.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def base_env(*, redis_url: str, namespace: str, kubeconfig: str | None, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "POD_NAME": f"runner-{uuid.uuid4().hex[:6]}",
        "POD_NAMESPACE": namespace,
        "KSR_ALLOWED_NAMESPACES": namespace,
        "KSR_WEBHOOK_ALLOW": "127.0.0.1",
        "KSR_BLOCK_MS": "300",
        "POLLING_INTERVAL": "1",
        "KSR_LEASE_DURATION": "4",
        "KSR_RENEW_DEADLINE": "3",
        "KSR_RETRY_PERIOD": "0.5",
        "KSR_CALLBACK_BACKOFF_BASE": "0.5",
        "KSR_CALLBACK_BACKOFF_CAP": "2",
        "KSR_STATE_TTL": "3600",
        "KSR_LOG_FORMAT": "text",
    }
    if kubeconfig:
        env.update(KUBECONFIG=kubeconfig, KSR_LOCK="lease", KSR_EXECUTOR="kubernetes")
    else:
        env.update(KSR_LOCK="redis", KSR_EXECUTOR="local")
    env.update(extra)
    return env


def xadd(redis_client: Any, stream: str, msg: Mapping[str, Any] | str) -> str:
    payload = msg if isinstance(msg, str) else json.dumps(msg)
    return redis_client.xadd(stream, {"payload": payload}).decode()


@contextmanager
def rq_worker(env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    settings = Settings.from_env(dict(env))
    full = {**os.environ, **env, **worker_env(settings)}
    proc = subprocess.Popen(
        worker_command(settings), env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        stop_child(proc)


@contextmanager
def runner_thread(env: Mapping[str, str], api_client: Any = None) -> Iterator[Any]:
    """The Runner of `env` in a thread of this process; stopped (gracefully) at exit."""
    from runner.pipeline.wiring import build_runner

    settings = Settings.from_env(dict(env))
    runner = build_runner(settings, api_client=api_client)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the runner did not stop within 30s"


def ksr_run(
    env: Mapping[str, str], *args: str, log_path: str | os.PathLike[str] | None = None
) -> subprocess.Popen[bytes]:
    """`ksr run` as its own process (what a pod runs); its output goes to `log_path`
    (never to an unread pipe, which would block it once full)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "run", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
