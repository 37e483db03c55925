"""A real Prometheus scrapes two running `ksr run` replicas during a workload (Jobs that
succeed and one that fails, a dead letter, callback retries, a leader change), each target
labelled as a ServiceMonitor's scrape labels it (namespace, pod, service, container, endpoint,
job). Then every query of the generated dashboard (panels, the leader-change annotation, the
variables; scheduling included: a delayed message, a cancelled one, a schedule ticking every
minute) is evaluated as Grafana would (range queries over the test, stats at its end, Grafana's
variables substituted) and returns the values the workload implies; every alert rule
evaluates; and KsrNoLeader fires once both replicas are stopped."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from runner.client import Client
from runner.metrics import MESSAGE_OUTCOMES
from runner.settings import Settings
from tests.support import dashboard
from tests.support.chart import CHART
from tests.support.dashboard import Query
from tests.support.messages import message
from tests.support.pipeline import base_env, xadd
from tests.support.pods import Pod
from tests.support.ports import wait_for
from tests.support.prometheus import Prometheus
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.kube, pytest.mark.slow]

RULES = CHART / "alerts" / "rules.yaml"
JOB = "ksr"
STREAM = "ksr:jobs:default"
STREAMS = ("ksr:jobs:critical", STREAM, "ksr:jobs:low")
STEP = 2.0  # seconds between the points of a panel's range query
RATE_INTERVAL = "20s"  # what Grafana's $__rate_interval is with a 1 s scrape (4 scrapes, rounded up)


def scrape_targets(pods: list[Pod]) -> dict[str, dict[str, str]]:
    """Each pod's address with the target labels a ServiceMonitor's relabelling gives it."""
    return {
        f"127.0.0.1:{p.port}": {"pod": p.name, "service": "kube-stream-runner", "container": "ksr", "endpoint": "http"}
        for p in pods
    }


@dataclass(frozen=True)
class Reading:
    """One series of a panel: its value at the end, and its highest over the range."""

    last: float | None
    peak: float | None


def legend(fmt: str, labels: dict[str, str]) -> str:
    """The series' name as Grafana's legend shows it (a table's: its labels)."""
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt)


def _number(raw: str) -> float | None:
    value = float(raw)
    return None if math.isnan(value) else value


def evaluate(prometheus: Prometheus, q: Query, expr: str, start: float, end: float) -> dict[str, Reading]:
    """The query as the panel runs it: a stat or table instant at the end, a graph over the range."""
    if q.kind == "panel" and q.panel is not None and any(t.get("instant") for t in q.panel["targets"]):
        out = {}
        for series in prometheus.query(expr, at=end):
            value = _number(series["value"][1])
            out[legend(q.legend, series["metric"])] = Reading(value, value)
        return out
    out = {}
    for series in prometheus.query_range(expr, start=start, end=end, step=STEP):
        points = [(float(t), _number(v)) for t, v in series["values"]]
        numbers = [v for _, v in points if v is not None]
        last = points[-1][1] if points and points[-1][0] >= end - 0.01 else None  # gone before the end: None
        reading = Reading(last, max(numbers) if numbers else None)
        # Series that share a legend are one line to the eye (a target whose series was
        # renewed, e.g. after a reload under load): the pod's line is their union.
        name = legend(q.legend, series["metric"])
        out[name] = _union(out[name], reading) if name in out else reading
    return out


def _union(a: Reading, b: Reading) -> Reading:
    peaks = [p for p in (a.peak, b.peak) if p is not None]
    return Reading(a.last if a.last is not None else b.last, max(peaks) if peaks else None)


def resolve(prometheus: Prometheus, definition: str, variables: dict[str, str]) -> set[str]:
    """The values Grafana offers for a `label_values(selector, label)` variable."""
    found = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert found, definition
    selector, label = dashboard.substitute(found[1], variables), found[2]
    return {s["metric"][label] for s in prometheus.query(f"group by ({label}) ({selector})")}


Check = Callable[[dict[str, Reading]], bool]


def lasts(r: dict[str, Reading]) -> dict[str, float | None]:
    return {k: v.last for k, v in r.items() if v.last is not None}


def peaks(r: dict[str, Reading]) -> dict[str, float | None]:
    return {k: v.peak for k, v in r.items()}


def positive(r: dict[str, Reading], *keys: str) -> bool:
    return all((r[k].peak or 0) > 0 for k in keys if k in r) and set(keys) <= set(r)


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


