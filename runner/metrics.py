"""Every Prometheus metric of kube-stream-runner, in one place, safe across processes, and
their one writer: `MetricsObserver`, subscribed to the pipeline's signals (runner.signals).

`ksr run` has several processes writing metrics (the runner, gunicorn workers, the RQ
worker), so prometheus_client runs in multiprocess mode: each process writes mmap files in
PROMETHEUS_MULTIPROC_DIR and `/metrics` merges them with a MultiProcessCollector.

Order matters, and is why the metrics are created lazily by `get()` rather than at import:

1. the supervisor calls `setup_multiprocess(path, wipe=True)` at pod start: it validates the
   directory and removes the files of the previous container (pids repeat in containers,
   so a stale `counter_1.db` would otherwise be reopened with old values);
2. only then does anything call `get()`, which creates the metrics in this process.

Gauges written by the runner alone use `livemax`: one series per pod without a `pid` label,
dropped when the process is marked dead. Without PROMETHEUS_MULTIPROC_DIR (unit tests, a
bare `python -c`) `get()` uses a private in-memory registry and `render()` reads that.
"""

from __future__ import annotations

import glob
import itertools
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from runner.lifecycle import CallbackStatus, DispatchOutcome, State
from runner.signals import (
    CANCEL_STAGES,
    THROTTLE_SOURCES,
    THROTTLED_VERBS,
    TICK_OUTCOMES,
    ActiveJobs,
    Beat,
    Cancelled,
    Dispatched,
    GroupRecreated,
    JobFinished,
    KubeRequest,
    KubeThrottled,
    Leadership,
    MessageHandled,
    ScheduledMoved,
    ScheduledWaiting,
    ScheduleTick,
    Signal,
    StreamsSampled,
    StreamStatsLike,
)

__all__ = [
    "CALLBACK_OUTCOMES",
    "DEFAULT_LABEL_VALUES",
    "ENV_MULTIPROC_DIR",
    "FIXED_LABELS",
    "JOB_OUTCOMES",
    "LABEL_OTHER",
    "MESSAGE_OUTCOMES",
    "CappedLabel",
    "Metrics",
    "MetricsObserver",
    "cleanup_dead_processes",
    "get",
    "multiprocess_dir",
    "render",
    "setup_multiprocess",
]

log = logging.getLogger(__name__)

ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

# ksr_messages_total{outcome}; how each outcome feeds the two series operators of
# queue-to-Job workers already graph (docs/operations.md has the table).
# error: processing raised something unexpected (logged with its traceback); the entry stays
# pending and the delivery counter ends it. waiting: the create was refused for now (quota,
# 429, 5xx); the entry waits out of the stream (runner.store.waiting).
MESSAGE_OUTCOMES = tuple(o.value for o in DispatchOutcome)
PROCESSED_OUTCOMES = tuple(o.value for o in DispatchOutcome if o.processed)
FAILED_OUTCOMES = tuple(o.value for o in DispatchOutcome if o.failed)
# ksr_jobs_finished_total{outcome}: the states a Job ends a message in (runner.jobs.tracker).
JOB_OUTCOMES = tuple(s.value for s in (State.COMPLETED, State.FAILED, State.EXCEPTION, State.CANCELLED))
# ksr_callbacks_total{outcome}, as runner.callbacks.courier counts them.
CALLBACK_OUTCOME_MEANING = {
    "delivered": "the receiver answered 2xx",
    "retry": "the attempt failed (5xx, 429, timeout, no connection); another is due",
    "error": "the attempt raised something unexpected; retried",
    "failed": "given up for good (the receiver refused it, or the callback is owed to no URL)",
    "gone": "the URL answered 410, now or earlier: no more callbacks go there",
    "expired": "the last attempt of a callback out of retries or time",
}
CALLBACK_OUTCOMES = tuple(CALLBACK_OUTCOME_MEANING)
TICK_OUTCOME_MEANING = {
    "fired": "on time (within the grace of its time): its message XADDed",
    "caught_up": "late, within catchUpWindow of an entry with catchUp latest: fired",
    "missed": "due while no leader ran, never fired (counted when a leader comes back)",
    "refused": "ahead of Redis's clock (a replica's clock is ahead): neither fired nor remembered",
}
CALLBACK_STATUSES = tuple(str(int(s)) for s in CallbackStatus)

