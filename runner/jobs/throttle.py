"""How the runner paces its own Kubernetes API requests, so it is a good citizen of the
apiserver and a throttled create never holds up anything else.

Two limits, both in front of every request `KubeApi.call` sends (not the Lease renewals:
election/lease_lock.py talks to the apiserver through its own client, so neither limit can
delay a renewal; not the watches' opening either, one per watch and minutes apart):

- **The client's own bucket** (`TokenBucket`): `KSR_KUBE_QPS` tokens a second, up to
  `KSR_KUBE_BURST`, like client-go's rest.Config QPS/Burst; `0` QPS: none. A create waits
  for a whole token with no debt outstanding; every other verb (the finalizer's release,
  gets, lists, deletes) takes its token at once, into debt if need be, so it goes before any
  waiting create, and a backlog of creates never starves the release of finished Jobs.
- **The apiserver's answer** (`ServerGate`): API Priority and Fairness answers 429 with
  Retry-After when the runner's flow exceeds its priority level. The class of the refused
  request (creates, or the rest) is closed until Retry-After has passed, for every thread at
  once, then sends one request at a time until `CALM_FACTOR` Retry-Afters pass without
  another 429, and then opens fully. So a pool of create workers probes with one request per
  Retry-After instead of each retrying on its own, and a 429 on creates never slows the
  release, the watcher's reads or the callbacks (those are HTTP to producers, not kube).

Each request held back is reported as a `KubeThrottled` signal (metrics: ksr_kube_throttled_total;
the status board: the degraded reason on /status).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from election.clock import SYSTEM_CLOCK, Clock
from runner.errors import KsrError, KubeApiError, KubeTransientError
from runner.signals import KubeThrottled, Signals

__all__ = ["CREATE", "KubeThrottle", "ServerGate", "Stopped", "TokenBucket"]

CREATE = "create"  # the verb that yields to all the others
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After: what APF sends at first
MAX_RETRY_AFTER = 60.0  # a longer Retry-After is taken as this (APF itself stops at 32)
CALM_FACTOR = 2.0  # one request at a time until this many Retry-Afters pass without a 429
STEP = 0.25  # the longest single sleep, so keep_going() is asked at least 4 times a second
PROBE_POLL = 0.02  # how often a request waiting its turn behind the probe looks again
_EPSILON = 1e-6  # a token short by float rounding is whole; the shortest sleep (1e-17 s would not move time)


class Stopped(KsrError):
    """The caller no longer wants the result (lost its term, shutting down, out of time)."""


class TokenBucket:
    """`qps` tokens a second, at most `burst` saved. Thread-safe; time from `clock`."""

    def __init__(self, qps: float, burst: int, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, got {qps}, {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock.monotonic()
        self._mutex = threading.Lock()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now

    def reserve(self) -> float:
        """Take a token now, into debt if none is left; the seconds to wait before sending."""
        with self._mutex:
            self._refill()
            self._tokens -= 1.0
            return max(0.0, -self._tokens / self.qps)

    def try_take(self) -> float:
        """0.0 when a whole token was taken; else the seconds until one may be (ask again
        then: an urgent request may have taken it meanwhile)."""
        with self._mutex:
            self._refill()
            if self._tokens >= 1.0 - _EPSILON:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.qps


class ServerGate:
    """One class of requests after the apiserver answered 429: closed until Retry-After has
    passed, then one request in flight at a time until calm (module doc). Thread-safe."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._until = float("-inf")  # closed until then
        self._calm = 0.0
        self._in_flight = 0
        self.last_error: KubeApiError | None = None

    def refused(self, retry_after: float, error: KubeApiError) -> None:
        with self._mutex:
            now = self._clock.monotonic()
            self._until = max(self._until, now + retry_after)
            self._calm = CALM_FACTOR * retry_after
            self.last_error = error

    def try_enter(self) -> float:
        """0.0 when the request may go (call `leave()` after it); else seconds to wait."""
        with self._mutex:
            now = self._clock.monotonic()
            if now < self._until:
                return self._until - now
            if self._in_flight and now < self._until + self._calm:
                return PROBE_POLL  # probing: one at a time
            self._in_flight += 1
            return 0.0

    def leave(self) -> None:
        with self._mutex:
            self._in_flight -= 1

    @property
    def throttled(self) -> bool:
        with self._mutex:
            return self._clock.monotonic() < self._until


