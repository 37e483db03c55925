"""The leader's scheduler thread: moves due delayed messages back into their streams,
fires recurring schedules' ticks, and carries out cancel requests.

It sleeps until the earliest of: the next due delayed message, the next cron tick, and
KSR_SCHEDULE_POLL from now; `wake()` (a message was just held) ends the sleep at once.
No busy loop, and a due time is honoured within the poll interval even when another
replica wrote it. Every write is fenced by the term it runs in; a stale term ends the thread.

Its clock (`wall_clock`) is Redis's TIME in the runner (runner.store.redis_time), not this
replica's own: due times and cron ticks are judged by the clock every replica shares, so a
leader whose clock stepped neither fires a tick from the future nor moves a message early.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from runner.errors import KsrError
from runner.pipeline.cancels import Cancels
from runner.schedules.ticker import Ticker
from runner.signals import ErrorRecorded, ScheduledMoved, ScheduledWaiting, Signals
from runner.store.schedule import MOVE_BATCH, ScheduledStore
from runner.store.state import StaleTerm

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        *,
        store: ScheduledStore,
        beat: Ticker | None,
        cancels: Cancels | None,
        poll: float,
        signals: Signals,
        wall_clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.beat = beat
        self.cancels = cancels
        self.poll = poll
        self.signals = signals
        self._now = wall_clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self, term: int, keep_going: Callable[[], bool]) -> None:
        self.stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(term, keep_going, self._stop), name="scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self, term: int | None, keep_going: Callable[[], bool] = lambda: True) -> float:
        """One turn; returns how long to sleep before the next."""
        now = self._now()
        for stream in self.store.streams:
            while keep_going():  # a backlog larger than one batch is moved batch by batch
                moved = self.store.move_due(stream, now=now, term=term)
                if moved:
                    self.signals.emit(ScheduledMoved(stream, moved))
                if moved < MOVE_BATCH:
                    break
        next_due = self.store.next_due()
        self.signals.emit(ScheduledWaiting(sum(self.store.waiting().values()), next_due))
        next_tick = self.beat.run(now, term) if self.beat is not None else None
        if self.cancels is not None:
            self.cancels.drain(keep_going)
        wake_at = min((t for t in (next_due, next_tick) if t is not None), default=None)
        sleep = self.poll if wake_at is None else wake_at - self._now()
        return max(0.0, min(self.poll, sleep))

    def _loop(self, term: int, keep_going: Callable[[], bool], stop: threading.Event) -> None:
        log.info("scheduler running in term %d", term)
        while not stop.is_set() and keep_going():
            try:
                sleep = self.run_once(term, keep_going)
            except StaleTerm as e:
                log.info("scheduler stopped: %s", e)
                return
            except (KsrError, redis.RedisError, OSError) as e:
                log.warning("scheduler: %s (retrying in %.1fs)", e, self.poll)
                self.signals.emit(ErrorRecorded(f"scheduler: {e}"))
                sleep = self.poll
            except Exception as e:  # a bug must not stop delayed messages for the rest of the term
                log.exception("scheduler turn failed; going on")
                self.signals.emit(ErrorRecorded(f"scheduler: {type(e).__name__}: {e}"))
                sleep = self.poll
            self._wake.wait(sleep)
            self._wake.clear()
        log.info("scheduler stopped (term %d)", term)
