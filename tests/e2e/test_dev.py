"""`ksr dev` from nothing: a private redis-server, the Redis lock, the local executor,
the probes, and the sample jobs processed to completion with their callbacks printed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.support.devproc import DevProcess, dev_env
from tests.support.pipeline import ROOT
from tests.support.ports import free_port, listening_addresses, wait_for
from tests.support.procs import kill_tree


def _dev_env(tmp_path, *, cluster: bool = False, **extra: str) -> dict[str, str]:
    """This environment without a Redis, lock or executor choice; HOME in tmp_path, so there is
    no ~/.kube/config (and, unless `cluster`, no cluster either)."""
    dropped = ("REDIS_URL", "KSR_LOCK", "KSR_EXECUTOR") + (() if cluster else ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"))
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(HOME=str(tmp_path), KSR_RUNTIME_DIR=str(tmp_path / "runtime"), **extra)
    return env


def _run_samples(env: dict[str, str], *, seconds: int) -> str:
    """`ksr dev --samples --exit-when-done`; its stdout once it exited 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "dev", "--port", "0", "--samples", "--exit-when-done"]
        + ["--timeout", str(seconds)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    return out


def test_ksr_dev_runs_the_samples_end_to_end(tmp_path):
    out = _run_samples(_dev_env(tmp_path), seconds=90)
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
    assert '"message": "exit code 3: something broke"' in out  # the tail of the job's stderr
    assert "all 4 sample jobs finished" in out


@pytest.mark.kube
def test_ksr_dev_sends_the_samples_to_the_cluster_of_kubeconfig(tmp_path, kube):
    from kubernetes import client

    env = _dev_env(
        tmp_path,
        cluster=True,
        KUBECONFIG=kube.kubeconfig,
        POD_NAMESPACE="default",
        LEADER_ELECTION_LOCK_NAME=f"ksr-dev-{tmp_path.name[-8:]}",
    )
    batch = client.BatchV1Api(kube.api_client())
    try:
        out = _run_samples(env, seconds=120)
        assert "Kubernetes executor" in out and "LOCAL" not in out
        finals = dict(re.findall(r"^callback  (\S+)  (2|3|99) ", out, flags=re.M))
        assert set(finals) == {"sample-hello", "sample-env", "sample-sleep", "sample-fail"}
        jobs = batch.list_namespaced_job("default", label_selector="app.kubernetes.io/managed-by=kube-stream-runner")
        names = {j.metadata.annotations["kube-stream-runner/message-id"] for j in jobs.items}
        assert names == set(finals)  # real Jobs, run by kwok (which ignores the commands)
    finally:
        batch.delete_collection_namespaced_job(
            "default", label_selector="app.kubernetes.io/managed-by=kube-stream-runner", propagation_policy="Background"
        )


def test_ksr_dev_serves_on_http_server_port_without_port_option(tmp_path):
    port = free_port()
    env = _dev_env(tmp_path, HTTP_SERVER_PORT=str(port))
    out = tmp_path / "dev.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "dev"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: _status_of(f"http://127.0.0.1:{port}/healthz") == 200, timeout=60, what=f"ksr dev on {port}")
        assert re.search(rf"^status page +http://127.0.0.1:{port}/ ", out.read_text(), flags=re.M)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, out.read_text()[-3000:]
    finally:
        kill_tree(proc.pid)
        proc.wait(10)


def _status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as r:
        return int(r.status)


def _alive(pid: int) -> bool:
    """Running (a zombie, or a pid gone, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("sig", "ignores_term"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["SIGINT-job-ignores-SIGTERM", "SIGTERM"],
)
def test_a_signal_to_ksr_dev_leaves_no_job_process_behind(tmp_path, sig, ignores_term):
    """A user's kill (or Ctrl-C) of ksr dev's pid: every process of a running job ends too,
    its shell and what the shell started in the background, even when they ignore SIGTERM."""
    dev = DevProcess(dev_env(tmp_path), tmp_path / "dev.log")
    try:
        dev.wait_ready()
        pids = tmp_path / "job.pids"
        script = (
            "trap '' TERM; " if ignores_term else ""
        ) + f"sleep 300 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
        message = {
            "id": "stuck-1",
            "service": "example",
            "job": {
                "prefixName": "stuck",
                "namespace": "default",
                "image": "busybox:latest",
                "command": ["/bin/sh", "-c", script],
                "activeDeadlineSeconds": 600,
            },
        }
        r = redis.Redis.from_url(dev.banner_value("redis-server at"))
        r.xadd("ksr:jobs:default", {"payload": json.dumps(message)})
        wait_for(pids.exists, timeout=30, what="the job's shell and its background sleep")
        job_pids = [int(p) for p in pids.read_text().split()]
        assert len(job_pids) == 2 and all(_alive(p) for p in job_pids)
        assert dev.stop(sig) == 0, dev.output()[-3000:]
        left = [p for p in job_pids if _alive(p)]
        try:
            assert left == [], f"job processes {left} outlived ksr dev ({signal.Signals(sig).name})"
        finally:
            for p in left:
                os.kill(p, signal.SIGKILL)
    finally:
        dev.close()


@pytest.mark.parametrize(("args", "bound"), [((), "127.0.0.1"), (("--host", "0.0.0.0"), "0.0.0.0")])
def test_ksr_dev_listens_on_loopback_unless_told_and_logs_the_address(tmp_path, args, bound):
    dev = DevProcess(dev_env(tmp_path), tmp_path / "dev.log", args=("--port", "0", *args))
    try:
        dev.wait_ready()
        port = _port_of(dev.status_url)
        assert dev.status_url == f"http://127.0.0.1:{port}/"  # loopback reaches 0.0.0.0 too
        assert listening_addresses(port) == {bound}
        wait_for(lambda: "Listening at: " in dev.output(), timeout=10, what="gunicorn's listening line")
        listening = re.findall(r"Listening at: (.*)", dev.output())
        assert listening == [f"http://{bound}:{port} ({_gunicorn_pid(dev.output())})"]
    finally:
        dev.close()


def _gunicorn_pid(output: str) -> str:
    return re.search(r"started probes \(pid (\d+)\)", output).group(1)
