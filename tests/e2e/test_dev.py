"""`ksr dev` from nothing: a private redis-server, the Redis lock, the local executor,
the probes, and the sample jobs processed to completion with their callbacks printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.pipeline import ROOT


def test_ksr_dev_runs_the_samples_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KSR_LOCK", "KSR_EXECUTOR")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: no cluster
    env["KSR_RUNTIME_DIR"] = str(tmp_path / "runtime")
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "dev", "--port", "0", "--samples",
                           "--exit-when-done", "--timeout", "90"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "started a private redis-server" in out
    assert "LOCAL executor" in out
    callbacks = re.findall(r"^callback  (\S+)  (\d+) ", out, flags=re.M)
    by_id: dict[str, list[int]] = {}
    for mid, status in callbacks:
        by_id.setdefault(mid, []).append(int(status))
    assert by_id["sample-hello"] == [0, 1, 2]
    assert by_id["sample-env"] == [0, 1, 2]  # the env var reached the process
    assert by_id["sample-sleep"] == [0, 1, 2]
    assert by_id["sample-fail"] == [0, 1, 3]
    assert "all 4 sample jobs finished" in out
