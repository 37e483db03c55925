"""A real Prometheus scrapes two running `ksr run` replicas during a workload (Jobs that
succeed and one that fails, a dead letter, callback retries, a leader change). Then every
panel query of the dashboard (scheduling included: a delayed message, a cancelled one, a
schedule ticking every minute), Grafana's variables substituted, returns at least one
series; every alert rule evaluates; and KsrNoLeader fires once both replicas are stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.client import Client
from runner.settings import Settings
from tests.support.chart import CHART
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.prometheus import Prometheus
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kube, pytest.mark.slow]

DASHBOARD = CHART / "dashboards" / "kube-stream-runner.json"
RULES = CHART / "alerts" / "rules.yaml"
JOB = "ksr"
STREAM = "ksr:jobs:default"
# What Grafana puts in for its own variables over a short dashboard range.
GRAFANA = {"$__rate_interval": "20s", "$__interval": "1s", "$__range": "5m"}


def dashboard_queries() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            found.extend((panel.get("title", "?"), t["expr"]) for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(doc["panels"])
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):  # $__rate_interval before $__range
        expr = expr.replace(name, variables[name])
    assert "$" not in expr, f"variable left in {expr}"
    return expr


def rules_with_short_for(directory: Path) -> Path:
    """The alert rules unchanged but for `for:` (2s), so a test can see them fire."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def schedules_file(directory: Path, namespace: str) -> Path:
    """One recurring schedule ticking every minute, so the schedule panels have a tick."""
    entry = {
        "name": "prom-every-minute",
        "cron": "* * * * *",
        "stream": STREAM,
        "message": {"service": "example", "job": {"prefixName": "tick", "namespace": namespace, "image": "busybox:1"}},
    }
    path = directory / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": [entry]}))
    return path


def test_dashboard_and_alerts_answered_by_prometheus(redis_server, redis_client, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_SCHEDULES=str(schedules_file(tmp_path, namespace)),
    )
    pods = [Pod(env, tmp_path, f"prom-{i}") for i in range(2)]
    prometheus = Prometheus(
        tmp_path / "prometheus",
        targets=[f"127.0.0.1:{p.port}" for p in pods],
        labels={"namespace": namespace},
        job=JOB,
        rules=rules_with_short_for(tmp_path),
    )
    try:
        _workload_and_checks(pods, prometheus, receiver, redis_client, namespace, env, tmp_path)
    except BaseException:
        for p in pods:
            print(f"--- {p.name}\n{p.tail()}")
        raise
    finally:
        for p in pods:
            p.kill_container()
        prometheus.close()
        receiver.close()


