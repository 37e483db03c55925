"""The one seam between the pipeline and its side channels (metrics, the status board).

The pipeline (runner loop, dispatcher, tracker, Kubernetes client, stream reader) says what
happened by emitting a signal, a small frozen dataclass below; observers subscribed to a
`Signals` turn them into metrics (`runner.metrics.MetricsObserver`) and status-board
fields (`runner.process.statusboard.BoardObserver`). The core never writes a metric or the board
itself, so each series has exactly one writer. dramatiq's middleware and client-go's
leader-election callbacks are the model.

An observer that raises is logged with its traceback and skipped: a side channel never
stops the pipeline. Observers run synchronously in the emitting thread (the loop, a create
worker, a watch thread), so they must be quick and thread-safe.

Not to be confused with OS signals (the supervisor's SIGTERM handling) or with the Redis
events stream (`runner.store.events`), which producers read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from election.clock import SYSTEM_CLOCK, Clock
from runner.lifecycle import DispatchOutcome, State

__all__ = [
    "CANCEL_STAGES",
    "THROTTLE_SOURCES",
    "THROTTLED_VERBS",
    "TICK_OUTCOMES",
    "ActiveJobs",
    "Beat",
    "Cancelled",
    "Dispatched",
    "ElectorState",
    "ErrorRecorded",
    "GroupRecreated",
    "JobFinished",
    "KubeRequest",
    "KubeThrottled",
    "Leadership",
    "MessageHandled",
    "Observer",
    "ScheduleTick",
    "ScheduledMoved",
    "ScheduledWaiting",
    "Signal",
    "Signals",
    "StreamsSampled",
]

log = logging.getLogger(__name__)

# A subscriber failing on every beat would log a traceback several times a second.
REPEAT_LOG_INTERVAL = 60.0

# ScheduleTick.outcome (runner.schedules.ticker): on time; fired late within catchUpWindow;
# missed while no leader ran (never fired); refused, ahead of Redis's clock.
TICK_OUTCOMES = ("fired", "caught_up", "missed", "refused")
# Cancelled.stage: held until due, read and not yet created, its Job running.
CANCEL_STAGES = ("scheduled", "pending", "running")
# KubeThrottled: the verbs of runner.jobs.kube's requests (KubeApi.call), and who held one
# back: the apiserver (a 429, API Priority and Fairness) or our own KSR_KUBE_QPS bucket.
THROTTLED_VERBS = ("create", "get", "patch", "delete", "list")
THROTTLE_SOURCES = ("server", "client")


class StreamStatsLike(Protocol):
    @property
    def length(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def lag(self) -> int | None: ...
    @property
    def dead(self) -> int: ...
    @property
    def oldest_age(self) -> float: ...


# -- the signals ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Beat:
    """Loop `loop` is alive (every turn of it)."""

    loop: str
    wall: float  # Unix time of the beat


@dataclass(frozen=True)
class Leadership:
    """This replica's view of the election changed (emitted on change only)."""

    leading: bool
    leader: str | None  # the holder seen, None while nobody holds the lock
    term: int | None
    transition: bool  # a new holder or a new term since the previous holder seen


@dataclass(frozen=True)
class ElectorState:
    """The elector thread's state changed."""

    running: bool
    healthy: bool


@dataclass(frozen=True)
class MessageHandled:
    """One stream entry reached `outcome`."""

    outcome: DispatchOutcome


@dataclass(frozen=True)
class Dispatched:
    """A Job was created (or adopted) for an entry and the entry acked."""

    latency: float  # seconds from the entry id's time to the Job created
    service: str = ""  # the message's `service`
    namespace: str = ""  # the Job's namespace


@dataclass(frozen=True)
class JobFinished:
    """A Job reached a terminal state: completed, failed, exception or cancelled."""

    outcome: State
    duration: float | None  # seconds from created to finished, when known
    service: str = ""  # the message's `service`, from the Job's record
    namespace: str = ""  # the Job's namespace


