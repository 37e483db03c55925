"""runner.metrics: names, helpers and multiprocess setup (promtool: tests/integration/test_metrics_promtool.py).

Multiprocess behaviour is checked in subprocesses: prometheus_client keeps per-process
state that a test must not leave behind in the pytest process.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runner import metrics
from runner.metrics import Metrics
from tests.support.metrics_process import run_python

REPO = Path(__file__).resolve().parents[2]


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def fresh() -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics(registry), registry


@pytest.mark.parametrize(
    "outcome,processed,failed",
    [
        ("dispatched", 1, 0),
        ("duplicate", 1, 0),
        ("invalid", 1, 1),
        ("dead_lettered", 1, 1),
        ("retried", 0, 0),
        ("scheduled", 1, 0),  # held until due: acked, its Job comes later
        ("cancelled", 1, 0),
    ],
)
def test_count_message_feeds_processed_and_failed(fresh, outcome, processed, failed):
    m, registry = fresh
    m.count_message(outcome)
    assert value(registry, "ksr_messages_total", outcome=outcome) == 1
    assert value(registry, "ksr_messages_processed_total") == processed
    assert value(registry, "ksr_messages_failed_total") == failed


def test_scheduling_signals_feed_their_series(fresh):
    from runner.metrics import MetricsObserver
    from runner.signals import Cancelled, Leadership, ScheduledMoved, ScheduledWaiting, ScheduleTick

    m, registry = fresh
    observe = MetricsObserver(lambda: m)
    for signal in (
        ScheduledWaiting(7, next_due=1.0),
        ScheduledMoved("ksr:jobs:low", 3),
        ScheduledMoved("ksr:jobs:low", 2),
        ScheduleTick("nightly", "fired"),
        ScheduleTick("nightly", "missed", 4),
        ScheduleTick("nightly", "caught_up"),
        Cancelled("scheduled"),
        Cancelled("running"),
        Cancelled("running"),
    ):
        observe(signal)
    assert value(registry, "ksr_scheduled_waiting") == 7
    assert value(registry, "ksr_scheduled_moved_total", stream="ksr:jobs:low") == 5
    ticks = {
        o: value(registry, "ksr_schedule_ticks_total", entry="nightly", outcome=o)
        for o in ("fired", "missed", "caught_up")
    }
    assert ticks == {"fired": 1, "missed": 4, "caught_up": 1}
    assert value(registry, "ksr_cancellations_total", stage="running") == 2
    assert value(registry, "ksr_cancellations_total", stage="scheduled") == 1
    observe(Leadership(leading=False, leader="other", term=2, transition=True))
    assert value(registry, "ksr_scheduled_waiting") == 0  # only the leader's count stands


def test_unknown_outcome_is_refused(fresh):
    m, _ = fresh
    with pytest.raises(ValueError, match="unknown message outcome 'lost'"):
        m.count_message("lost")


def test_stream_stats_set_gauges_and_queue_length(fresh):
    m, registry = fresh
    m.set_stream_stats(
        {
            "ksr:jobs:default": {"length": 10, "pending": 2, "lag": 3, "dead": 1},
            "ksr:jobs:low": {"length": 4, "pending": 0, "lag": None, "dead": 0},
        }
    )
    assert value(registry, "ksr_stream_length", stream="ksr:jobs:default") == 10
    assert value(registry, "ksr_stream_dead_letters", stream="ksr:jobs:default") == 1
    assert value(registry, "ksr_queue_length", stream="ksr:jobs:default") == 5
    assert math.isnan(value(registry, "ksr_stream_lag", stream="ksr:jobs:low") or 0.0)
    assert math.isnan(value(registry, "ksr_queue_length", stream="ksr:jobs:low") or 0.0)


def test_kube_request_without_answer_is_code_error(fresh):
    m, registry = fresh
    m.observe_kube_request("create", 201, 0.02)
    m.observe_kube_request("create", None, 1.5)
    assert value(registry, "ksr_kube_requests_total", verb="create", code="201") == 1
    assert value(registry, "ksr_kube_requests_total", verb="create", code="error") == 1
    assert value(registry, "ksr_kube_request_duration_seconds_count", verb="create") == 2


def test_every_metric_is_ksr_prefixed_and_follows_conventions(fresh):
    _, registry = fresh
    for family in registry.collect():
        assert family.name.startswith("ksr_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client appends it once
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_setup_multiprocess_refuses_a_missing_or_non_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(metrics.ENV_MULTIPROC_DIR, raising=False)
    with pytest.raises(RuntimeError, match="not set"):
        metrics.setup_multiprocess()
    with pytest.raises(RuntimeError, match="not a directory"):
        metrics.setup_multiprocess(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RuntimeError, match="not a directory"):
        metrics.setup_multiprocess(tmp_path / "file")


def test_wipe_after_metrics_exist_is_refused(tmp_path):
    result = run_python(
        """
        from runner import metrics
        metrics.setup_multiprocess()
        metrics.get()
        try:
            metrics.setup_multiprocess(wipe=True)
        except RuntimeError as e:
            print("refused:", e)
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "refused: setup_multiprocess(wipe=True) after metrics were created" in result.stdout


def test_cleanup_dead_processes_drops_live_gauges_only(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead_pid = proc.pid  # reaped: gone (pids are not reused this soon)
    for name in (f"gauge_livemax_{dead_pid}.db", f"counter_{dead_pid}.db", f"gauge_livemax_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"")
    assert metrics.cleanup_dead_processes(tmp_path) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead_pid}.db", f"gauge_livemax_{os.getpid()}.db"]
    )