def _workload_and_checks(pods, prometheus, receiver, redis_client, namespace, env, tmp_path):
    leader = wait_for(lambda: next((p for p in pods if p.leading()), None), timeout=60, what="a leader")
    wait_for(
        lambda: prometheus.query(f'count(ksr_leader{{job="{JOB}"}}) == 2'), timeout=30, what="both replicas scraped"
    )

    # First a leader change, as in a rollout (SIGTERM: the leader releases the Lease, the
    # other takes over, a new pod joins), so that the two replicas scraped at the end are
    # the ones that did the work. (SIGKILL would leave RQ's scheduler lock to lapse for up
    # to 61 s first, holding back callback retries: runner/callbacks/worker.py.)
    leader.stop()
    survivor = next(p for p in pods if p is not leader)
    wait_for(survivor.leading, timeout=30, what="the survivor leading")
    replacement = Pod(env, tmp_path, leader.name, generation=1)
    pods[pods.index(leader)] = replacement
    prometheus.set_targets([f"127.0.0.1:{p.port}" for p in pods])
    wait_for(replacement.status, timeout=60, what="the new pod serving")

    # The workload. Callbacks refused at first: the RQ worker retries them.
    receiver.answer = 500
    ok = [f"prom-ok-{i}" for i in range(4)]
    for mid in ok:
        xadd(redis_client, STREAM, message(mid, namespace, webhook=receiver.url))
    xadd(redis_client, STREAM, message("prom-fail", namespace, service="ksr-test-fail", webhook=receiver.url))
    xadd(redis_client, STREAM, "not json")  # a dead letter
    xadd(redis_client, STREAM, {**message("prom-delayed", namespace), "delaySeconds": 1})  # held, then moved
    xadd(redis_client, STREAM, {**message("prom-cancelled", namespace), "delaySeconds": 600})
    producer = Client(Settings.from_env(env), redis_client=redis_client)
    wait_for(lambda: producer.status("prom-cancelled").where == "scheduled", timeout=30, what="a held message")
    producer.cancel("prom-cancelled")
    wait_for(lambda: len(receiver.requests) >= 8, timeout=60, what="callbacks refused and retried")
    receiver.answer = 200
    wait_for(
        lambda: all(receiver.statuses().get(m) == [0, 1, 2] for m in ok) and receiver.statuses().get("prom-fail"),
        timeout=120,
        what="every callback delivered",
    )

    # Two replicas scraped, one leading, and the workload visible in Prometheus.
    seen = {
        f'count(up{{job="{JOB}"}} == 1) == 2': "both replicas scraped",
        f'sum(ksr_leader{{job="{JOB}"}}) == 1': "one leader",
        'ksr_jobs_finished_total{outcome="failed"} > 0': "the failed Job",
        'ksr_callbacks_total{outcome="retry"} > 0': "callback retries",
        "ksr_stream_dead_letters > 0": "the dead letter",
        "increase(ksr_leader_transitions_total[5m]) > 0": "leader transitions",
        "ksr_scheduled_moved_total > 0": "the delayed message moved",
        'ksr_cancellations_total{stage="scheduled"} > 0': "the cancelled one",
        'ksr_schedule_ticks_total{outcome="fired"} > 0': "a schedule tick (every minute)",
    }
    try:
        wait_for(lambda: all(prometheus.query(q) for q in seen), timeout=90, what="the workload in Prometheus")
    except TimeoutError:
        raise AssertionError(f"not in Prometheus: {[w for q, w in seen.items() if not prometheus.query(q)]}") from None

    # The dashboard's variables, as Grafana would resolve them.
    namespaces = {s["metric"]["namespace"] for s in prometheus.query("group by (namespace) (ksr_leader)")}
    assert namespaces == {namespace}
    jobs = {s["metric"]["job"] for s in prometheus.query(f'group by (job) (ksr_leader{{namespace=~"{namespace}"}})')}
    assert jobs == {JOB}
    variables = {**GRAFANA, "$namespace": namespace, "$job": JOB}
    queries = [(title, substitute(expr, variables)) for title, expr in dashboard_queries()]

    def empty_panels() -> list[tuple[str, str]]:
        return [(title, expr) for title, expr in queries if not prometheus.query(expr)]

    # A series that appeared at the last scrape has one sample: rate() and increase() need
    # two, so the scrapes get a few seconds to catch up.
    try:
        wait_for(lambda: not empty_panels(), timeout=15, interval=1, what="every panel answered")
    except TimeoutError:
        pass
    assert empty_panels() == [], "panels without a series after the workload"

    # Every alert rule evaluates without error.
    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("2") for r in prometheus.rules()), timeout=30)
    broken = [(r["name"], r.get("lastError")) for r in prometheus.rules() if r["health"] != "ok"]
    assert broken == []
    assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "KsrNoLeader"]

    # Both replicas stopped: no leader, and the alert says so.
    for p in pods:
        p.stop()

    def no_leader_firing() -> bool:
        return any(
            a["labels"]["alertname"] == "KsrNoLeader"
            and a["state"] == "firing"
            and a["labels"].get("namespace") == namespace
            and a["labels"].get("job") == JOB
            for a in prometheus.alerts()
        )

    wait_for(no_leader_firing, timeout=60, interval=0.5, what="KsrNoLeader firing")
