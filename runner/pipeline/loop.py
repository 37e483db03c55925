"""The runner: one elector per pod, and while it leads, takeover recovery followed by the
read -> dispatch loop, with the watcher following the Jobs it created.

`Runner.run(stop)` is what `ksr run` (under the supervisor) and `ksr dev` call in the
main process, on a Runner that runner.pipeline.wiring.build_runner assembled: the Runner
builds none of its parts. Its loop beats every iteration (a `Beat` signal: the status board and the
heartbeat metric), so the liveness probe fails when it is stuck; Redis or apiserver outages
are logged, recorded and retried, never fatal. Everything metrics and the board show
leaves through `self.signals` (runner.signals), never written from here.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any

import redis

from election.clock import Clock
from election.elector import Elector, ElectorStatus
from runner import backoff
from runner.callbacks.enqueue import CallbackQueue
from runner.errors import KsrError
from runner.jobs.executors import Executor, LocalExecutor
from runner.jobs.kube import Stopped
from runner.jobs.tracker import Tracker
from runner.jobs.watcher import KubeWatcher
from runner.pipeline.dispatcher import CREATE_DEADLINE, Dispatcher, Refill
from runner.pipeline.leadership import LeadershipView
from runner.pipeline.scheduler import Scheduler
from runner.settings import Settings
from runner.signals import ActiveJobs, Beat, ErrorRecorded, Signals, StreamsSampled
from runner.store.state import StaleTerm, StateStore
from runner.store.stream_inspection import StreamInspection
from runner.store.stream_reader import StreamReader
from runner.store.waiting import WaitingCreates

log = logging.getLogger(__name__)

STATS_INTERVAL = 5.0
# Seconds a tick's creates go on reading new entries as threads free up (Dispatcher's
# Refill); then the tick ends once those in flight are done, and its periodic work runs.
REFILL_SECONDS = 1.0
SWEEP_INTERVAL = 15.0  # owed callbacks whose worker died
ERROR_BACKOFF_CAP = 10.0


@dataclass
class Tenure:
    """The last term this runner led in (None before its first): the tracker fences its late
    writes with it after a step-down."""

    term: int | None = None


class Runner:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        signals: Signals,
        redis_client: redis.Redis,
        reader: StreamReader,
        inspection: StreamInspection,
        state: StateStore,
        callbacks: CallbackQueue,
        waiting: WaitingCreates,
        tracker: Tracker,
        tenure: Tenure,
        capacity: threading.Event,
        executor: Executor,
        watcher: KubeWatcher | None,
        local: LocalExecutor | None,
        elector: Elector,
        scheduler: Scheduler,
        dispatcher: Dispatcher,
    ) -> None:
        """The collaborators, as runner.pipeline.wiring.build_runner assembles them. `tenure`
        is the one the tracker reads, `capacity` the event its Job ends set; `watcher` follows
        Kubernetes Jobs, `local` is the local executor: one of them is None."""
        self.settings = settings
        self.clock = clock
        self.signals = signals
        self.redis = redis_client
        self.reader = reader
        self.inspection = inspection
        self.state = state
        self.callbacks = callbacks
        self.waiting = waiting
        self.tracker = tracker
        self.executor = executor
        self.watcher = watcher
        self.local = local
        self.elector = elector
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.term: int | None = None  # the term we lead in, None while following
        self._tenure = tenure
        self._capacity = capacity
        self._leadership = LeadershipView()
        self._elector_stop = threading.Event()
        self._elector_thread: threading.Thread | None = None
        self._next_reconcile = 0.0
        # Another consumer's entry idle this long is abandoned: its reader knows it lost the
        # term (lease) and any create it started has given up (create deadline).
        self._abandoned_ms = int((settings.election.lease_duration + CREATE_DEADLINE) * 1000)
        self._next_stats = 0.0
        self._next_sweep = 0.0
        self._errors_in_a_row = 0

    # -- the loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        log.info(
            "runner %s starting: streams %s, executor %s, lock %s",
            self.settings.identity.pod_name,
            ",".join(self.settings.streams.streams),
            self.executor.name,
            self.settings.lock,
        )
        self._elector_thread = threading.Thread(
            target=self.elector.run, args=(self._elector_stop,), name="elector", daemon=True
        )
        self._elector_thread.start()
        try:
            while not stop.is_set():
                try:
                    self._tick(stop)
                    self._errors_in_a_row = 0
                except (KsrError, redis.RedisError, OSError) as e:
                    self._errors_in_a_row += 1
                    delay = backoff.delay(self._errors_in_a_row + 1, base=0.25, cap=ERROR_BACKOFF_CAP)
                    log.warning("runner loop: %s (retrying in %.1fs)", e, delay)
                    self._record_error(str(e))
                    self.clock.wait(stop, delay)
        finally:
            self._shutdown()

    def _tick(self, stop: threading.Event) -> None:
        status = self.elector.status()  # one reading: what the signals say is what we act on
        self._beat(status)
        term = status.term if status.leading else None
        if self.term is not None and term != self.term:
            self._step_down()
        if term is None:
            self.clock.wait(stop, 0.2)
            return
        if self.term is None:
            term = self._take_over(term)
        self._periodic()
        room = self._room()
        if room <= 0:
            self.clock.wait(self._capacity, 0.5)
            self._capacity.clear()
            return
        # The creates whose wait is over, then what the reader has: our own pending entries
        # (those claimed at takeover among them), then new ones. While new ones are created,
        # free create threads go on reading new entries of the same or a higher priority
        # (for up to REFILL_SECONDS, within the room KSR_MAX_ACTIVE_JOBS leaves).
        waited = {w.member: w for w in self.waiting.due(limit=self.settings.streams.read_count)}
        entries = [w.entry for w in waited.values()]
        refill = None
        if not entries:
            entries = self._read(term)
            if entries and not entries[0].from_pending:  # new entries of one stream
                through = entries[0].stream
                refill = Refill(
                    read=lambda: self.reader.read_more(
                        through=through, keep_going=lambda: self.elector.holds_term(term)
                    ),
                    budget=room - len(entries),
                    until=self.clock.monotonic() + REFILL_SECONDS,
                )
        if entries and not stop.is_set():
            self.dispatcher.process_batch(entries, term, stop=stop, waited=waited, refill=refill)

    def _read(self, term: int) -> list[Any]:
        # Periodic work may have taken seconds: a term that ended meanwhile must not read
        # entries into our pending list, where only the next takeover would find them.
        return self.reader.read_batch(keep_going=lambda: self.elector.holds_term(term))

    def _beat(self, status: ElectorStatus) -> None:
        self.signals.emit(Beat("main", self.clock.time()))
        alive = self._elector_thread is not None and self._elector_thread.is_alive()
        for signal in self._leadership.changes(status, running=alive):
            self.signals.emit(signal)

    # -- leadership --------------------------------------------------------------------
    def _take_over(self, term: int) -> int:
        """DESIGN "Takeover": (a) reclaim pending, (b) reconcile active set and Jobs,
        (c) re-send owed callbacks, then (d) read. Returns the term we lead in."""
        started = self.clock.monotonic()
        log.info("leading in term %d: recovering before reading", term)
        term = self._fence_above_stored(term)
        self.term = self._tenure.term = term
        keep_going = lambda: self.elector.holds_term(term)  # noqa: E731
        try:
            self.reader.ensure_groups()
            if not keep_going():
                raise Stopped(f"term {term} ended during takeover")
            claimed = self.reader.take_over()
            if self.watcher is not None:
                self.watcher.reconcile(keep_going)
            elif self.local is not None:
                self._settle_lost_local_jobs()
            resent = self.callbacks.sweep()  # lapsed owner leases only: a live courier goes on
        except BaseException:
            self.term = None  # recovery runs again at the next tick
            raise
        if self.watcher is not None:
            self.watcher.start(keep_going)
        self.scheduler.start(term, keep_going)
        self._next_reconcile = self.clock.monotonic() + self.settings.kube.polling_interval
        log.info(
            "term %d: reclaimed %d pending entries, re-sent %d callbacks in %.2fs",
            term,
            claimed,
            resent,
            self.clock.monotonic() - started,
        )
        return term

    def _fence_above_stored(self, term: int) -> int:
        """Raise `ksr:term` to `term`, or, when Redis keeps a higher one, move our term above it.

        The stored term is the highest any leader used; a lock created afresh (the Lease
        deleted or renamed, the Redis lock's key deleted, another KSR_LOCK) starts at 0
        again. Only the holder of the lock can move its term (compare-and-set), so a
        deposed leader still ends here with StaleTerm."""
        stored = self.state.advance_term(term)
        if stored == term:
            return term
        moved = self.elector.advance_term(term, at_least=stored + 1)
        if moved is None:  # not leading any more, or the lock did not answer: next tick
            raise StaleTerm(term, stored)
        log.warning(
            "term %d is below the stored term %d (the lock was created afresh: deleted, renamed, "
            "or another KSR_LOCK): leading in term %d",
            term,
            stored,
            moved,
        )
        stored = self.state.advance_term(moved)
        if stored != moved:
            raise StaleTerm(moved, stored)
        return moved

    def _settle_lost_local_jobs(self) -> None:
        assert self.local is not None
        running = self.local.running()
        for mid, record in self.state.active_records().items():
            if record.has_job and record.job_name not in running:
                self.tracker.exception(
                    mid, code="RunnerRestarted", message="the local process was lost when its runner stopped"
                )

    def _step_down(self) -> None:
        log.info("no longer leading (term %s): stopped dispatching", self.term)
        self.scheduler.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.term = None

    # -- periodic work -----------------------------------------------------------------
    def _periodic(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.settings.kube.polling_interval
            # The watcher relists Jobs and Pods in a thread of its own (KubeWatcher.start).
            self._reclaim_abandoned()
            self.reader.rescan_pending()  # entries left unacked get another delivery
            self._slow_tick()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self.callbacks.sweep()
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            if self.settings.streams.stream_maxlen:
                for stream in self.settings.streams.streams:  # never past what the group still owes
                    self.reader.trim(stream, self.settings.streams.stream_maxlen)
            self.signals.emit(StreamsSampled(self.inspection.stats(), paused=self.reader.paused()))
            active = int(self.redis.scard(self.settings.state.active_key))
            self.signals.emit(ActiveJobs(active, cap=self.settings.kube.max_active_jobs))

    def _reclaim_abandoned(self) -> None:
        """Take over other consumers' entries idle past the bound: a deposed leader may
        have read them after our takeover claimed everything (a pause between its term
        check and its read)."""
        term = self.term
        if term is None or not self.elector.holds_term(term):
            return
        self.reader.claim_abandoned(min_idle_ms=self._abandoned_ms)

    def _slow_tick(self) -> None:
        """Tests only (KSR_TEST_SLOW_TICK): periodic work that takes this much longer."""
        seconds = self.settings.test_slow_tick
        if seconds:
            log.warning("KSR_TEST_SLOW_TICK: periodic work takes %gs longer (term %s)", seconds, self.term)
            self.clock.sleep(seconds)

    def _room(self) -> int:
        """How many more Jobs KSR_MAX_ACTIVE_JOBS allows now (no cap: as many as there are)."""
        cap = self.settings.kube.max_active_jobs
        if cap <= 0:
            return sys.maxsize
        return cap - int(self.redis.scard(self.settings.state.active_key))

    def _record_error(self, text: str) -> None:
        self.signals.emit(ErrorRecorded(text))

    # -- shutdown ----------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop reading (the loop has ended), finish in-flight creates, release the Lease,
        then stop watching. The release comes as early as it safely can: the next leader
        takes over at its next retry, while our watches (fenced by the term from the
        moment of the release) wind down."""
        log.info("runner stopping")
        self.dispatcher.close()
        self.scheduler.stop()  # before the release, like the dispatcher
        if self.local is not None:
            self.local.stop()  # before the release: the next leader settles what it finds lost
        self._elector_stop.set()
        if self._elector_thread is not None:
            self._elector_thread.join(self.settings.election.renew_deadline)
        if self.watcher is not None:
            self.watcher.stop()
        self.term = None
        # Released (or about to expire): say so whatever the elector thread last showed.
        leadership = self._leadership.observe(leading=False, leader=self.elector.leader, term=self.elector.term)
        if leadership is not None:
            self.signals.emit(leadership)
        log.info("runner stopped")
