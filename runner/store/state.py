"""The state store: one Redis hash per message id, the dedup and the memory of every Job.

`ksr:msg:<id>` is claimed set-if-absent before a Job is created, records the Job once it
exists, follows it through its states and, once terminal, keeps a TTL so that late
duplicates are still recognised. `ksr:active` holds the ids whose Jobs have not ended.

The fields, their names and their parsing are runner.store.record's: readers get a
`StateRecord`. Keyword fields the callers pass (`webhook`, `pod_name`, ...) are stored as
they are.

Fencing: every mutating method takes the caller's `term` (the Lease's leaseTransitions).
A term lower than the stored `ksr:term` is refused with StaleTerm inside the same Lua
script as the write (runner/store/lua/fence.lua in front of each), so a deposed leader
cannot write after a new one advanced the term, and no separate read of the term is
needed before a write (`fence()` is for side effects outside Redis: the apiserver create).
`term=None` skips the check (tools, tests, the watcher of the current leader may pass it).

Callbacks: a `CallbackMark` is marked sent first-caller-wins, and with it, in the same
script, its detail kept, its place in the owed index and its event on the events stream
(lua/lib_mark.lua). Recording the Job carries the mark of callback 0 (`record_job`), so the
dispatcher's step after the create is one round trip.

States: every write of a record's `state` is one row of runner.lifecycle's table, and the
script refuses any other (IllegalTransition, nothing written): the scripts get that table
as a generated prelude (runner.store.scripts, `states`).

An expired record looks exactly like an absent one: claim() answers NEW. Refusing to run
a replayed message whose record expired unless `--force` is given is runner.pipeline.replay's job.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from election.clock import SYSTEM_CLOCK, Clock
from runner.errors import KsrError
from runner.lifecycle import LIVE_STATES, TERMINAL_STATES, State
from runner.settings import Settings
from runner.store import scripts
from runner.store.errors import redis_errors
from runner.store.events import NewEvent
from runner.store.record import Field, StateRecord
from runner.store.replication import Replication
from runner.store.replies import text

__all__ = [
    "CallbackMark",
    "ClaimResult",
    "ClaimStatus",
    "IllegalTransition",
    "Marked",
    "StaleTerm",
    "StateStore",
]

log = logging.getLogger(__name__)
# The ends a Job makes: moved by mark_callback.lua, with the callback they send (lifecycle table).
JOB_ENDS = frozenset({State.COMPLETED, State.FAILED, State.EXCEPTION})

TERM_KEY = "ksr:term"  # the stored leader term, the fencing token
_PAGE = 500


class StaleTerm(KsrError):
    """A write from a leader whose term is older than the one stored in Redis."""

    def __init__(self, term: int, current: int) -> None:
        self.term = term
        self.current = current
        super().__init__(f"term {term} is stale: the current term is {current}")


class IllegalTransition(KsrError):
    """A write of a record's state that runner.lifecycle's table does not allow from the
    state the record is in; the script wrote nothing."""

    def __init__(self, message_id: str, current: State | None, target: State | None) -> None:
        self.message_id = message_id
        self.current = current
        self.target = target
        super().__init__(
            f"message {message_id}: {current or 'no record'} -> {target or 'no record'} is not a legal transition"
        )


class ClaimStatus(enum.Enum):
    NEW = "NEW"  # first time: go on and create the Job
    DUPLICATE = "DUPLICATE"  # a Job was recorded (or the message ended): ack, count, skip
    RESUME = "RESUME"  # claimed earlier, no Job recorded (a crash): the idempotent create goes on


@dataclass(frozen=True)
class ClaimResult:
    status: ClaimStatus
    record: StateRecord


@dataclass(frozen=True)
class CallbackMark:
    """Callback `status` to mark sent, and what goes with the mark: its `detail` (JSON) kept
    for recovery (StateRecord.callback_detail), `owed_member` added to the sorted set
    `owed_key` ('' : not indexed, the message has no webhook; see runner.callbacks.owed_key),
    and its `event` appended to the events stream. `courier` is the RQ job id proposed to
    deliver the message's callbacks: a first mark takes the owner lease of the message for
    it (`lease_ms` long) when nobody holds it (lua/lib_owner.lua, docs/callbacks.md); ''
    starts none."""

    status: int
    detail: str = "{}"
    owed_key: str = ""
    owed_member: str = ""
    event: NewEvent | None = None
    courier: str = ""
    lease_ms: int = 0
    webhook: str = ""  # the message's, kept by mark_callback in a record that has none ('' : none to keep)


@dataclass(frozen=True)
class Marked:
    first: bool  # this call marked the callback
    courier: str | None = None  # the job id granted the owner lease: the caller enqueues it


class StateStore:
    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        ttl_seconds: int,
        prefix: str = "ksr:msg:",
        active_key: str = "ksr:active",
        term_key: str = TERM_KEY,
        clock: Clock = SYSTEM_CLOCK,
        replication: Replication | None = None,
    ) -> None:
        """`replication` WAITs after the claim, the Job's record and the term (KSR_REDIS_MIN_REPLICAS)."""
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be >= 1")
        self.redis = redis_client
        self.prefix = prefix
        self.active_key = active_key
        self.term_key = term_key
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.replication = replication or Replication()
        self._claim = scripts.load(redis_client, "claim", fenced=True, states=True)
        self._update = scripts.load(redis_client, "update", fenced=True, states=True)
        self._record = scripts.load(
            redis_client, "record_job", fenced=True, states=True, uses=("lib_mark", "lib_owner")
        )
        self._mark = scripts.load(
            redis_client, "mark_callback", fenced=True, states=True, uses=("lib_mark", "lib_owner")
        )
        self._release = scripts.load(redis_client, "release", fenced=True, states=True)
        self._advance = scripts.load(redis_client, "advance_term")

    @classmethod
    def from_settings(cls, redis_client: redis.Redis, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> StateStore:
        """The store with the key names and TTL of `settings` (KSR_STATE_TTL, CACHE_JOB_KEY_PREFIX)."""
        s = settings.state
        return cls(
            redis_client,
            ttl_seconds=s.ttl_seconds,
            prefix=s.key_prefix,
            active_key=s.active_key,
            clock=clock,
            replication=Replication(
                replicas=settings.redis.min_replicas, timeout=settings.redis.wait_timeout, clock=clock
            ),
        )

    def key(self, message_id: str) -> str:
        return self.prefix + message_id

    def _now_ms(self) -> str:
        return str(int(self.clock.time() * 1000))

    def _run(self, script: Any, keys: list[str], args: list[Any], term: int | None, *, durable: str = "") -> list[Any]:
        """Run a fenced script; `durable` names a write that must reach the replicas."""
        keys = [self.term_key, *keys]
        args = ["" if term is None else int(term), *args]
        with redis_errors():
            if durable:
                reply = self.replication.run(self.redis, script, keys=keys, args=args, what=durable)
            else:
                reply = script(keys=keys, args=args)
        if text(reply[0]) == "STALE":
            raise StaleTerm(int(term or 0), int(reply[1]))
        return list(reply)

    @staticmethod
    def _moved(reply: list[Any], message_id: str, target: State | None) -> None:
        """Raise IllegalTransition when the script refused the move."""
        if text(reply[0]) == "ILLEGAL":
            raise IllegalTransition(message_id, State.parse(text(reply[1])), target)

    # -- the message's life --------------------------------------------------------------

    def claim(self, message_id: str, *, stream: str, entry_id: str, term: int | None = None) -> ClaimResult:
        """Claim `message_id` set-if-absent: NEW, DUPLICATE or RESUME (see ClaimStatus).

        A record in a terminal state without a Job (e.g. cancelled before it was read)
        also answers DUPLICATE; use release() to let it run again. A claim without a Job
        whose cancel was requested ends `cancelled` here and answers DUPLICATE: no path
        creates a Job for a cancelled message.
        """
        args = [stream, entry_id, self._now_ms(), self.ttl_seconds]
        reply = self._run(self._claim, [self.key(message_id)], args, term, durable="claim")
        return ClaimResult(ClaimStatus(text(reply[0])), StateRecord.from_reply(reply[1]))

    def record_job(
        self,
        message_id: str,
        *,
        job_name: str,
        namespace: str,
        job_uid: str,
        term: int | None = None,
        callback: CallbackMark | None = None,
        **fields: Any,
    ) -> Marked:
        """The Job exists: record it (state created), add the id to the active set and mark
        `callback` (see mark_callback), atomically. IllegalTransition when the record cannot
        become `created` (it has its Job already, or has ended).

        Extra keyword fields (e.g. `webhook`, `service`) are stored as they are.
        """
        now = self._now_ms()
        record = {
            Field.JOB_NAME: job_name,
            Field.NAMESPACE: namespace,
            Field.JOB_UID: job_uid,
            Field.CREATED_AT: now,
            **fields,
        }
        keys = [self.key(message_id), self.active_key, *self._mark_keys(message_id, callback)]
        args = [
            message_id,
            *_courier_args(callback),
            *self._mark_args(callback, now),
            *_flat(record),
        ]
        reply = self._run(self._record, keys, args, term, durable="the Job's record")
        self._moved(reply, message_id, State.CREATED)
        return _marked(reply)

    def set_state(self, message_id: str, state: State, *, term: int | None = None, **fields: Any) -> None:
        """A non-terminal transition (e.g. running, with pod fields). No TTL is set."""
        if state not in LIVE_STATES:
            raise ValueError(f"{state} is not a live record state ({', '.join(sorted(LIVE_STATES))}): use finish()")
        self._write(message_id, state, term, {Field.UPDATED_AT: self._now_ms(), **fields})

    def finish(self, message_id: str, state: State, *, term: int | None = None, **fields: Any) -> None:
        """A terminal transition: leave the active set, keep the record for ttl_seconds. A
        Job's own end (completed, failed, exception) is the tracker's, with its callback
        (finish_with_callback); here it moves without one, as the lifecycle table's script
        for that move does it."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not terminal: one of {', '.join(sorted(TERMINAL_STATES))}")
        now = self._now_ms()
        if state in JOB_ENDS:
            self._mark_and_move(message_id, None, State(state), term, fields=fields)
            return
        self._write(message_id, state, term, {Field.UPDATED_AT: now, Field.FINISHED_AT: now, **fields})

    def release(self, message_id: str, *, term: int | None = None) -> bool:
        """Forget an ended message entirely (the next claim is NEW): for replays. True when
        there was a record to forget; IllegalTransition for a live one (claimed, created,
        running)."""
        reply = self._run(self._release, [self.key(message_id), self.active_key], [message_id], term)
        self._moved(reply, message_id, None)
        return int(reply[1]) == 1

    def _write(self, message_id: str, state: State, term: int | None, fields: dict[str, Any]) -> None:
        """Move the record to `state` with `fields` (update.lua; IllegalTransition if refused)."""
        reply = self._run(
            self._update,
            [self.key(message_id), self.active_key],
            [message_id, state, self.ttl_seconds, *_flat(fields)],
            term,
        )
        self._moved(reply, message_id, state)

    def mark_callback(self, message_id: str, callback: CallbackMark, *, term: int | None = None) -> Marked:
        """Mark `callback` sent; `first` is true for the first caller only, and `courier` the
        job id it must enqueue when the mark took the owner lease (CallbackMark.courier).
        With the mark, atomically, its detail is kept, it joins the owed index and its event
        is appended (see CallbackMark).

        A missing record (expired, or Redis lost it) answers first, with no courier: the
        owner lease lives in the record, so nothing can deliver the callback; its event is
        still appended to the events stream.
        """
        return self._mark_and_move(message_id, callback, None, term)

    def finish_with_callback(
        self, message_id: str, state: State, callback: CallbackMark, *, term: int | None = None
    ) -> Marked:
        """mark_callback and finish(state) in one step: the final event and the terminal record
        are written together, so whoever reads the event finds the record ended. The move is
        checked first: IllegalTransition (and no mark, no event) for a record that cannot end
        there, e.g. one a cancel ended meanwhile; IllegalTransition for a missing record too,
        whose event is still appended (as mark_callback's)."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state} is not terminal: one of {', '.join(sorted(TERMINAL_STATES))}")
        return self._mark_and_move(message_id, callback, state, term)

    def start_with_callback(
        self, message_id: str, callback: CallbackMark, *, term: int | None = None, **fields: Any
    ) -> Marked:
        """mark_callback (callback 1) and the move to running with `fields` (the pod's), in
        one step: whoever reads the event finds the record running. Checked first, like
        finish_with_callback: IllegalTransition, and no mark, for a record no longer created."""
        return self._mark_and_move(message_id, callback, State.RUNNING, term, fields=fields)

    def _mark_and_move(
        self,
        message_id: str,
        callback: CallbackMark | None,
        target: State | None,
        term: int | None,
        *,
        fields: dict[str, Any] | None = None,
    ) -> Marked:
        now = self._now_ms()
        keys = self._mark_keys(message_id, callback)
        move: list[Any] = [""]
        if target in LIVE_STATES:
            move = [target, message_id, "", *_flat({Field.UPDATED_AT: now, **(fields or {})})]
        elif target is not None:
            written = {Field.UPDATED_AT: now, Field.FINISHED_AT: now, **(fields or {})}
            move = [target, message_id, self.ttl_seconds, *_flat(written)]
        hook = callback.webhook if callback else ""
        args = [*_courier_args(callback), *self._mark_args(callback, now), hook, *move]
        reply = self._run(self._mark, [self.key(message_id), *keys, self.active_key], args, term)
        self._moved(reply, message_id, target)
        if text(reply[0]) == "MISSING":
            if target is not None or callback is None:  # a move never makes a record
                raise IllegalTransition(message_id, None, target)
            log.warning(
                "no state record for %s when marking callback %s: nothing owns it, not sent (the event is appended)",
                message_id,
                callback.status,
            )
            return Marked(first=True)
        return _marked(reply)

    def mark_callback_sent(
        self,
        message_id: str,
        status: int,
        *,
        term: int | None = None,
        detail: str = "{}",
        owed_key: str = "",
        owed_member: str = "",
    ) -> bool:
        """mark_callback without an event: True for the first caller only."""
        callback = CallbackMark(status=status, detail=detail, owed_key=owed_key, owed_member=owed_member)
        return self.mark_callback(message_id, callback, term=term).first

    def _mark_keys(self, message_id: str, callback: CallbackMark | None) -> list[str]:
        """The owed index and the events stream of lib_mark.lua; the record's key where unused."""
        placeholder = self.key(message_id)
        if callback is None:
            return [placeholder, placeholder]
        return [callback.owed_key or placeholder, callback.event.stream if callback.event else placeholder]

    def _mark_args(self, callback: CallbackMark | None, now_ms: str) -> list[Any]:
        """The mark's ARGV (lua/lib_mark.lua); a mark field of '' when there is none."""
        if callback is None:
            return ["", "", "", "", "", "", "", 0]
        event = callback.event
        items = [x for k, v in event.fields.items() for x in (k, v)] if event else []
        return [
            Field.marked(callback.status),
            now_ms,
            Field.detail(callback.status),
            callback.detail,
            callback.owed_member if callback.owed_key else "",
            f"{self.clock.time():.3f}",
            event.maxlen if event else 0,
            len(items),
            *items,
        ]

    # -- reading ---------------------------------------------------------------------------

    def get(self, message_id: str) -> StateRecord | None:
        with redis_errors():
            record = StateRecord.from_reply(self.redis.hgetall(self.key(message_id)))
        return record or None

    def ttl(self, message_id: str) -> int:
        """Seconds left on the record: -1 without expiry, -2 when absent."""
        with redis_errors():
            return int(self.redis.ttl(self.key(message_id)))

    def active_ids(self) -> set[str]:
        with redis_errors():
            return {text(m) for m in self.redis.smembers(self.active_key)}

    def active_records(self) -> dict[str, StateRecord]:
        """Every active id with its record (an empty one when the record itself is gone)."""
        return self.records(self.active_ids())

    def records(self, message_ids: Iterable[str]) -> dict[str, StateRecord]:
        """Each id with its record (an empty one when there is none), a pipeline a page."""
        ids = sorted(message_ids)
        out: dict[str, StateRecord] = {}
        with redis_errors():
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start : start + _PAGE]
                pipe = self.redis.pipeline(transaction=False)
                for message_id in chunk:
                    pipe.hgetall(self.key(message_id))
                out.update(zip(chunk, (StateRecord.from_reply(r) for r in pipe.execute())))
        return out

    # -- fencing ---------------------------------------------------------------------------

    def current_term(self) -> int | None:
        with redis_errors():
            value = self.redis.get(self.term_key)
        return None if value is None else int(value)

    def advance_term(self, term: int) -> int:
        """Raise the stored term to `term` (never lowers it); returns the stored term."""
        with redis_errors():
            return int(
                self.replication.run(self.redis, self._advance, keys=[self.term_key], args=[int(term)], what="the term")
            )

    def fence(self, term: int) -> None:
        """Raise StaleTerm when `term` is older than the stored one (a read-only check)."""
        current = self.current_term()
        if current is not None and term < current:
            raise StaleTerm(term, current)


def _courier_args(callback: CallbackMark | None) -> list[Any]:
    """The proposed courier and its lease (lua/lib_owner.lua `take`); '' proposes none."""
    if callback is None or not callback.courier:
        return ["", 0]
    return [callback.courier, int(callback.lease_ms)]


def _marked(reply: list[Any]) -> Marked:
    return Marked(first=int(reply[1]) == 1, courier=text(reply[2]) or None)


def _flat(fields: dict[str, Any]) -> list[Any]:
    """Field/value pairs for HSET, leaving out None."""
    return [x for k, v in fields.items() if v is not None for x in (k, _field(v))]


def _field(value: Any) -> Any:
    if isinstance(value, bool):
        return "1" if value else "0"
    return value