@dataclass(frozen=True)
class ActiveJobs:
    """The leader counted the active set; `cap` is KSR_MAX_ACTIVE_JOBS (0: no cap)."""

    count: int
    cap: int = 0


@dataclass(frozen=True)
class StreamsSampled:
    """The leader sampled length, pending, lag and dead letters of every stream, and which
    of them an operator paused."""

    stats: Mapping[str, StreamStatsLike]
    paused: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GroupRecreated:
    """The consumer group on `stream` had vanished and was recreated."""

    stream: str


@dataclass(frozen=True)
class KubeRequest:
    """One Kubernetes API request ended."""

    verb: str
    code: int | None  # HTTP status; None when no answer came
    seconds: float


@dataclass(frozen=True)
class KubeThrottled:
    """A Kubernetes API request was held back: `source` "server" when the apiserver answered
    429 (`seconds`: its Retry-After), "client" when it waited `seconds` for a token of
    KSR_KUBE_QPS / KSR_KUBE_BURST."""

    verb: str
    source: str  # one of THROTTLE_SOURCES
    seconds: float


@dataclass(frozen=True)
class ScheduledWaiting:
    """The leader counted the delayed messages held, and the earliest due time."""

    count: int
    next_due: float | None  # Unix time, None when nothing is held


@dataclass(frozen=True)
class ScheduledMoved:
    """Delayed messages came due and were moved back into `stream`."""

    stream: str
    count: int


@dataclass(frozen=True)
class ScheduleTick:
    """A recurring schedule's ticks: `outcome` is one of TICK_OUTCOMES; `count` 0 only makes the
    series exist (so a first missed tick is an increase Prometheus sees)."""

    entry: str
    outcome: str
    count: int = 1


@dataclass(frozen=True)
class Cancelled:
    """A message was cancelled (its one 99 `Cancelled` sent) at `stage`, one of CANCEL_STAGES."""

    stage: str


@dataclass(frozen=True)
class ErrorRecorded:
    """An error worth showing to operators (the board keeps the last ones)."""

    text: str


Signal = (
    Beat
    | Leadership
    | ElectorState
    | MessageHandled
    | Dispatched
    | JobFinished
    | ActiveJobs
    | StreamsSampled
    | GroupRecreated
    | KubeRequest
    | KubeThrottled
    | ScheduledWaiting
    | ScheduledMoved
    | ScheduleTick
    | Cancelled
    | ErrorRecorded
)


class Observer(Protocol):
    """A subscriber: called with every signal; ignores the ones it has no use for."""

    def __call__(self, signal: Signal) -> None: ...


# -- the emitter ---------------------------------------------------------------------------


class Signals:
    """Fans each signal out to the observers, in subscription order. Thread-safe."""

    def __init__(self, observers: Iterable[Observer] = (), *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._observers: tuple[Observer, ...] = tuple(observers)
        self._clock = clock
        self._mutex = threading.Lock()
        self._last_logged: dict[tuple[int, type], float] = {}

    @property
    def observers(self) -> tuple[Observer, ...]:
        return self._observers

    def subscribe(self, observer: Observer) -> None:
        with self._mutex:
            self._observers = (*self._observers, observer)  # emitters iterate a snapshot

    def emit(self, signal: Signal) -> None:
        for observer in self._observers:
            try:
                observer(signal)
            except Exception:  # a side channel must never stop the pipeline
                self._failed(observer, signal)

    def _failed(self, observer: Observer, signal: Signal) -> None:
        key = (id(observer), type(signal))
        now = self._clock.monotonic()
        with self._mutex:
            last = self._last_logged.get(key)
            loud = last is None or now - last >= REPEAT_LOG_INTERVAL
            if loud:
                self._last_logged[key] = now
        if loud:
            log.exception("observer %r failed on %r; the pipeline goes on", observer, signal)
        else:
            log.debug("observer %r failed again on %r", observer, signal, exc_info=True)
