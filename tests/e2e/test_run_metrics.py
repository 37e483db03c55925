"""`ksr run` after a real workload: /metrics passes promtool and counts what happened;
/status and the status page agree with it."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.scrape import Samples


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_metrics_after_a_workload_pass_promtool(redis_server, redis_client, tmp_path):
    env = base_env(redis_url=redis_server.url, namespace="default", kubeconfig=None, HOME=str(tmp_path))
    pod = Pod(env, tmp_path, "metrics-0")
    try:
        base = f"http://127.0.0.1:{pod.port}"
        wait_for(pod.leading, timeout=60, what="leadership")
        for i in range(20):
            xadd(redis_client, "ksr:jobs:default", message(f"m-{i}", "default", command=["true"]))
        xadd(redis_client, "ksr:jobs:default", "not json")
        wait_for(
            lambda: (
                redis_client.xlen("ksr:jobs:default:dead") == 1
                and redis_client.scard("ksr:active") == 0
                and len(redis_client.keys("ksr:msg:*")) == 20
            ),
            timeout=60,
            what="the workload done",
        )

        def metric(name: str, text: str) -> float:
            found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
            return float(found.group(1)) if found else 0.0

        def counted() -> str | None:
            text = get(base + "/metrics")[1]
            jobs = Samples(text).get(
                "ksr_jobs_finished_total", outcome="completed", job_service="example", job_namespace="local"
            )  # the local executor's Jobs are in no namespace: its JobRef says "local"
            done = jobs == 20
            return text if done else None

        text = wait_for(counted, timeout=30, what="the metrics to count 20 finished Jobs")
        assert metric('ksr_messages_total{outcome="dispatched"}', text) == 20
        assert metric('ksr_messages_total{outcome="invalid"}', text) == 1
        assert metric("ksr_messages_processed_total", text) == 21
        assert metric("ksr_messages_failed_total", text) == 1
        assert metric("ksr_leader", text) == 1
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        status = json.loads(get(base + "/status")[1])
        assert status["identity"] == "metrics-0" and status["leader"] == "metrics-0"
        assert status["streams"]["ksr:jobs:default"]["dead"] == 1
    finally:
        pod.kill_container()