# Every label whose values are a fixed set, by metric name: docs/metrics.md lists them,
# and the metrics whose labels are all fixed have every series from the start, at 0, so a
# first increase shows in Prometheus's rate() and increase() (a series born at 1 does not).
FIXED_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "ksr_messages": {"outcome": MESSAGE_OUTCOMES},
    "ksr_jobs_finished": {"outcome": JOB_OUTCOMES},
    "ksr_callbacks": {"status": CALLBACK_STATUSES, "outcome": CALLBACK_OUTCOMES},
    "ksr_schedule_ticks": {"outcome": TICK_OUTCOMES},
    "ksr_cancellations": {"stage": CANCEL_STAGES},
    "ksr_kube_throttled": {"verb": THROTTLED_VERBS, "source": THROTTLE_SOURCES},
}

# ksr_jobs_finished_total's job_service and job_namespace come from the message, so the
# producers choose their values: each label keeps the first DEFAULT_LABEL_VALUES distinct
# values a process sees (KSR_METRICS_MAX_LABEL_VALUES), and counts the rest as LABEL_OTHER
# (docs/operations.md, "Job outcomes by service and namespace"). Not `service`/`namespace`:
# a ServiceMonitor's scrape sets those target labels and would rename ours `exported_*`.
DEFAULT_LABEL_VALUES = 20
LABEL_OTHER = "other"
LABEL_UNKNOWN = "unknown"  # a record that holds no service (written before it was kept)