def test_sampled_streams_export_a_zero_group_recreated_counter(fresh):
    """The dashboard's "consumer groups recreated" panel has a series per stream before
    any group was ever recreated (a labelled counter is absent until its child exists)."""
    from runner.signals import GroupRecreated, StreamsSampled

    m, registry = fresh
    observer = metrics.MetricsObserver(lambda: m)
    row = {"length": 1, "pending": 0, "lag": 0, "dead": 0}
    observer(StreamsSampled({"ksr:jobs:a": row, "ksr:jobs:b": row}))
    assert value(registry, "ksr_redis_group_recreated_total", stream="ksr:jobs:a") == 0
    assert value(registry, "ksr_redis_group_recreated_total", stream="ksr:jobs:b") == 0
    assert value(registry, "ksr_scheduled_moved_total", stream="ksr:jobs:a") == 0  # the same, for a first move
    observer(GroupRecreated("ksr:jobs:b"))
    assert value(registry, "ksr_redis_group_recreated_total", stream="ksr:jobs:b") == 1


def test_job_outcomes_by_service_and_namespace_keep_the_first_n_values_and_fold_the_rest_into_other(fresh):
    """A producer naming a new service per message cannot grow ksr_jobs_finished_total past
    the cap: the first N services (and, apart, namespaces) keep their name, the rest are `other`."""
    from runner.metrics import MetricsObserver
    from runner.signals import JobFinished

    m, registry = fresh
    observe = MetricsObserver(lambda: m, max_label_values=3)
    for i in range(10):  # svc-0..svc-9, two Jobs each, in ns-0..ns-4
        for outcome in ("completed", "failed"):
            observe(JobFinished(outcome, 1.0, service=f"svc-{i}", namespace=f"ns-{i % 5}"))
    observe(JobFinished("completed", 1.0, service="svc-1", namespace="ns-1"))  # a kept value stays kept
    observe(JobFinished("exception", None))  # a record without service or namespace

    samples = {
        tuple(s.labels[k] for k in ("outcome", "job_service", "job_namespace")): s.value
        for family in registry.collect()
        if family.name == "ksr_jobs_finished"
        for s in family.samples
        if s.name == "ksr_jobs_finished_total"
    }
    assert {service for _, service, _ in samples} == {"svc-0", "svc-1", "svc-2", "other"}
    assert {namespace for _, _, namespace in samples} == {"ns-0", "ns-1", "ns-2", "other"}
    assert samples[("completed", "svc-1", "ns-1")] == 2
    assert samples[("failed", "svc-2", "ns-2")] == 1
    # svc-3..svc-9 in ns-3, ns-4 (other) and ns-0..ns-2 (kept): 7 per outcome, nothing lost
    assert sum(v for (o, svc, _), v in samples.items() if o == "completed" and svc == "other") == 7
    assert samples[("failed", "other", "other")] == 4  # svc-3, svc-4, svc-8, svc-9
    assert samples[("exception", "other", "other")] == 1  # "unknown" came after the cap was full
    assert sum(samples.values()) == 22


@pytest.mark.parametrize("limit", [0, -1])
def test_a_label_cap_below_one_is_refused(limit):
    with pytest.raises(ValueError, match="at least 1"):
        metrics.CappedLabel(limit)


def test_an_empty_service_is_unknown_not_an_empty_label():
    cap = metrics.CappedLabel(2)
    assert [cap(""), cap("a"), cap("b"), cap("")] == ["unknown", "a", "other", "unknown"]


def test_a_dispatched_job_makes_every_outcome_of_its_service_exist_at_zero(fresh):
    """increase() cannot see the first increment of a series born at 1: so the outcomes of a
    (service, namespace) exist at 0 once its first Job is created, before any of them ends."""
    from runner.metrics import MetricsObserver
    from runner.signals import Dispatched, JobFinished

    m, registry = fresh
    observe = MetricsObserver(lambda: m, max_label_values=1)
    observe(Dispatched(0.1, service="billing", namespace="jobs"))
    labels = {"job_service": "billing", "job_namespace": "jobs"}
    outcomes = ("completed", "failed", "exception", "cancelled")
    assert {o: value(registry, "ksr_jobs_finished_total", outcome=o, **labels) for o in outcomes} == dict.fromkeys(
        outcomes, 0
    )
    observe(JobFinished("failed", 3.0, **{"service": "billing", "namespace": "jobs"}))
    observe(Dispatched(0.1, service="reports", namespace="jobs"))  # past the cap of 1: other/jobs
    assert value(registry, "ksr_jobs_finished_total", outcome="failed", **labels) == 1
    assert value(registry, "ksr_jobs_finished_total", outcome="failed", job_service="other", job_namespace="jobs") == 0


def test_counters_with_a_known_label_domain_exist_at_zero_before_anything_happens(fresh):
    """A series first scraped at 1 is invisible to increase(): the dashboard's first
    invalid message or first cancellation would read 0."""
    _, registry = fresh
    assert {o: value(registry, "ksr_messages_total", outcome=o) for o in metrics.MESSAGE_OUTCOMES} == dict.fromkeys(
        metrics.MESSAGE_OUTCOMES, 0
    )
    assert {s: value(registry, "ksr_cancellations_total", stage=s) for s in metrics.CANCEL_STAGES} == {
        "scheduled": 0,
        "pending": 0,
        "running": 0,
    }
