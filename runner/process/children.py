"""Stopping a child process: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_child(proc: subprocess.Popen[Any], grace: float = 10.0) -> int:
    """Ask `proc` to stop, kill it if it has not within `grace` seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:  # a stuck child must not hang whoever stops it
        proc.kill()
        return proc.wait()
