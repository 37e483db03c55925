"""The life of one message: its states, the one table of legal transitions and who takes
each, and the other closed vocabularies of that life (dispatch outcomes, callback statuses).

A shared noun: store/, jobs/, pipeline/ and callbacks/ import it; it imports nothing from
runner. The Lua scripts that write a record's `state` get their part of `TRANSITIONS` as a
generated prelude (runner.store.scripts, `lua_prelude`), so Python and Lua cannot disagree,
and they refuse a move the table does not give them. docs/lifecycle.md has the table as
prose; tests/integration/test_lifecycle.py walks it row by row against redis-server.

Two states are places, not record states: SCHEDULED (a delayed message held in
`<stream>:scheduled`: it has no record yet, schedule.lua refuses to hold an id that has
one) and WAITING (a create refused for now, held in `ksr:waiting`: the record stays
`claimed`). `State.recorded` says what the record's `state` field holds meanwhile.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "LIVE_STATES",
    "RECORD_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Actor",
    "CallbackStatus",
    "DispatchOutcome",
    "State",
    "Transition",
    "is_legal",
    "lua_prelude",
    "markdown_table",
    "moves_of",
]


class State(enum.StrEnum):
    """Where a message is. The values are the strings of the record's `state` field."""

    SCHEDULED = "scheduled"  # a place: held until due, no record
    WAITING = "waiting"  # a place: its create refused for now; the record says claimed
    CLAIMED = "claimed"
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXCEPTION = "exception"
    CANCELLED = "cancelled"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def recorded(self) -> State | None:
        """What the record's `state` holds while the message is here (None: no record)."""
        if self is State.SCHEDULED:
            return None
        if self is State.WAITING:
            return State.CLAIMED
        return self

    @classmethod
    def parse(cls, value: str | None) -> State | None:
        """The state a record's field names; None when absent or not one of ours."""
        try:
            return cls(value) if value else None
        except ValueError:
            return None


TERMINAL_STATES = frozenset({State.COMPLETED, State.FAILED, State.EXCEPTION, State.CANCELLED, State.DEAD})
RECORD_STATES = frozenset(s for s in State if s.recorded is s)
LIVE_STATES = RECORD_STATES - TERMINAL_STATES  # claimed, created, running


class Actor(enum.StrEnum):
    """Who takes a transition."""

    DISPATCHER = "dispatcher"  # the leader's dispatcher (runner.pipeline.dispatcher)
    SCHEDULER = "scheduler"  # the leader's mover of due delayed messages (runner.pipeline.scheduler)
    TRACKER = "tracker"  # the leader's tracker, told by the watcher or the local executor
    CANCEL = "cancel"  # `ksr cancel` / runner.client: any process, not fenced
    LEADER_CANCEL = "leader-cancel"  # the leader carrying out a cancel (runner.pipeline.cancels)
    DEAD_LETTER = "dead-letter"  # the leader moving an entry to `<stream>:dead`
    OPERATOR = "operator"  # `ksr dead replay` releasing a terminal record without a Job
    EXPIRY = "expiry"  # Redis itself: KSR_STATE_TTL after the end


@dataclass(frozen=True)
class Transition:
    """`source` -> `target` (None: no record), taken by `actor` through `script`
    (runner/store/lua/<script>.lua; None: no script, Redis's TTL)."""

    source: State | None
    target: State | None
    actor: Actor
    script: str | None
    why: str


_S, _A = State, Actor


def _rows(
    sources: Iterable[State | None], target: State | None, actor: Actor, script: str | None, why: str
) -> list[Transition]:
    return [Transition(s, target, actor, script, why) for s in sources]


