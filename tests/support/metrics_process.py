"""Run Python code in a fresh process with its own PROMETHEUS_MULTIPROC_DIR: prometheus_client
keeps per-process state that a test must not leave behind in the pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from runner import metrics

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, env_dir: Path | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != metrics.ENV_MULTIPROC_DIR}
    if env_dir is not None:
        env[metrics.ENV_MULTIPROC_DIR] = str(env_dir)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
