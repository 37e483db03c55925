"""The subscribers of `runner.signals`: one turns signals into Prometheus metrics, one into
status-board fields. They are the only writers of what they write (docs/operations.md,
"Who writes what").
"""

from __future__ import annotations

from collections.abc import Callable

from runner import metrics as metrics_mod
from runner.metrics import Metrics
from runner.process.statusboard import StatusBoard
from runner.signals import (
    ActiveJobs,
    Beat,
    Dispatched,
    ElectorState,
    ErrorRecorded,
    GroupRecreated,
    JobFinished,
    KubeRequest,
    Leadership,
    MessageHandled,
    Signal,
    StreamsSampled,
)

__all__ = ["BoardObserver", "MetricsObserver"]


class MetricsObserver:
    """Signals -> runner.metrics. Metrics are resolved on first use (`metrics.get()` must
    come after the supervisor prepared the multiprocess directory)."""

    def __init__(self, metrics: Callable[[], Metrics] = metrics_mod.get) -> None:
        self._metrics = metrics
        self._sampled: set[str] = set()  # streams whose gauges this replica has set

    def __repr__(self) -> str:
        return "MetricsObserver()"

    def __call__(self, signal: Signal) -> None:
        m = self._metrics()
        match signal:
            case Beat(loop=loop, wall=wall):
                m.heartbeat(loop, wall)
            case Leadership(leading=leading, transition=transition):
                m.leader.set(1 if leading else 0)
                if transition:
                    m.leader_transitions.inc()
                if not leading:
                    self._zero_leader_gauges(m)
            case MessageHandled(outcome=outcome):
                m.count_message(outcome)
            case Dispatched(latency=latency):
                m.dispatch_latency.observe(max(0.0, latency))
            case JobFinished(outcome=outcome, duration=duration):
                m.jobs_finished.labels(outcome=outcome).inc()
                if duration is not None:
                    m.job_duration.observe(duration)
            case ActiveJobs(count=count):
                m.active_jobs.set(count)
            case StreamsSampled(stats=stats):
                self._sampled.update(stats)
                m.set_stream_stats(stats)
            case GroupRecreated(stream=stream):
                m.group_recreated.labels(stream=stream).inc()
            case KubeRequest(verb=verb, code=code, seconds=seconds):
                m.observe_kube_request(verb, code, seconds)

    def _zero_leader_gauges(self, m: Metrics) -> None:
        # Only the leader samples streams and counts active Jobs. A former leader's last
        # values would otherwise linger beside the new leader's (and skew max() and sum()
        # on the dashboard). Zero rather than remove: prometheus_client's multiprocess mode
        # cannot remove a series.
        m.active_jobs.set(0)
        if self._sampled:
            m.set_stream_stats(dict.fromkeys(self._sampled, {"length": 0, "pending": 0, "lag": 0, "dead": 0}))


class BoardObserver:
    """Signals -> the status board the probes read (runner.process.statusboard)."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def __repr__(self) -> str:
        return f"BoardObserver({self.board.path})"

    def __call__(self, signal: Signal) -> None:
        match signal:
            case Beat(loop=loop):
                self.board.beat(loop)
            case Leadership(leading=leading, leader=leader, term=term):
                self.board.set_leadership(leading=leading, leader=leader, term=term)
            case ElectorState(running=running, healthy=healthy):
                self.board.set_elector(running=running, healthy=healthy)
            case ActiveJobs(count=count):
                self.board.set_active_jobs(count)
            case ErrorRecorded(text=text):
                self.board.record_error(text)