# The one table. Every move of a message is a row; nothing else writes `state`.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(None, _S.SCHEDULED, _A.DISPATCHER, "schedule", "read with runAt / delaySeconds ahead: held"),
    Transition(_S.SCHEDULED, None, _A.SCHEDULER, "move_due", "due: back into its stream, read again"),
    Transition(_S.SCHEDULED, _S.CANCELLED, _A.CANCEL, "cancel", "cancelled while held: the leader sends the 99"),
    Transition(None, _S.CLAIMED, _A.DISPATCHER, "claim", "read: claimed set-if-absent before the create"),
    Transition(_S.DEAD, _S.CLAIMED, _A.DISPATCHER, "claim", "a dead letter's id read again (replay, resend): afresh"),
    Transition(_S.DEAD, _S.SCHEDULED, _A.DISPATCHER, "schedule", "a dead letter's id sent again with a delay"),
    # A held copy is not a record: another entry of the same id, read while a copy is held,
    # goes on as if from no record (the copy is a duplicate when it comes due).
    Transition(_S.SCHEDULED, _S.CLAIMED, _A.DISPATCHER, "claim", "another entry of the id, read while held"),
    Transition(_S.SCHEDULED, _S.CREATED, _A.DISPATCHER, "record_job", "another entry of the id got its Job"),
    Transition(_S.SCHEDULED, _S.DEAD, _A.DEAD_LETTER, "dead_letter", "another entry of the id is dead-lettered"),
    Transition(None, _S.CANCELLED, _A.CANCEL, "cancel", "cancelled before it was read: acked without a Job"),
    Transition(_S.CLAIMED, _S.WAITING, _A.DISPATCHER, "defer_create", "create refused for now: held, acked"),
    Transition(_S.WAITING, _S.CLAIMED, _A.DISPATCHER, None, "next try due: taken from the waiting set"),
    Transition(_S.CLAIMED, _S.CREATED, _A.DISPATCHER, "record_job", "the Job exists: recorded, callback 0"),
    Transition(_S.WAITING, _S.CREATED, _A.DISPATCHER, "record_job", "a later try created the Job"),
    Transition(None, _S.CREATED, _A.DISPATCHER, "record_job", "the claim vanished during the create"),
    Transition(None, _S.CREATED, _A.TRACKER, "record_job", "a Job of ours the store lost: recorded again"),
    # With the callback's mark and event, in one step: no event is read before its record.
    Transition(_S.CREATED, _S.RUNNING, _A.TRACKER, "mark_callback", "its pod started: callback 1"),
    Transition(_S.CREATED, _S.RUNNING, _A.TRACKER, "update", "its pod started, callback 1 marked before the move"),
    *_rows((_S.CREATED, _S.RUNNING), _S.COMPLETED, _A.TRACKER, "mark_callback", "the Job succeeded: callback 2"),
    *_rows((_S.CREATED, _S.RUNNING), _S.FAILED, _A.TRACKER, "mark_callback", "the Job failed: callback 3"),
    *_rows(
        (_S.CREATED, _S.RUNNING),
        _S.EXCEPTION,
        _A.TRACKER,
        "mark_callback",
        "no pod in time, image pull error, Job deleted from outside: callback 99",
    ),
    *_rows((_S.CREATED, _S.RUNNING), _S.CANCELLED, _A.LEADER_CANCEL, "update", "cancel carried out: 99, Job deleted"),
    *_rows((_S.CLAIMED, _S.WAITING), _S.CANCELLED, _A.LEADER_CANCEL, "update", "cancelled before its Job: never made"),
    *_rows((_S.CLAIMED, _S.WAITING), _S.CANCELLED, _A.DISPATCHER, "claim", "cancel requested, read at the claim"),
    *_rows((None, _S.CLAIMED, _S.WAITING), _S.DEAD, _A.DEAD_LETTER, "dead_letter", "can never become a Job"),
    *_rows(sorted(TERMINAL_STATES), None, _A.OPERATOR, "release", "replayed: forgotten, the next claim is new"),
    *_rows(sorted(TERMINAL_STATES), None, _A.EXPIRY, None, "KSR_STATE_TTL after the end"),
)


def is_legal(source: State | None, target: State | None, *, actor: Actor | None = None) -> bool:
    """True when the table has `source` -> `target` (for `actor`, when given)."""
    return any(t.source is source and t.target is target and (actor is None or t.actor is actor) for t in TRANSITIONS)


def moves_of(script: str) -> frozenset[tuple[State | None, State | None]]:
    """The moves of the record's `state` field that `script` may make: its rows, as the
    record sees them (a place is the state it keeps in the record), leaving out the rows
    that do not change the record."""
    moves = set()
    for t in TRANSITIONS:
        if t.script != script:
            continue
        source = t.source.recorded if t.source else None
        target = t.target.recorded if t.target else None
        if source is not target:
            moves.add((source, target))
    return frozenset(moves)


