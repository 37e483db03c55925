"""One stream entry to one Job: validate, claim, create, record, callback 0, ack.

The order is what makes a crash at any point harmless (DESIGN, data flow 3-6): the
claim is set-if-absent, the Job name is deterministic and a 409 for our own message is
adopted, and the entry is acked last. The leader's term is checked before every side
effect; a lost term leaves the entry pending for the next leader. On the elector
(`holds_term`, no I/O) before each step; in Redis (`ksr:term`) inside each fenced script
(the claim, the record), and by one read of its own before a dead letter, whose script is
not fenced. The apiserver create follows the fenced claim at once. So a dispatched message
costs three Redis round trips without a webhook (and a share of the batch's read), six with
one (docs/pipeline.md).

Whatever an entry holds, its processing ends in one of: dispatched, duplicate, dead-lettered
(with a reason), waiting (a create refused for now, held in runner.store.waiting until
KSR_CREATE_HORIZON), or left pending for a retry. Anything unexpected is logged with its
traceback and leaves the entry pending; the group's delivery counter ends it as `poison`.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner import backoff
from runner.errors import InvalidMessage, KsrError, KubeApiError, PolicyRefused
from runner.jobs.executors import Executor
from runner.jobs.kube import JobRef, Stopped
from runner.jobs.tracker import Tracker
from runner.lifecycle import CallbackStatus, DispatchOutcome, State
from runner.logs import log_context
from runner.message import Message, parse_entry, peek_message_id
from runner.pipeline.delay import DelayGate
from runner.pipeline.policy import check_policy
from runner.settings import Settings
from runner.signals import Dispatched, MessageHandled, Signals
from runner.store.deadletter import DeadRecord, Leftovers, dead_letter, is_poison
from runner.store.state import ClaimStatus, StaleTerm, StateStore
from runner.store.stream_reader import StreamReader
from runner.store.streams import Entry
from runner.store.waiting import Waiting, WaitingCreates

log = logging.getLogger(__name__)

# An apiserver answer that retrying the same message cannot change: dead-letter it. A 403
# is not among them: a ResourceQuota refusal passes (KubeApiError.temporary: it waits).
_FINAL_STATUSES = {400, 404, 409, 422}
CREATE_DEADLINE = 10.0  # seconds one create retries 429/5xx in line before the entry waits
WAIT_BACKOFF_BASE = 1.0  # seconds before the second try of a refused create; doubles per try
REFUSED_CODE = "CreateRefused"  # errorCode of the 99 sent when KSR_CREATE_HORIZON passes


@dataclass
class Refill:
    """Where free create threads take more entries from while a batch is in flight: `read`
    (the streams' next entries, without blocking), for `budget` entries at most (the room
    KSR_MAX_ACTIVE_JOBS leaves) and until `until` (monotonic), when the loop's own work
    (heartbeat, relist, sweep, backpressure) is due again."""

    read: Callable[[], list[Entry]]
    budget: int
    until: float
    clock: Clock = SYSTEM_CLOCK

    @property
    def spent(self) -> bool:
        return self.budget <= 0 or self.clock.monotonic() >= self.until

    def next(self) -> list[Entry]:
        if self.spent:
            return []
        batch = self.read()
        self.budget -= len(batch)
        return batch


class Dispatcher:
    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        reader: StreamReader,
        state: StateStore,
        executor: Executor,
        tracker: Tracker,
        settings: Settings,
        holds_term: Callable[[int], bool],
        signals: Signals,
        delays: DelayGate | None = None,
        waiting: WaitingCreates,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        """`delays` holds messages carrying runAt / delaySeconds until they are due."""
        self.redis = redis_client
        self.delays = delays
        self.reader = reader
        self.state = state
        self.executor = executor
        self.tracker = tracker
        self.settings = settings
        self.waiting = waiting
        self._holds_term = holds_term
        self.signals = signals
        self.clock = clock
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=settings.kube.worker_pool_size, thread_name_prefix="create")
        self._stop = threading.Event()  # set by the caller's stop: in-flight retries give up

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- batches -----------------------------------------------------------------------
    def process_batch(
        self,
        entries: list[Entry],
        term: int,
        *,
        stop: threading.Event | None = None,
        waited: Mapping[str, Waiting] | None = None,
        refill: Refill | None = None,
    ) -> dict[DispatchOutcome, int]:
        """Process `entries` in parallel (QUEUE_WORKER_POOL_SIZE); entries carrying the same
        message id go one after the other, so the second one sees the first one's record.
        `waited` holds, by WaitingCreates.member, the entries that come back from the waiting creates.
        With `refill`, a create thread that frees up takes the next entries from it while the
        others are still busy, so the pool does not wait for the slowest create of each batch.
        Returns the outcome counts; returns only when every entry is done (in-flight creates
        finish before a shutdown or a step-down goes on)."""
        self._stop = stop or threading.Event()
        waited = waited or {}
        finished: queue.SimpleQueue[str] = queue.SimpleQueue()
        running: dict[str, Future[list[DispatchOutcome]]] = {}  # by message key: one group of it at a time
        later: dict[str, list[Entry]] = defaultdict(list)  # entries whose message is in flight

        def submit(key: str, group: list[Entry]) -> None:
            def done(_: Future[list[DispatchOutcome]]) -> None:
                finished.put(key)

            running[key] = self._pool.submit(self._process_group, group, term, waited)
            running[key].add_done_callback(done)

        def add(batch: list[Entry]) -> None:
            groups: dict[str, list[Entry]] = defaultdict(list)
            for entry in batch:
                groups[_message_key(entry, self.settings.streams.max_message_bytes)].append(entry)
            for key, group in groups.items():
                if key in running:
                    later[key].extend(group)
                else:
                    submit(key, group)

        add(entries)
        outcomes: dict[DispatchOutcome, int] = defaultdict(int)
        while running:
            key = finished.get()
            for outcome in running.pop(key).result():
                outcomes[outcome] += 1
            if key in later:
                submit(key, later.pop(key))
            if refill is not None and len(running) < self.settings.kube.worker_pool_size:
                # Asked again at each create that ends, also after an empty read: an entry
                # that arrives meanwhile then waits for one create, not for all in flight.
                more = None if self._stop.is_set() or refill.spent else self._refill(refill)
                if more is None:
                    refill = None  # finish those in flight; the loop's next tick reads on
                else:
                    add(more)
        return dict(outcomes)

    @staticmethod
    def _refill(refill: Refill) -> list[Entry] | None:
        try:
            return refill.next()
        except Exception as e:  # Redis away, say: finish what is in flight; the loop's next read sees it
            log.warning("reading more entries while creating failed: %s", e)
            return None

    def _process_group(self, group: list[Entry], term: int, waited: Mapping[str, Waiting]) -> list[DispatchOutcome]:
        return [self.process(entry, term, waited=waited.get(self.waiting.member(entry))) for entry in group]

    # -- one entry ---------------------------------------------------------------------
    def process(self, entry: Entry, term: int, *, waited: Waiting | None = None) -> DispatchOutcome:
        with log_context(entry_id=entry.entry_id, stream=entry.stream):
            try:
                outcome = self._process(entry, term, waited)
                if waited is not None and outcome not in (DispatchOutcome.WAITING, DispatchOutcome.RETRIED):
                    self.waiting.forget(entry)  # done with, whichever way (a dead letter did it already)
            except (Stopped, StaleTerm) as e:
                log.info("entry %s left pending: %s", entry.entry_id, e)
                outcome = DispatchOutcome.RETRIED
            except KsrError as e:  # Redis or the apiserver away: the entry stays pending
                log.warning("entry %s left pending: %s", entry.entry_id, e)
                outcome = DispatchOutcome.RETRIED
                if waited is not None:  # no delivery counter out there: back off, the horizon ends it
                    self._rewait(entry, waited, term)
            except Exception:  # a bug, or bytes nobody foresaw: never the loop's end
                log.exception(
                    "entry %s of %s raised; left pending for the delivery counter", entry.entry_id, entry.stream
                )
                outcome = DispatchOutcome.ERROR
                if waited is not None:
                    self._rewait(entry, waited, term)
            self.signals.emit(MessageHandled(outcome))
            return outcome

    def _process(self, entry: Entry, term: int, waited: Waiting | None) -> DispatchOutcome:
        self._leading(term)
        if is_poison(entry.deliveries, self.settings.streams.max_deliveries) and not self._dispatched(entry):
            return self._dead(
                entry,
                "poison",
                f"delivered {entry.deliveries} times without being done "
                f"(KSR_MAX_DELIVERIES={self.settings.streams.max_deliveries})",
                term=term,
            )
        try:
            message = parse_entry(entry.fields, max_bytes=self.settings.streams.max_message_bytes)
            check_policy(message, self.settings)
            held = self.delays is not None and self.delays.hold(entry, message, term)  # a fenced script
        except PolicyRefused as e:
            return self._dead(entry, "policy", str(e), term=term)
        except InvalidMessage as e:
            return self._dead(entry, "invalid", str(e), term=term)
        if held:
            self.reader.ack(entry)
            return DispatchOutcome.SCHEDULED
        with log_context(message_id=message.id):
            return self._dispatch(entry, message, term, waited)

    def _dispatched(self, entry: Entry) -> bool:
        """True when the entry's message already has its Job recorded: then the deliveries
        were hand-overs (a leader killed before the ack, again and again), not an entry that
        breaks its processing, and a dead letter would orphan a running Job. The duplicate
        path acks it instead."""
        message_id = peek_message_id(entry.fields, max_bytes=self.settings.streams.max_message_bytes)
        record = self.state.get(message_id) if message_id else None
        if record is None or not record.has_job:
            return False
        log.warning(
            "entry %s was delivered %d times, but message %s has its Job (%s): finished, not poison",
            entry.entry_id,
            entry.deliveries,
            message_id,
            record.job_name,
        )
        return True

    def _dispatch(self, entry: Entry, message: Message, term: int, waited: Waiting | None) -> DispatchOutcome:
        # Fenced in its script, like every state-store write.
        claim = self.state.claim(message.id, stream=entry.stream, entry_id=entry.entry_id, term=term)
        if claim.status is ClaimStatus.DUPLICATE and claim.record.state is State.CANCELLED:
            # Cancelled before it was read (runner.pipeline.cancels), or after a claim that
            # made no Job (the claim ended it): no Job, and the 99 is sent now that the
            # webhook is known.
            stage = claim.record.get("cancel_stage") or "pending"
            self.tracker.cancelled(message.id, stage=stage, webhook=message.webhook_url)
            self.reader.ack(entry)
            return DispatchOutcome.CANCELLED
        if claim.status is ClaimStatus.DUPLICATE:
            record = claim.record
            if record.has_job and not record.is_terminal:
                # Recorded, then a failure before callback 0 (or the local launch): finish the
                # step now; both are no-ops when they had happened.
                self.tracker.created(
                    message.id, job_name=record.job_name, job_uid=record.job_uid, webhook=message.webhook_url
                )
                if not record.get("cancel_requested"):  # else never started: the leader's cancel ends it
                    self.executor.launched(
                        JobRef(name=record.job_name, namespace=record.namespace, uid=record.job_uid, adopted=True)
                    )
            log.info("message %s is a duplicate (job %s): acked", message.id, record.job_name or "-")
            self.reader.ack(entry)
            return DispatchOutcome.DUPLICATE
        if waited is not None and CallbackStatus.EXCEPTION in claim.record.callbacks():
            # The horizon passed and 99 went out, then the dead letter did not happen (a
            # crash): finish giving up, never create after telling the producer 99.
            return self._give_up(entry, message, waited.error, term, tell=False)
        self._crash_point("after_claim")

        # The create is outside Redis: no script can fence it. The claim just before it was
        # (its script refuses a lower term), so no read of ksr:term of its own: a deposed
        # leader's late create is adopted by its successor (the name is the message's).
        try:
            ref = self.executor.create(
                message,
                stream=entry.stream,
                entry_id=entry.entry_id,
                keep_going=lambda: self._holds_term(term) and not self._stop.is_set(),
                retry_for=CREATE_DEADLINE,
            )
        except KubeApiError as e:
            words = f"kubernetes answered {e.status or 'nothing'} {e.reason}: {e.message}"
            if e.status in _FINAL_STATUSES:  # no Job: the dead letter releases the claim
                return self._dead(entry, "api_rejected", words, term=term, message_id=message.id)
            if e.temporary:
                return self._wait(entry, message, words, term, waited, retry_after=e.retry_after)
            raise
        self._crash_point("after_create")

        with log_context(job_name=ref.name):
            self._leading(term)
            now = self.clock.time()
            # The record, callback 0's mark and its event: one fenced script. A crash before
            # the send leaves callback 0 owed, and the owed sweep enqueues it.
            created = self.tracker.record_created(
                message.id,
                job_name=ref.name,
                namespace=ref.namespace,
                job_uid=ref.uid,
                term=term,
                webhook=message.webhook_url,
                service=message.service,
                executor=self.executor.name,
            )
            self._crash_point("after_record")
            self.tracker.send(created)
            self.executor.launched(ref)
            self._crash_point("after_callback")
            self._crash_point("before_ack")
            self.reader.ack(entry)
            self.signals.emit(
                Dispatched(latency=now - _entry_time(entry.entry_id), service=message.service, namespace=ref.namespace)
            )
            log.info(
                "job %s/%s %s for message %s",
                ref.namespace,
                ref.name,
                "recorded as gone (it existed; the reconcile reports 99)"
                if ref.gone
                else "adopted"
                if ref.adopted
                else "created",
                message.id,
            )
            return DispatchOutcome.DISPATCHED

    # -- creates that wait ---------------------------------------------------------------
    def _wait(
        self,
        entry: Entry,
        message: Message,
        words: str,
        term: int,
        waited: Waiting | None,
        *,
        retry_after: float | None,
    ) -> DispatchOutcome:
        """A create refused for now: wait with backoff, out of the stream, up to the horizon."""
        horizon = self.settings.kube.create_horizon
        now = self.clock.time()
        since = waited.since if waited is not None else now
        if now - since >= horizon:
            return self._give_up(entry, message, f"{words} (still refused after {horizon:g}s)", term, tell=True)
        cap = self.settings.kube.create_backoff_cap
        tries = (waited.tries if waited is not None else 0) + 1
        floor = None if retry_after is None else min(retry_after, cap)
        delay = backoff.delay(tries, base=WAIT_BACKOFF_BASE, cap=cap, jitter="equal", rng=self._rng, floor=floor)
        due = min(now + delay, since + horizon)  # the last try falls on the horizon
        self._fence(term)
        self.waiting.defer(entry, message_id=message.id, due=due, error=words, term=term)
        log.info("create for message %s refused for now, next try in %.1fs: %s", message.id, due - now, words)
        return DispatchOutcome.WAITING

    def _rewait(self, entry: Entry, waited: Waiting, term: int) -> None:
        """A waiting entry whose retry raised: try again one backoff cap later, not at every
        tick (it has no delivery counter to end it; the horizon does)."""
        try:
            self._fence(term)
            now, horizon = self.clock.time(), self.settings.kube.create_horizon
            if now - waited.since >= horizon:
                error = (
                    f"kept failing while waiting past KSR_CREATE_HORIZON={horizon:g}s (last refusal: {waited.error})"
                )
                self._dead(entry, "poison", error, term=term)
                return
            due = min(now + self.settings.kube.create_backoff_cap, waited.since + horizon)
            message_id = peek_message_id(entry.fields, max_bytes=self.settings.streams.max_message_bytes) or ""
            self.waiting.defer(entry, message_id=message_id, due=due, error=waited.error, term=term)
        except Exception:
            log.exception("waiting entry %s could not be rescheduled; it is retried at the next tick", entry.entry_id)

    def _give_up(self, entry: Entry, message: Message, words: str, term: int, *, tell: bool) -> DispatchOutcome:
        """The horizon passed: 99 to the producer, then the dead letter, which releases the
        claim, so a replay starts afresh. In this order: a crash in between re-sends 99
        (receivers deduplicate by webhook-id), it never loses it."""
        self._fence(term)
        if tell:
            self.tracker.refused(message.id, webhook=message.webhook_url, code=REFUSED_CODE, message=words)
        return self._dead(entry, "create_refused", words, term=term, message_id=message.id)

    # -- helpers -----------------------------------------------------------------------
    def _dead(
        self, entry: Entry, reason: str, error: str, *, term: int, message_id: str | None = None
    ) -> DispatchOutcome:
        """Dead-letter `entry`, ending its message in the same step (whichever path got
        here): its record `dead` unless it records a Job, its event, and its place among the
        waiting creates cleared."""
        self._fence(term)  # the dead letter's script is not fenced: a deposed leader must not write it
        if message_id is None:
            message_id = peek_message_id(entry.fields, max_bytes=self.settings.streams.max_message_bytes)
        member = self.waiting.member(entry)
        dead_letter(
            self.redis,
            entry,
            group=self.settings.streams.group,
            reason=reason,
            error=error,
            deliveries=entry.deliveries,
            leftovers=Leftovers(
                message_id=message_id or "",
                record_key=self.state.key(message_id or ""),
                active_key=self.state.active_key,
                waiting_index=self.waiting.index,
                waiting_member=member,
                waiting_key=self.waiting.key(member),
            ),
            record=DeadRecord(
                ttl_seconds=self.state.ttl_seconds,
                events_stream=self.settings.streams.events_stream,
                events_maxlen=self.settings.streams.events_maxlen,
            ),
        )
        log.warning("entry %s dead-lettered (%s): %s", entry.entry_id, reason, error)
        return DispatchOutcome.INVALID if reason in ("invalid", "policy") else DispatchOutcome.DEAD_LETTERED

    def _leading(self, term: int) -> None:
        """Stopped unless the elector still holds `term` (no I/O: the Lease as last renewed)."""
        if not self._holds_term(term):
            raise Stopped(f"no longer leading in term {term}")

    def _fence(self, term: int) -> None:
        """`_leading`, and the term stored in Redis (StaleTerm once a newer leader raised it):
        before a side effect that no fenced script covers."""
        self._leading(term)
        self.state.fence(term)

    def _crash_point(self, step: str) -> None:
        """Tests only (KSR_TEST_CRASH_AT): die hard at `step`, once per Redis database."""
        if self.settings.test_crash_at != step:
            return
        if self.redis.set(f"ksr:test:crashed:{step}", os.getpid(), nx=True):
            log.error("KSR_TEST_CRASH_AT=%s: exiting hard", step)
            os._exit(70)


def _message_key(entry: Entry, max_bytes: int) -> str:
    """The message id if the payload has one, else the entry id."""
    return peek_message_id(entry.fields, max_bytes=max_bytes) or f"entry:{entry.stream}:{entry.entry_id}"


def _entry_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0