def expectations(*, old: str, survivor: str, replacement: str, namespace: str) -> dict[str, Check]:
    """Per panel title (and the annotation's name): what the workload implies it shows. Gauges
    are read at the end, rates and increase() at their peak over the test."""
    zero_streams = dict.fromkeys(STREAMS, 0.0)
    example, failing = f"example ({namespace})", f"ksr-test-fail ({namespace})"

    def table(r: dict[str, Reading]) -> bool:
        ended = {k: v.last for k, v in r.items() if v.last}
        completed = f"job_namespace={namespace},job_service=example,outcome=completed"
        failed = f"job_namespace={namespace},job_service=ksr-test-fail,outcome=failed"
        # increase() over the range extrapolates a little past the samples: counts within a half
        return set(ended) == {completed, failed} and 0.9 <= (ended[failed] or 0) <= 1.5 and (ended[completed] or 0) >= 4

    return {
        # overview
        "Leader": lambda r: lasts(r) == {survivor: 1},
        "Backlog": lambda r: lasts(r) == {"messages": 0},
        "ETA to drain": lambda r: lasts(r) == {"eta": 0},  # nothing left: 0, not "not draining"
        "Failed Jobs": lambda r: 0 < (r["failed"].last or 0) <= 0.3,  # 1 of at least 5 Jobs
        "Dead letters": lambda r: lasts(r) == {"dead": 1},
        "Active Jobs": lambda r: lasts(r) == {"active": 0},
        # leadership
        "Replicas leading": lambda r: lasts(r) == {"leaders": 1},
        "Leader transitions": lambda r: (r["in range"].last or 0) >= 1,
        "Leader by pod": lambda r: peaks(r) == {old: 1, survivor: 1, replacement: 0},
        # the annotation: the survivor's takeover (and the first leader's election, if Prometheus saw it at 0)
        "Leader changes": lambda r: f"Leader: {survivor}" in r and set(r) <= {f"Leader: {old}", f"Leader: {survivor}"},
        # streams, from the leader
        "Stream length": lambda r: (
            {k: v for k, v in lasts(r).items() if k != STREAM}
            == {
                "ksr:jobs:critical": 0,
                "ksr:jobs:low": 0,
            }
            and (r[STREAM].last or 0) >= 6
        ),
        "Pending": lambda r: lasts(r) == zero_streams,
        "Lag": lambda r: lasts(r) == zero_streams,
        "Dead letters per stream": lambda r: lasts(r) == {**zero_streams, STREAM: 1},
        "Still to handle (lag + pending)": lambda r: lasts(r) == zero_streams,
        # messages
        "Messages by outcome": lambda r: (
            set(r) == set(MESSAGE_OUTCOMES) and positive(r, "dispatched", "invalid", "scheduled")
        ),
        "Processed / failed": lambda r: positive(r, "processed", "failed (no Job)"),
        "Dispatch latency": lambda r: positive(r, "p50", "p99"),
        # Jobs
        "Active Jobs over time": lambda r: lasts(r) == {"active": 0},
        "Finished Jobs by outcome": lambda r: positive(r, "completed", "failed"),
        "Job duration": lambda r: positive(r, "p50", "p99", "mean"),
        "Failed Jobs by service": lambda r: (
            set(r) == {example, failing} and (r[failing].peak or 0) > 0 and r[example].peak == 0
        ),
        "Job outcomes by service (in range)": table,
        # Kubernetes API
        # list and watch ran in a burst at start: a series born at N shows no rate (docs/operations.md)
        "Requests by verb and code": lambda r: (
            positive(r, "create 201", "patch 200") and {"list 200", "watch 200"} <= set(r)
        ),
        "Request latency by verb": lambda r: positive(r, "create p99", "create p50"),
        # callbacks and health
        # the callback series exist at 0 from the start, so even a burst shows as a rate
        "Callbacks by outcome": lambda r: positive(r, "delivered", "retry"),
        "Callbacks by status": lambda r: positive(r, "status 0", "status 1", "status 2", "status 3"),
        "Loop heartbeat age": lambda r: (
            {survivor, replacement} <= {k.split()[0] for k in lasts(r)}
            and all((v or 0) < 15 for k, v in lasts(r).items() if k.split()[0] in (survivor, replacement))
        ),
        "Consumer groups recreated": lambda r: peaks(r) == zero_streams,
        # scheduling
        "Delayed messages waiting": lambda r: lasts(r) == {"waiting": 0},
        "Moved to their stream": lambda r: positive(r, STREAM),
        "Schedule ticks by entry and outcome": lambda r: "prom-every-minute fired" in r,
        "Cancellations by stage": lambda r: (
            positive(r, "scheduled") and r["pending"].peak == 0 and r["running"].peak == 0
        ),
    }