def lua_prelude(script: str) -> str:
    """Lua defining STATE (name -> value), is_terminal(state) and legal(from, to) for
    `script`'s moves (from/to: a state string, or false/nil/'' for no record)."""

    def lua(state: State | None) -> str:
        return f"'{state.value}'" if state else "''"

    by_source: dict[str, list[str]] = {}
    for source, target in sorted(moves_of(script), key=lambda m: (lua(m[0]), lua(m[1]))):
        by_source.setdefault(lua(source), []).append(f"[{lua(target)}] = true")
    moves = ", ".join(f"[{s}] = {{{', '.join(ts)}}}" for s, ts in by_source.items())
    names = ", ".join(f"{s.name} = '{s.value}'" for s in State)
    terminal = ", ".join(f"['{s.value}'] = true" for s in sorted(TERMINAL_STATES))
    return (
        f"-- Generated from runner/lifecycle.py for {script}.lua: the states, and the moves of the\n"
        "-- record's `state` this script may make. Change the table there, never here.\n"
        f"local STATE = {{{names}}}\n"
        f"local TERMINAL = {{{terminal}}}\n"
        f"local MOVES = {{{moves}}}\n"
        "local function is_terminal(state) return state and TERMINAL[state] == true or false end\n"
        "local function legal(from, to)\n"
        "  local row = MOVES[from or '']\n"
        "  return row ~= nil and row[to or ''] == true\n"
        "end\n"
    )


def markdown_table() -> str:
    """TRANSITIONS as the table of docs/lifecycle.md (a unit test keeps the two equal)."""

    def name(state: State | None) -> str:
        return f"`{state.value}`" if state else "none"

    grouped: dict[tuple[State | None, Actor, str | None, str], list[State | None]] = {}
    for t in TRANSITIONS:  # rows that differ only in their source read as one line
        grouped.setdefault((t.target, t.actor, t.script, t.why), []).append(t.source)
    lines = ["| from | to | who | script | why |", "| --- | --- | --- | --- | --- |"]
    for (target, actor, script, why), sources in grouped.items():
        lua = f"`{script}.lua`" if script else "-"
        lines.append(f"| {', '.join(map(name, sources))} | {name(target)} | {actor.value} | {lua} | {why} |")
    return "\n".join(lines) + "\n"


class DispatchOutcome(enum.StrEnum):
    """What became of one stream entry (ksr_messages_total{outcome}; `meaning` is what
    docs/metrics.md says of each)."""

    DISPATCHED = "dispatched"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    DEAD_LETTERED = "dead_lettered"
    RETRIED = "retried"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    ERROR = "error"

    @property
    def meaning(self) -> str:
        return _OUTCOME_MEANING[self]

    @property
    def processed(self) -> bool:
        """Acked: done with (ksr_messages_processed_total)."""
        return self in _PROCESSED

    @property
    def failed(self) -> bool:
        """Done with, and no Job came of it (ksr_messages_failed_total)."""
        return self in (DispatchOutcome.INVALID, DispatchOutcome.DEAD_LETTERED)


_PROCESSED = frozenset(
    {
        DispatchOutcome.DISPATCHED,
        DispatchOutcome.DUPLICATE,
        DispatchOutcome.INVALID,
        DispatchOutcome.DEAD_LETTERED,
        DispatchOutcome.SCHEDULED,
        DispatchOutcome.CANCELLED,
    }
)


_OUTCOME_MEANING = {
    DispatchOutcome.DISPATCHED: "its Job created (or adopted) and recorded, the entry acked",
    DispatchOutcome.DUPLICATE: "its message already has a Job or has ended: acked, no second Job",
    DispatchOutcome.INVALID: "dead-lettered: schema or policy refused it",
    DispatchOutcome.DEAD_LETTERED: "dead-lettered: poison (delivery counter), apiserver rejection (422), create refused past KSR_CREATE_HORIZON",
    DispatchOutcome.RETRIED: "left pending for another delivery (Redis or the apiserver away, the term lost)",
    DispatchOutcome.SCHEDULED: "held until due (runAt / delaySeconds), acked; its Job comes later",
    DispatchOutcome.CANCELLED: "cancelled before it was read: acked without a Job",
    DispatchOutcome.WAITING: "the create refused for now (quota, 429, 5xx): held out of the stream until it can be created",
    DispatchOutcome.ERROR: "processing raised something unexpected (logged with its traceback): left pending for the delivery counter",
}


class CallbackStatus(enum.IntEnum):
    """The `status` of a callback (and of its event on the events stream)."""

    CREATED = 0  # detail {jobId, jobName}
    STARTED = 1  # detail {podId, podName}
    COMPLETED = 2  # detail {duration}
    FAILED = 3  # detail {error: {errorCode, message}}
    EXCEPTION = 99  # detail {error: {errorCode, message}}

    def __repr__(self) -> str:
        # redis-py encodes an int argument as its repr(): the enum's default would reach
        # Redis as "<CallbackStatus.COMPLETED: 2>" (a field `cbj_<CallbackStatus...>`).
        return int.__repr__(self)

    @property
    def final(self) -> bool:
        """The message's last callback: 2, 3 or 99."""
        return self in (CallbackStatus.COMPLETED, CallbackStatus.FAILED, CallbackStatus.EXCEPTION)
