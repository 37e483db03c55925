"""runner.signals, runner.pipeline.leadership and the two observers (metrics, board): the seam between the
pipeline and its side channels, with a fresh metrics registry and a board in tmp_path."""

from __future__ import annotations

import logging
import math

import pytest
from prometheus_client import CollectorRegistry

from election.clock import FakeClock
from runner.metrics import Metrics, MetricsObserver
from runner.pipeline.leadership import LeadershipView
from runner.process.statusboard import BoardObserver, StatusBoard, read_status
from runner.signals import (
    ActiveJobs,
    Beat,
    Dispatched,
    ElectorState,
    ErrorRecorded,
    GroupRecreated,
    JobFinished,
    KubeRequest,
    KubeThrottled,
    Leadership,
    MessageHandled,
    Signal,
    Signals,
    StreamsSampled,
)
from runner.store.stream_inspection import StreamStats


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Signal] = []

    def __call__(self, signal: Signal) -> None:
        self.seen.append(signal)


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, signal: Signal) -> None:
        self.calls += 1
        raise RuntimeError("observer is broken")

    def __repr__(self) -> str:
        return "Broken()"


# -- the emitter ---------------------------------------------------------------------------


def test_every_observer_gets_every_signal_in_subscription_order():
    order: list[str] = []
    signals = Signals([lambda s: order.append("first")])
    signals.subscribe(lambda s: order.append("second"))
    signals.emit(Beat("main", 1.0))
    signals.emit(ActiveJobs(3))
    assert order == ["first", "second", "first", "second"]


def test_a_failing_observer_is_logged_with_its_traceback_and_the_others_still_run(caplog):
    broken, after = Broken(), Recorder()
    signals = Signals([broken, after], clock=FakeClock())
    with caplog.at_level(logging.DEBUG, logger="runner.signals"):
        signals.emit(MessageHandled("dispatched"))  # must not raise
    assert after.seen == [MessageHandled("dispatched")]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == (
        "observer Broken() failed on MessageHandled(outcome='dispatched'); the pipeline goes on"
    )
    assert record.exc_info is not None and str(record.exc_info[1]) == "observer is broken"


def test_a_failing_observer_logs_one_traceback_per_minute_per_signal_kind(caplog):
    clock = FakeClock()
    broken = Broken()
    signals = Signals([broken], clock=clock)
    with caplog.at_level(logging.DEBUG, logger="runner.signals"):
        for _ in range(5):
            signals.emit(Beat("main", 1.0))
        signals.emit(ActiveJobs(1))  # another kind: logged on its own
        clock.advance(60)
        signals.emit(Beat("main", 2.0))
    errors = [r.getMessage().split(" failed on ")[1] for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "Beat(loop='main', wall=1.0); the pipeline goes on",
        "ActiveJobs(count=1, cap=0); the pipeline goes on",
        "Beat(loop='main', wall=2.0); the pipeline goes on",
    ]
    assert broken.calls == 7
    assert sum(r.levelno == logging.DEBUG and r.exc_info is not None for r in caplog.records) == 4


def test_a_failing_observer_never_stops_a_runner_loop_of_signals():
    """What the runner does every turn: a broken board must not stop the loop."""
    recorder = Recorder()
    signals = Signals([Broken(), recorder])
    for turn in range(100):
        signals.emit(Beat("main", float(turn)))
    assert len(recorder.seen) == 100


# -- what a leader transition is ------------------------------------------------------------


@pytest.mark.parametrize(
    "views,transitions,emitted",
    [
        pytest.param([(True, "me", 1)], [False], 1, id="first observation is the baseline"),
        pytest.param([(False, None, None), (False, "a", 1)], [False, False], 2, id="nobody, then a holder"),
        pytest.param([(False, "a", 1)] * 3, [False], 1, id="no change, nothing emitted"),
        pytest.param([(False, "a", 1), (True, "me", 2)], [False, True], 2, id="new holder and term"),
        pytest.param([(True, "me", 1), (True, "me", 2)], [False, True], 2, id="same holder, new term"),
        pytest.param(
            [(False, "a", 1), (False, None, 1), (True, "me", 2)],
            [False, False, True],
            3,
            id="a release is not one; the next holder is",
        ),
        pytest.param([(True, "me", 3), (False, "me", 3)], [False, False], 2, id="stepping down is not one"),
        pytest.param(
            [(False, "a", 1), (True, "me", 2), (False, "me", 2), (False, "b", 3)],
            [False, True, False, True],
            4,
            id="two changes count two",
        ),
    ],
)
def test_leadership_view(views, transitions, emitted):
    view = LeadershipView()
    out = [view.observe(leading=leading, leader=leader, term=term) for leading, leader, term in views]
    signals = [s for s in out if s is not None]
    assert len(signals) == emitted
    assert [s.transition for s in signals] == transitions


class Snapshot:
    def __init__(self, leading: bool, leader: str | None, term: int | None, healthy: bool = True) -> None:
        self.leading, self.leader, self.term, self.healthy = leading, leader, term, healthy


def test_leadership_view_reports_the_elector_thread_on_change_only():
    view = LeadershipView()
    assert view.changes(Snapshot(False, None, None), running=True) == [
        Leadership(leading=False, leader=None, term=None, transition=False),
        ElectorState(running=True, healthy=True),
    ]
    assert view.changes(Snapshot(False, None, None), running=True) == []
    assert view.changes(Snapshot(False, None, None, healthy=False), running=True) == [
        ElectorState(running=True, healthy=False)
    ]