class KubeThrottle:
    """Both limits in front of `KubeApi.call`'s requests: `with throttle.admit(verb, ...)`
    around each request, `throttle.refused(verb, err)` for each 429."""

    def __init__(self, *, qps: float, burst: int, signals: Signals, clock: Clock = SYSTEM_CLOCK) -> None:
        """`qps` 0: no client-side limit (the server's 429s are still honoured)."""
        self.bucket = TokenBucket(qps, burst, clock=clock) if qps > 0 else None
        self.signals = signals
        self._clock = clock
        self.gates = {CREATE: ServerGate(clock=clock), "other": ServerGate(clock=clock)}

    def gate(self, verb: str) -> ServerGate:
        return self.gates[CREATE if verb == CREATE else "other"]

    @contextmanager
    def admit(self, verb: str, *, keep_going: Callable[[], bool], deadline: float | None) -> Iterator[None]:
        """Wait for the server's gate, then for a client token; the request runs inside.
        Raises `Stopped` when `keep_going()` turns false, the last 429 (or a client-side
        transient error) when `deadline` (monotonic) would pass first."""
        gate = self.gate(verb)
        self._wait(gate.try_enter, verb, keep_going, deadline, lambda: self._server_error(verb, gate))
        try:
            if self.bucket is not None:
                self._take_token(verb, keep_going, deadline)
            yield
        finally:
            gate.leave()

    def refused(self, verb: str, error: KubeApiError) -> None:
        """The apiserver answered `error`; a 429 closes the verb's gate for its Retry-After."""
        if error.status != 429:
            return
        retry_after = min(MAX_RETRY_AFTER, error.retry_after or DEFAULT_RETRY_AFTER)
        self.gate(verb).refused(retry_after, error)
        self.signals.emit(KubeThrottled(verb, "server", retry_after))

    # -- internals -----------------------------------------------------------------------

    def _take_token(self, verb: str, keep_going: Callable[[], bool], deadline: float | None) -> None:
        assert self.bucket is not None
        bucket = self.bucket
        started = self._clock.monotonic()
        if verb == CREATE:
            self._wait(bucket.try_take, verb, keep_going, deadline, lambda: self._client_error(verb))
        else:  # the token is ours already: wait out the debt, never behind a create
            wait = bucket.reserve()
            self._wait(_countdown(self._clock, wait), verb, keep_going, None, lambda: self._client_error(verb))
        waited = self._clock.monotonic() - started
        if waited > 0:
            self.signals.emit(KubeThrottled(verb, "client", waited))

    def _wait(
        self,
        ask: Callable[[], float],
        verb: str,
        keep_going: Callable[[], bool],
        deadline: float | None,
        too_late: Callable[[], KubeApiError],
    ) -> None:
        while True:  # ends when `ask` lets the request go, keep_going() turns false or the deadline
            delay = ask()
            if delay <= 0:
                return
            if not keep_going():
                raise Stopped(verb)
            if deadline is not None and self._clock.monotonic() + delay > deadline:
                raise too_late()  # at once: the caller lets the create wait without a thread
            self._clock.sleep(max(_EPSILON, min(delay, STEP)))

    def _server_error(self, verb: str, gate: ServerGate) -> KubeApiError:
        last = gate.last_error
        if last is not None:
            return last
        return KubeTransientError(429, "TooManyRequests", f"{verb}: the apiserver asked us to wait")

    def _client_error(self, verb: str) -> KubeApiError:
        assert self.bucket is not None
        return KubeTransientError(
            None,
            "ClientThrottled",
            f"{verb}: no token of KSR_KUBE_QPS={self.bucket.qps:g} / KSR_KUBE_BURST={self.bucket.burst} in time",
        )


def _countdown(clock: Clock, seconds: float) -> Callable[[], float]:
    end = clock.monotonic() + seconds
    return lambda: end - clock.monotonic()
