"""The leader-election state machine (client-go `tools/leaderelection` semantics).

The elector only knows the `Lock` protocol. Each `step()` reads the record once and then
either leaves it alone (someone else holds an unexpired lease), creates it, takes it over,
or renews it, with optimistic concurrency on the record's version.

Time, all on the injected clock:

- Expiry is judged on the local monotonic clock from the moment *this* candidate last saw
  the record change (`observed_at`), plus the lease duration written in the record. Remote
  timestamps (`renew_time`) are never compared with our clock, so clock skew cannot make a
  live leader look expired.
- A leader's tenure is valid until `renew_deadline` after the moment it *sent* its last
  successful renew. Any other candidate saw that write later still, and waits the longer
  `lease_duration` from then, so two candidates' `is_leading()` windows never overlap
  (given the lease > renew-deadline check in `ElectionConfig`).
- A leader that cannot renew within `renew_deadline` steps down; `is_leading()` does not wait
  for the loop: it is computed from the clock on every call.

Terms: the record's `transitions` counter is the term, a fencing token. It goes up whenever a
candidate starts a tenure (a different holder, or the same identity again after it stepped
down), so every tenure has its own term. A record that vanished (Redis restarted without
persistence) is recreated with a term above the highest this candidate has seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from random import Random
from typing import Any

from election.clock import SYSTEM_CLOCK, Clock, RandomSource
from election.config import ElectionConfig
from election.errors import ConflictError, ElectionConfigError, LockError
from election.lock import Lock
from election.record import LeaderRecord

__all__ = ["Elector", "ElectorStatus"]

logger = logging.getLogger(__name__)

OnStartedLeading = Callable[[int], None]
OnStoppedLeading = Callable[[], None]
OnNewLeader = Callable[[str], None]

_Event = tuple[str, Callable[..., Any], tuple[Any, ...]]

_MIN_DELAY = 0.01  # never spin, whatever the arithmetic says


@dataclass(frozen=True)
class ElectorStatus:
    """A consistent snapshot, all judged at monotonic time `at`.

    `since`/`until` bound this candidate's current or last tenure on the monotonic clock:
    `since` is when the request that won it was sent, `until` is when `is_leading()` stops
    being true (last successful renew sent + renew deadline, or the moment it stepped down).
    """

    identity: str
    at: float
    leading: bool
    believes_leading: bool
    healthy: bool
    term: int | None
    leader: str | None
    tenure_term: int | None
    since: float | None
    until: float | None
    last_renew: float | None
    last_error: str | None


class Elector:
    """Competes for `lock` as `identity`; call `run(stop_event)` in a thread of its own.

    Callbacks run on the elector's thread, after its state is updated: they must return
    quickly (set an event, start a thread). An exception in a callback is logged and ignored.
    """

    def __init__(
        self,
        lock: Lock,
        *,
        identity: str,
        config: ElectionConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: RandomSource | None = None,
        on_started_leading: OnStartedLeading | None = None,
        on_stopped_leading: OnStoppedLeading | None = None,
        on_new_leader: OnNewLeader | None = None,
        health_tolerance: float | None = None,
    ) -> None:
        if not identity:
            raise ElectionConfigError("POD_NAME", "the candidate identity must not be empty")
        self._lock = lock
        self._identity = identity
        self._config = config or ElectionConfig()
        self._clock = clock
        self._rng: RandomSource = rng if rng is not None else Random()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._health_tolerance = self._config.retry_period if health_tolerance is None else health_tolerance

        self._mutex = threading.Lock()  # guards the state below; never held during I/O
        self._io = threading.Lock()  # serialises lock requests (step, release)
        self._stop_event = threading.Event()

        self._observed: LeaderRecord | None = None
        self._observed_at: float | None = None
        self._max_transitions: int | None = None
        self._reported_leader: str | None = None
        self._leading = False
        self._tenure_term: int | None = None
        self._since: float | None = None
        self._renewed_at: float | None = None
        self._until: float | None = None
        self._last_error: str | None = None

    # -- read-only views, safe from any thread ---------------------------------------------

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def config(self) -> ElectionConfig:
        return self._config

    @property
    def term(self) -> int | None:
        """The term (record transitions) last observed; ours while we lead."""
        with self._mutex:
            return self._observed.transitions if self._observed is not None else None

    @property
    def leader(self) -> str | None:
        """The holder last observed in the record, or None (none yet, or released)."""
        with self._mutex:
            return self._observed.holder if self._observed is not None else None

    def is_leading(self) -> bool:
        """True only while our last successful renew is younger than the renew deadline.

        This is the fencing check: call it right before every side effect."""
        now = self._clock.monotonic()
        with self._mutex:
            return self._is_leading_at(now)

    def holds_term(self, term: int) -> bool:
        """`is_leading()` and still in tenure `term` (the one `on_started_leading` gave)."""
        now = self._clock.monotonic()
        with self._mutex:
            return self._is_leading_at(now) and self._tenure_term == term

    def healthy(self) -> bool:
        """False when we believe we lead but have not renewed within lease + tolerance: the
        loop is stuck (a hung request, a blocking callback). For liveness probes."""
        now = self._clock.monotonic()
        with self._mutex:
            return self._healthy_at(now)

    def status(self) -> ElectorStatus:
        now = self._clock.monotonic()
        with self._mutex:
            return ElectorStatus(
                identity=self._identity,
                at=now,
                leading=self._is_leading_at(now),
                believes_leading=self._leading,
                healthy=self._healthy_at(now),
                term=self._observed.transitions if self._observed is not None else None,
                leader=self._observed.holder if self._observed is not None else None,
                tenure_term=self._tenure_term,
                since=self._since,
                until=self._valid_until(),
                last_renew=self._renewed_at,
                last_error=self._last_error,
            )

    # -- driving ------------------------------------------------------------------------------

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Acquire, renew, and on stop release; returns once `stop_event` (or `stop()`) is set."""
        if stop_event is not None:
            self._stop_event = stop_event
        stop = self._stop_event
        logger.info("candidate %s joins the election on %s", self._identity, self._lock.describe())
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # a bug must not end the election silently
                    logger.exception("election step failed unexpectedly")
                if self._clock.wait(stop, self.next_delay()):
                    break
        finally:
            try:
                self.release()
            finally:
                logger.info("candidate %s left the election", self._identity)

    def stop(self) -> None:
        """Ask `run()` to release and return."""
        self._stop_event.set()

    def step(self) -> bool:
        """One attempt to acquire or renew; returns `is_leading()` afterwards."""
        events: list[_Event] = []
        try:
            with self._io:
                self._try_acquire_or_renew(events)
        finally:
            self._fire(events)  # outside the I/O lock: a callback may call release()
        return self.is_leading()

    def release(self) -> bool:
        """Give up leadership: stop leading at once, then clear the holder so another
        candidate takes over at its next retry. Returns whether we were leading."""
        events: list[_Event] = []
        try:
            with self._io:
                return self._release(events)
        finally:
            self._fire(events)

    def advance_term(self, term: int, *, at_least: int) -> int | None:
        """Move the record's term to `at_least` if we still hold tenure `term`; returns the
        term we now hold (`term` when it is already high enough), or None when we do not
        hold `term` or the write failed (a conflict means someone else wrote: we step down).

        For callers that keep their own highest term (the runner's fencing key): a lock
        created afresh (deleted, renamed, another backend) starts again at 0. The write is
        a compare-and-set on the version we last saw, like a renewal, so a deposed leader
        cannot jump above the one that replaced it. The tenure goes on under the new term;
        no callback fires (the caller has the answer)."""
        events: list[_Event] = []
        try:
            with self._io:
                return self._advance_term(term, at_least, events)
        finally:
            self._fire(events)

    def retry_delay(self) -> float:
        """A candidate's wait between attempts: uniform in [retry, retry * jitter)."""
        c = self._config
        return c.retry_period * (1.0 + self._rng.random() * (c.jitter - 1.0))

    def next_delay(self) -> float:
        """How long `run()` waits before the next `step()`.

        A leader renews every retry period, and wakes at its renew deadline if that comes
        first. A follower waits the jittered retry, or until the holder's lease expires
        (in its own observation) if that is sooner."""
        now = self._clock.monotonic()
        with self._mutex:
            if self._leading and self._renewed_at is not None:
                to_deadline = self._renewed_at + self._config.renew_deadline - now
                return max(_MIN_DELAY, min(self._config.retry_period, to_deadline))
            observed, observed_at = self._observed, self._observed_at
        delay = self.retry_delay()
        if observed is not None and observed.holder and observed.holder != self._identity and observed_at is not None:
            to_expiry = observed_at + observed.lease_duration - now
            if 0 < to_expiry < delay:
                spread = self._rng.random() * self._config.retry_period * (self._config.jitter - 1.0)
                delay = min(delay, to_expiry + _MIN_DELAY + spread)
        return max(_MIN_DELAY, delay)

    # -- the state machine --------------------------------------------------------------------

    def _try_acquire_or_renew(self, events: list[_Event]) -> None:
        cfg = self._config
        self._check_deadline(events)
        try:
            current = self._lock.get()
        except LockError as e:
            self._failed("read", e, events)
            return
        seen_at = self._clock.monotonic()
        with self._mutex:
            self._last_error = None  # the server answers again: the next failure is news
            self._observe(current, seen_at, events)
            next_term = 0 if self._max_transitions is None else self._max_transitions + 1
            leading = self._leading

        wall = self._clock.now()
        renewing = False
        # A term of ours from now on, over the stored record's version (none when there is none).
        new_term = LeaderRecord(
            holder=self._identity,
            lease_duration=cfg.lease_duration,
            acquire_time=wall,
            renew_time=wall,
            transitions=next_term,
            version=None if current is None else current.version,
        )
        if current is None:
            wanted = new_term
        elif current.holder and current.holder != self._identity and not self._expired(current, seen_at):
            if leading:
                self._step_down(f"{current.holder} holds the lock now", events)
            logger.debug("%s is held by %s; waiting", self._lock.describe(), current.holder)
            return
        else:
            renewing = leading and current.holder == self._identity
            if leading and not renewing:
                self._step_down("the record no longer names us", events)
            if renewing:
                wanted = replace(current, lease_duration=cfg.lease_duration, renew_time=wall)
            else:
                wanted = new_term

        sent = self._clock.monotonic()
        try:
            stored = self._lock.create(wanted) if current is None else self._lock.update(wanted)
        except ConflictError as e:
            with self._mutex:
                self._last_error = f"conflict: {e}"
            if leading:
                self._step_down(f"lost the record to another writer ({e})", events)
            else:
                logger.debug("%s: someone else wrote first (%s)", self._lock.describe(), e)
            return
        except LockError as e:
            self._failed("renew" if renewing else "acquire", e, events)
            return
        done = self._clock.monotonic()

        with self._mutex:
            self._observe(stored, done, events)
            self._renewed_at = sent
            self._last_error = None
            if renewing:
                logger.debug("%s renewed %s (term %s)", self._identity, self._lock.describe(), stored.transitions)
                return
            self._leading = True
            self._tenure_term = stored.transitions
            self._since = sent
            self._until = None
        logger.info("%s became the leader on %s (term %s)", self._identity, self._lock.describe(), stored.transitions)
        if self._on_started is not None:
            events.append(("on_started_leading", self._on_started, (stored.transitions,)))

    def _release(self, events: list[_Event]) -> bool:
        with self._mutex:
            if not self._leading:
                return False
            record = self._observed
        self._step_down("released", events)  # is_leading() is false before the request leaves
        if record is None or record.holder != self._identity:
            return True
        wall = self._clock.now()
        released = LeaderRecord(
            holder=None,
            lease_duration=1.0,
            acquire_time=wall,
            renew_time=wall,
            transitions=record.transitions,
            version=record.version,
        )
        try:
            stored = self._lock.update(released)
        except LockError as e:
            logger.warning(
                "could not release %s (%s); others take over when the lease expires", self._lock.describe(), e
            )
            return True
        with self._mutex:
            self._observe(stored, self._clock.monotonic(), events)
        return True

    def _advance_term(self, term: int, at_least: int, events: list[_Event]) -> int | None:
        now = self._clock.monotonic()
        with self._mutex:
            record = self._observed
            if not (self._is_leading_at(now) and self._tenure_term == term):
                return None
        if at_least <= term:
            return term
        if record is None or record.holder != self._identity:
            return None
        wanted = replace(
            record, lease_duration=self._config.lease_duration, renew_time=self._clock.now(), transitions=at_least
        )
        sent = self._clock.monotonic()
        try:
            stored = self._lock.update(wanted)
        except ConflictError as e:
            with self._mutex:
                self._last_error = f"conflict: {e}"
            self._step_down(f"lost the record to another writer ({e})", events)
            return None
        except LockError as e:
            with self._mutex:
                self._last_error = f"advance term: {e}"
            logger.warning(
                "%s could not move the term on %s to %d: %s", self._identity, self._lock.describe(), at_least, e
            )
            return None
        with self._mutex:
            self._observe(stored, self._clock.monotonic(), events)
            self._renewed_at = sent
            self._tenure_term = stored.transitions
            self._last_error = None
        logger.warning(
            "%s moved the term on %s from %d to %d (the record had started again below a term already used)",
            self._identity,
            self._lock.describe(),
            term,
            stored.transitions,
        )
        return stored.transitions

    def _check_deadline(self, events: list[_Event]) -> None:
        now = self._clock.monotonic()
        with self._mutex:
            late = (
                self._leading and self._renewed_at is not None and now >= self._renewed_at + self._config.renew_deadline
            )
        if late:
            self._step_down(f"no successful renew within {self._config.renew_deadline:g}s", events)

    def _failed(self, what: str, error: LockError, events: list[_Event]) -> None:
        with self._mutex:
            first = self._last_error is None
            self._last_error = f"{what}: {error}"
            leading = self._leading
        if leading:
            logger.warning("%s could not %s %s: %s", self._identity, what, self._lock.describe(), error)
            self._check_deadline(events)
        else:
            logger.log(
                logging.WARNING if first else logging.DEBUG,
                "%s could not %s %s: %s",
                self._identity,
                what,
                self._lock.describe(),
                error,
            )

    def _step_down(self, reason: str, events: list[_Event]) -> None:
        now = self._clock.monotonic()
        with self._mutex:
            if not self._leading:
                return
            valid_until = self._valid_until()
            self._leading = False
            self._until = now if valid_until is None else min(valid_until, now)
            term = self._tenure_term
        logger.info("%s stopped leading %s (term %s): %s", self._identity, self._lock.describe(), term, reason)
        if self._on_stopped is not None:
            events.append(("on_stopped_leading", self._on_stopped, ()))

    def _expired(self, record: LeaderRecord, now: float) -> bool:
        with self._mutex:
            observed_at = self._observed_at
        return observed_at is None or observed_at + record.lease_duration <= now

    # -- helpers that expect self._mutex held ---------------------------------------------------

    def _observe(self, record: LeaderRecord | None, at: float, events: list[_Event]) -> None:
        if record == self._observed and self._observed_at is not None:
            return
        self._observed = record
        self._observed_at = at
        if record is None:
            return
        if self._max_transitions is None or record.transitions > self._max_transitions:
            self._max_transitions = record.transitions
        holder = record.holder
        if holder != self._reported_leader:
            self._reported_leader = holder
            if holder:
                logger.info(
                    "%s observed a new leader on %s: %s (term %s)",
                    self._identity,
                    self._lock.describe(),
                    holder,
                    record.transitions,
                )
                if self._on_new_leader is not None:
                    events.append(("on_new_leader", self._on_new_leader, (holder,)))

    def _valid_until(self) -> float | None:
        if not self._leading:
            return self._until
        if self._renewed_at is None:
            return None
        return self._renewed_at + self._config.renew_deadline

    def _is_leading_at(self, now: float) -> bool:
        until = self._valid_until()
        return self._leading and until is not None and now < until

    def _healthy_at(self, now: float) -> bool:
        if not self._leading or self._renewed_at is None:
            return True
        return now - self._renewed_at <= self._config.lease_duration + self._health_tolerance

    @staticmethod
    def _fire(events: list[_Event]) -> None:
        for name, callback, args in events:
            try:
                callback(*args)
            except Exception:
                logger.exception("%s callback failed; the election goes on", name)