# Entry id time -> Job created: milliseconds when idle, minutes when a backlog drains.
DISPATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
JOB_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
KUBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The metric objects. One instance per process (`get()`); tests may build their own
    with a fresh `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        # -- leadership (runner process)
        self.leader = Gauge(
            "ksr_leader", "1 while this replica holds the leader lease, else 0", registry=r, multiprocess_mode="livemax"
        )
        self.leader_transitions = Counter(
            "ksr_leader_transitions", "Leader changes (new holder or new term) this replica observed", registry=r
        )
        # -- streams (runner process samples them)
        self.stream_length = Gauge(
            "ksr_stream_length", "Entries in the stream (XLEN)", ["stream"], registry=r, multiprocess_mode="livemax"
        )
        self.stream_pending = Gauge(
            "ksr_stream_pending",
            "Entries delivered to the group and not acked",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_lag = Gauge(
            "ksr_stream_lag",
            "Entries not yet delivered to the group (NaN: Redis cannot tell)",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_dead_letters = Gauge(
            "ksr_stream_dead_letters",
            "Entries in the stream's dead-letter stream",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_paused = Gauge(
            "ksr_stream_paused",
            "1 while an operator has the stream paused (ksr pause): its entries wait unread",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.stream_oldest_age = Gauge(
            "ksr_stream_oldest_age_seconds",
            "Age of the stream's oldest entry not yet acked (pending or not yet delivered), by Redis's clock; 0 when none",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_length = Gauge(
            "ksr_queue_length",
            "Messages still to be handled: lag + pending",
            ["stream"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.group_recreated = Counter(
            "ksr_redis_group_recreated", "Consumer groups recreated after they vanished", ["stream"], registry=r
        )
        # -- messages
        self.messages = Counter("ksr_messages", "Messages handled, by outcome", ["outcome"], registry=r)
        self.messages_processed = Counter(
            "ksr_messages_processed",
            "Messages acked: the sum of ksr_messages_total of outcomes " + ", ".join(PROCESSED_OUTCOMES),
            registry=r,
        )
        self.messages_failed = Counter(
            "ksr_messages_failed",
            "Messages acked without a Job: the sum of ksr_messages_total of outcomes " + ", ".join(FAILED_OUTCOMES),
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "ksr_dispatch_latency_seconds",
            "From the entry id's time to the Job created",
            registry=r,
            buckets=DISPATCH_BUCKETS,
        )
        # -- Jobs
        self.active_jobs = Gauge(
            "ksr_active_jobs", "Jobs created and not yet finished", registry=r, multiprocess_mode="livemax"
        )
        self.max_active_jobs = Gauge(
            "ksr_max_active_jobs",
            "KSR_MAX_ACTIVE_JOBS: the cap on ksr_active_jobs (0: no cap)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.jobs_finished = Counter(
            "ksr_jobs_finished",
            "Jobs that ended, by outcome, the message's service and the Job's namespace (each capped, rest: other)",
            ["outcome", "job_service", "job_namespace"],
            registry=r,
        )
        self.job_duration = Histogram(
            "ksr_job_duration_seconds", "From Job created to Job finished", registry=r, buckets=JOB_BUCKETS
        )
        # -- Kubernetes API
        self.kube_requests = Counter(
            "ksr_kube_requests",
            'Kubernetes API requests, by verb and HTTP code ("error" when no answer came)',
            ["verb", "code"],
            registry=r,
        )
        self.kube_request_duration = Histogram(
            "ksr_kube_request_duration_seconds",
            "Kubernetes API request latency",
            ["verb"],
            registry=r,
            buckets=KUBE_BUCKETS,
        )
        self.kube_throttled = Counter(
            "ksr_kube_throttled",
            "Kubernetes API requests held back, by verb and source: server = the apiserver answered 429 "
            "(API Priority and Fairness), client = waited for a KSR_KUBE_QPS token",
            ["verb", "source"],
            registry=r,
        )
        # -- callbacks (RQ worker process)
        self.callbacks = Counter(
            "ksr_callbacks",
            "Webhook callback attempts, by callback status and outcome",
            ["status", "outcome"],
            registry=r,
        )
        # -- scheduling (the leader's scheduler thread; cancels from the tracker)
        self.scheduled_waiting = Gauge(
            "ksr_scheduled_waiting",
            "Delayed messages held until they are due",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.scheduled_moved = Counter(
            "ksr_scheduled_moved", "Delayed messages moved back into their stream when due", ["stream"], registry=r
        )
        self.schedule_ticks = Counter(
            "ksr_schedule_ticks",
            "Recurring schedule ticks, by entry and outcome",
            ["entry", "outcome"],
            registry=r,
        )
        self.cancellations = Counter("ksr_cancellations", "Messages cancelled, by stage", ["stage"], registry=r)
        # -- liveness
        self.loop_heartbeat = Gauge(
            "ksr_loop_heartbeat_timestamp_seconds",
            "Unix time of the loop's last heartbeat",
            ["loop"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._zero_fixed_series()

    def _zero_fixed_series(self) -> None:
        for metric in (self.messages, self.callbacks, self.cancellations, self.kube_throttled):  # jobs_finished: below
            labels = FIXED_LABELS[metric._name]
            for combination in itertools.product(*(labels[name] for name in metric._labelnames)):
                metric.labels(*combination)

    def open_schedule(self, entry: str) -> None:
        """Every outcome series of schedule `entry`, at 0 until it happens."""
        for outcome in TICK_OUTCOMES:
            self.schedule_ticks.labels(entry=entry, outcome=outcome)

    def count_callback(self, status: int, outcome: str) -> None:
        if outcome not in CALLBACK_OUTCOMES:
            raise ValueError(f"unknown callback outcome {outcome!r}; one of {', '.join(CALLBACK_OUTCOMES)}")
        self.callbacks.labels(status=str(int(status)), outcome=outcome).inc()

    # -- helpers, so callers make one call per event --------------------------------------

    def count_message(self, outcome: DispatchOutcome) -> None:
        """One message reached `outcome`; also feeds processed/failed."""
        if outcome not in MESSAGE_OUTCOMES:  # a stray string fails here, not in a dashboard
            raise ValueError(f"unknown message outcome {outcome!r}; one of {', '.join(MESSAGE_OUTCOMES)}")
        outcome = DispatchOutcome(outcome)
        self.messages.labels(outcome=outcome.value).inc()
        if outcome.processed:
            self.messages_processed.inc()
        if outcome.failed:
            self.messages_failed.inc()

    def set_stream_stats(
        self, stats: Mapping[str, StreamStatsLike | Mapping[str, Any]], paused: Collection[str] = ()
    ) -> None:
        """Set the per-stream gauges from StreamInspection.stats() (objects or dicts)."""
        for stream, s in stats.items():
            self.stream_paused.labels(stream=stream).set(1 if stream in paused else 0)
            row: Mapping[str, Any] = (
                s
                if isinstance(s, Mapping)
                else {k: getattr(s, k) for k in ("length", "pending", "lag", "dead", "oldest_age")}
            )
            lag = row.get("lag")
            pending = int(row["pending"])
            self.stream_length.labels(stream=stream).set(int(row["length"]))
            self.stream_pending.labels(stream=stream).set(pending)
            self.stream_lag.labels(stream=stream).set(math.nan if lag is None else int(lag))
            self.stream_dead_letters.labels(stream=stream).set(int(row["dead"]))
            self.stream_oldest_age.labels(stream=stream).set(float(row.get("oldest_age", 0.0)))
            self.queue_length.labels(stream=stream).set(math.nan if lag is None else int(lag) + pending)

    def observe_kube_request(self, verb: str, code: int | str | None, seconds: float) -> None:
        self.kube_requests.labels(verb=verb, code="error" if code is None else str(code)).inc()
        self.kube_request_duration.labels(verb=verb).observe(seconds)

    def heartbeat(self, loop: str, wall_time: float) -> None:
        self.loop_heartbeat.labels(loop=loop).set(wall_time)


class CappedLabel:
    """A label whose values come from outside: the first `limit` distinct values pass as
    they are, every later one is LABEL_OTHER, so a producer inventing names cannot grow the
    series without bound. Per process, in the order seen; thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"label value cap must be at least 1, got {limit}")
        self.limit = limit
        self._kept: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value or LABEL_UNKNOWN
        with self._lock:
            if value in self._kept:
                return value
            if len(self._kept) < self.limit:
                self._kept.add(value)
                return value
        return LABEL_OTHER


# -- the writer -----------------------------------------------------------------------------


class MetricsObserver:
    """The only writer of the metrics above, except `ksr_callbacks_total` (the courier, in
    the RQ worker process): runner.signals in, metrics out. This process's metrics are
    resolved on each signal (`get()` must come after the supervisor prepared the
    multiprocess directory)."""

    def __init__(
        self, metrics: Callable[[], Metrics] | None = None, *, max_label_values: int = DEFAULT_LABEL_VALUES
    ) -> None:
        self._metrics = metrics or get
        self._sampled: set[str] = set()  # streams whose gauges this replica has set
        self._service = CappedLabel(max_label_values)
        self._namespace = CappedLabel(max_label_values)

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
            case Dispatched(latency=latency, service=service, namespace=namespace):
                m.dispatch_latency.observe(max(0.0, latency))
                if service:
                    self._job_outcomes_at_zero(m, service, namespace)
            case JobFinished(outcome=outcome, duration=duration, service=service, namespace=namespace):
                m.jobs_finished.labels(
                    outcome=str(outcome), job_service=self._service(service), job_namespace=self._namespace(namespace)
                ).inc()
                if duration is not None:
                    m.job_duration.observe(duration)
            case ActiveJobs(count=count, cap=cap):
                m.active_jobs.set(count)
                m.max_active_jobs.set(cap)
            case StreamsSampled(stats=stats, paused=paused):
                self._sampled.update(stats)
                m.set_stream_stats(stats, paused)
                for stream in stats:  # a labelled counter has no series until its child exists
                    m.group_recreated.labels(stream=stream)
                    m.scheduled_moved.labels(stream=stream)
            case GroupRecreated(stream=stream):
                m.group_recreated.labels(stream=stream).inc()
            case KubeRequest(verb=verb, code=code, seconds=seconds):
                m.observe_kube_request(verb, code, seconds)
            case KubeThrottled(verb=verb, source=source):
                m.kube_throttled.labels(verb=verb, source=source).inc()
            case ScheduledWaiting(count=count):
                m.scheduled_waiting.set(count)
            case ScheduledMoved(stream=stream, count=count):
                m.scheduled_moved.labels(stream=stream).inc(count)
            case ScheduleTick(entry=entry, outcome=outcome, count=count):
                m.open_schedule(entry)
                m.schedule_ticks.labels(entry=entry, outcome=outcome).inc(count)
            case Cancelled(stage=stage):
                m.cancellations.labels(stage=stage).inc()

    def _job_outcomes_at_zero(self, m: Metrics, service: str, namespace: str) -> None:
        # A counter series first scraped at 1 is invisible to increase() and rate(): a
        # producer's first failed Job would show as 0 on the dashboard. So every outcome of
        # a (service, namespace) exists at 0 from its first Job's creation on.
        labels = {"job_service": self._service(service), "job_namespace": self._namespace(namespace)}
        for outcome in JOB_OUTCOMES:
            m.jobs_finished.labels(outcome=outcome, **labels)

    def _zero_leader_gauges(self, m: Metrics) -> None:
        # Only the leader samples streams and counts active Jobs. A former leader's last
        # values would otherwise linger beside the new leader's (and skew max() and sum()
        # on the dashboard). Zero rather than remove: prometheus_client's multiprocess mode
        # cannot remove a series.
        m.active_jobs.set(0)
        m.scheduled_waiting.set(0)
        if self._sampled:
            m.set_stream_stats(
                dict.fromkeys(self._sampled, {"length": 0, "pending": 0, "lag": 0, "dead": 0, "oldest_age": 0.0})
            )


# -- process-wide instance ------------------------------------------------------------------

_lock = threading.Lock()
_instance: Metrics | None = None
_local_registry: CollectorRegistry | None = None


def multiprocess_dir() -> str | None:
    return os.environ.get(ENV_MULTIPROC_DIR) or None


def get() -> Metrics:
    """This process's metrics, created on first use (after `setup_multiprocess`)."""
    global _instance, _local_registry
    with _lock:
        if _instance is None:
            if multiprocess_dir():
                _refresh_value_class()
                # In multiprocess mode the registry does not matter (render() reads the
                # files); None keeps the global REGISTRY free of duplicates.
                _instance = Metrics(None)
            else:
                _local_registry = CollectorRegistry()
                _instance = Metrics(_local_registry)
        return _instance


def setup_multiprocess(path: str | os.PathLike[str] | None = None, *, wipe: bool = False) -> Path:
    """Validate PROMETHEUS_MULTIPROC_DIR (or `path`, which is then exported) and return it.

    `wipe=True` (the supervisor, once per pod start, before any child starts) removes every
    metric file left by earlier processes. It refuses once this process created metrics:
    their files would vanish under them.
    """
    raw = os.fspath(path) if path is not None else multiprocess_dir()
    if not raw:
        raise RuntimeError(f"{ENV_MULTIPROC_DIR} is not set")
    directory = Path(raw)
    if wipe:
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir():
        raise RuntimeError(f"{ENV_MULTIPROC_DIR}={raw}: not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise RuntimeError(f"{ENV_MULTIPROC_DIR}={raw}: not writable")
    os.environ[ENV_MULTIPROC_DIR] = str(directory)
    if wipe:
        with _lock:
            if _instance is not None:
                raise RuntimeError("setup_multiprocess(wipe=True) after metrics were created in this process")
        removed = 0
        for f in directory.glob("*.db"):
            f.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("removed %d stale metric files from %s", removed, directory)
    return directory


def _refresh_value_class() -> None:
    # prometheus_client picks its value class when it is imported; the directory may have
    # been exported after that (setup_multiprocess), so pick again before creating metrics.
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


_DB_PID = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def cleanup_dead_processes(path: str | os.PathLike[str] | None = None) -> list[int]:
    """mark_process_dead() for every pid with live-gauge files that no longer runs (a gunicorn
    worker orphaned by its master's death never reaches child_exit). Returns those pids."""
    directory = os.fspath(path) if path is not None else multiprocess_dir()
    if not directory:
        return []
    dead = set()
    for name in (os.path.basename(f) for f in glob.glob(os.path.join(directory, "gauge_live*.db"))):
        match = _DB_PID.match(name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, directory)
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render() -> tuple[bytes, str]:
    """The /metrics body and content type: every process's metrics in multiprocess mode."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()  # fresh per scrape, as prometheus_client requires
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    get()
    assert _local_registry is not None
    return generate_latest(_local_registry), CONTENT_TYPE_LATEST