# -- the metrics observer -------------------------------------------------------------------


@pytest.fixture
def fresh() -> tuple[MetricsObserver, CollectorRegistry]:
    registry = CollectorRegistry()
    m = Metrics(registry)
    return MetricsObserver(lambda: m), registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_metrics_observer_writes_each_signal_once(fresh):
    observe, registry = fresh
    for signal in (
        Beat("main", 1234.5),
        MessageHandled("dispatched"),
        MessageHandled("invalid"),
        Dispatched(latency=0.2),
        Dispatched(latency=-1.0),  # an entry id from a producer's clock ahead of ours
        JobFinished("completed", 12.0),
        JobFinished("exception", None),
        ActiveJobs(4),
        GroupRecreated("ksr:jobs:low"),
        KubeRequest("create", 201, 0.01),
        KubeRequest("create", None, 1.0),
        KubeThrottled("create", "server", 1.0),
        KubeThrottled("create", "server", 2.0),
        KubeThrottled("patch", "client", 0.1),
        ErrorRecorded("ignored by metrics"),
        ElectorState(running=True, healthy=True),
    ):
        observe(signal)
    assert value(registry, "ksr_loop_heartbeat_timestamp_seconds", loop="main") == 1234.5
    assert value(registry, "ksr_messages_total", outcome="dispatched") == 1
    assert value(registry, "ksr_messages_processed_total") == 2
    assert value(registry, "ksr_messages_failed_total") == 1
    assert value(registry, "ksr_dispatch_latency_seconds_count") == 2
    assert value(registry, "ksr_dispatch_latency_seconds_sum") == pytest.approx(0.2)
    unlabelled = {"job_service": "unknown", "job_namespace": "unknown"}  # signals without a record's fields
    assert value(registry, "ksr_jobs_finished_total", outcome="completed", **unlabelled) == 1
    assert value(registry, "ksr_jobs_finished_total", outcome="exception", **unlabelled) == 1
    assert value(registry, "ksr_job_duration_seconds_count") == 1
    assert value(registry, "ksr_active_jobs") == 4
    assert value(registry, "ksr_redis_group_recreated_total", stream="ksr:jobs:low") == 1
    assert value(registry, "ksr_kube_requests_total", verb="create", code="201") == 1
    assert value(registry, "ksr_kube_requests_total", verb="create", code="error") == 1
    assert value(registry, "ksr_kube_throttled_total", verb="create", source="server") == 2
    assert value(registry, "ksr_kube_throttled_total", verb="patch", source="client") == 1
    assert value(registry, "ksr_kube_throttled_total", verb="list", source="server") == 0  # there from the start


def test_metrics_observer_counts_transitions_and_zeroes_leader_gauges_on_step_down(fresh):
    observe, registry = fresh
    observe(Leadership(leading=True, leader="me", term=2, transition=True))
    observe(
        StreamsSampled(
            {
                "ksr:jobs:default": StreamStats(length=10, pending=2, lag=None, dead=1),
                "ksr:jobs:low": StreamStats(length=1, pending=0, lag=1, dead=0),
            },
            paused=frozenset({"ksr:jobs:low"}),
        )
    )
    observe(ActiveJobs(5))
    assert value(registry, "ksr_leader") == 1
    assert value(registry, "ksr_stream_paused", stream="ksr:jobs:low") == 1
    assert value(registry, "ksr_stream_paused", stream="ksr:jobs:default") == 0
    assert math.isnan(value(registry, "ksr_queue_length", stream="ksr:jobs:default") or 0.0)
    observe(Leadership(leading=False, leader="other", term=3, transition=True))
    assert value(registry, "ksr_leader") == 0
    assert value(registry, "ksr_leader_transitions_total") == 2
    assert value(registry, "ksr_active_jobs") == 0
    for name in (
        "ksr_stream_length",
        "ksr_stream_pending",
        "ksr_stream_lag",
        "ksr_stream_dead_letters",
        "ksr_stream_paused",
    ):
        for stream in ("ksr:jobs:default", "ksr:jobs:low"):
            assert value(registry, name, stream=stream) == 0, (name, stream)
    assert value(registry, "ksr_queue_length", stream="ksr:jobs:default") == 0


# -- the board observer ---------------------------------------------------------------------


def test_board_observer_writes_what_the_probes_read(tmp_path):
    board = StatusBoard(tmp_path / "status.json", identity="me", min_interval=0.0)
    observe = BoardObserver(board)
    observe(Beat("main", 1.0))
    observe(Leadership(leading=True, leader="me", term=7, transition=False))
    observe(ElectorState(running=True, healthy=False))
    observe(ActiveJobs(3))
    observe(ErrorRecorded("redis went away"))
    observe(MessageHandled("dispatched"))  # not the board's business
    doc = read_status(tmp_path / "status.json")
    assert (doc["leading"], doc["leader"], doc["term"]) == (True, "me", 7)
    assert doc["elector"] == {"running": True, "healthy": False}
    assert doc["active_jobs"] == 3
    assert set(doc["loops"]) == {"main"}
    assert [e["text"] for e in doc["last_errors"]] == ["redis went away"]