def test_dashboard_and_alerts_answered_by_prometheus(redis_server, redis_client, kube, namespace, tmp_path):
    receiver = Receiver().start()
    env = base_env(
        redis_url=redis_server.url,
        namespace=namespace,
        kubeconfig=kube.kubeconfig,
        KSR_SCHEDULES=str(schedules_file(tmp_path, namespace)),
    )
    pods = [Pod(env, tmp_path, f"prom-{i}") for i in range(2)]
    began = time.time()  # the panels' range starts here: every counter's first samples lie inside it
    prometheus = Prometheus(
        tmp_path / "prometheus",
        targets=scrape_targets(pods),
        labels={"namespace": namespace},
        job=JOB,
        rules=rules_with_short_for(tmp_path),
    )
    try:
        _workload_and_checks(pods, prometheus, receiver, redis_client, namespace, env, tmp_path, began)
    except BaseException:
        for p in pods:
            print(f"--- {p.name}\n{p.tail()}")
        raise
    finally:
        for p in pods:
            p.kill_container()
        prometheus.close()
        receiver.close()


def _workload_and_checks(pods, prometheus, receiver, redis_client, namespace, env, tmp_path, start):
    leader = wait_for(lambda: next((p for p in pods if p.leading()), None), timeout=60, what="a leader")
    wait_for(
        lambda: prometheus.query(f'count(ksr_leader{{job="{JOB}"}}) == 2'), timeout=30, what="both replicas scraped"
    )
    # ... and the leader scraped as leading: its tenure is what "Leader by pod" must show at 1
    # (a first scrape at 0, before it won, then a SIGTERM before the next, showed it at 0).
    wait_for(
        # every sample of the last 3 s at 1 (three scrapes): a range query's 2 s steps land on one
        lambda: prometheus.query(f'min_over_time(ksr_leader{{job="{JOB}", pod="{leader.name}"}}[3s]) == 1'),
        timeout=30,
        what=f"{leader.name} scraped as leader",
    )

    # First a leader change, as in a rollout (SIGTERM: the leader releases the Lease, the
    # other takes over, a new pod joins), so that the two replicas scraped at the end are
    # the ones that did the work. (SIGKILL would leave RQ's scheduler lock to lapse for up
    # to 61 s first, holding back callback retries: runner/callbacks/worker.py.)
    leader.stop()
    survivor = next(p for p in pods if p is not leader)
    wait_for(survivor.leading, timeout=30, what="the survivor leading")
    replacement = Pod(env, tmp_path, "prom-2")  # a new pod, a new name, as a rollout makes it
    pods[pods.index(leader)] = replacement
    prometheus.set_targets(scrape_targets(pods))
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
        f'count(ksr_leader{{pod="{survivor.name}", service="kube-stream-runner", container="ksr"}})': "target labels",
    }
    try:
        wait_for(lambda: all(prometheus.query(q) for q in seen), timeout=90, what="the workload in Prometheus")
    except TimeoutError:
        raise AssertionError(f"not in Prometheus: {[w for q, w in seen.items() if not prometheus.query(q)]}") from None

    # The dashboard's variables, as Grafana resolves them (label_values(selector, label)).
    variables = {q.title: q.expr for q in dashboard.queries() if q.kind == "variable"}
    assert resolve(prometheus, variables["namespace"], {}) == {namespace}
    assert resolve(prometheus, variables["job"], {"$namespace": namespace}) == {JOB}

    # Every panel query, evaluated as its panel runs it, shows what the workload implies.
    wanted = expectations(old=leader.name, survivor=survivor.name, replacement=replacement.name, namespace=namespace)
    queries = [q for q in dashboard.queries() if q.kind != "variable"]
    assert {q.title for q in queries} == set(wanted), "a panel without an expectation here, or one gone"

    def wrong() -> list[tuple[str, dict[str, Reading]]]:
        end = start + math.floor((time.time() - start) / STEP) * STEP  # a range query's last point
        variables = {
            "$__rate_interval": RATE_INTERVAL,
            "$__interval": f"{STEP:g}s",
            "$__range": f"{math.ceil(end - start)}s",
            "$namespace": namespace,
            "$job": JOB,
        }
        out = []
        by_title: dict[str, dict[str, Reading]] = {}
        for q in queries:
            by_title.setdefault(q.title, {}).update(
                evaluate(prometheus, q, dashboard.substitute(q.expr, variables), start, end)
            )
        for title, readings in by_title.items():
            if not readings or not wanted[title](readings):
                out.append((title, readings))
        return out

    # A gauge reaches its final value a scrape after the workload; the stream sampler runs every 5 s.
    try:
        wait_for(lambda: not wrong(), timeout=30, interval=2, what="every panel showing the workload")
    except TimeoutError:
        pass
    bad = wrong()
    assert not bad, "panels that do not show what the workload implies:\n" + "\n".join(f"{t}: {r}" for t, r in bad)

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
